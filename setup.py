"""Install kdsr_plugins. The recommended recipe is ``bash install.sh`` (see README)."""
from setuptools import find_packages, setup

setup(
    name='kdsr_plugins',
    version='0.1.0',
    description='Knowledge distillation for image super-resolution (MiPKD, DUKD, MTKD, baselines) '
    'as a BasicSR plugin',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['kdsr_plugins', 'kdsr_plugins.*']),
    package_data={'kdsr_plugins.demo': ['assets/*.pth']},  # the demo teachers (trained by the demo, ~1.3 MB)
    python_requires='>=3.10,<3.13',
    # Runtime dependencies. install.sh installs them itself (pinned CPU torch, basicsr without
    # build isolation) and then this package with --no-deps, so pip never resolves a torch here.
    install_requires=[
        'basicsr==1.4.2',
        'torch>=2.0',
        'torchvision',
        'numpy',
        'opencv-python-headless',
        'pyyaml',
        'lmdb',
        'scipy<2',
        'tqdm',
        'requests',
    ],
    extras_require={
        'demo': ['scikit-image', 'matplotlib'],
        'test': ['pytest', 'scikit-image'],
        'tb': ['tensorboard'],
        # teachers from any SR checkpoint (network type auto), docs/auto_teachers.md
        'spandrel': ['spandrel==0.4.2', 'safetensors', 'einops', 'typing_extensions'],
        # python -m kdsr_plugins.export --format onnx, docs/export.md
        'onnx': ['onnx', 'onnxruntime', 'safetensors'],
    },
    entry_points={
        'console_scripts': [
            'kdsr-train=kdsr_plugins.train:main',
            'kdsr-test=kdsr_plugins.test:main',
            'kdsr-list=kdsr_plugins.__main__:main',
        ],
    },
)
