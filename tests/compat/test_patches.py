"""BasicSR 1.4.2 runtime patches of ``kdsr_plugins.compat``: registry errors that name close matches, option YAMLs
read with PyYAML's safe loader. (Weights-only checkpoint and state loading: tests/core/test_bad_input.py.)"""
import os.path as osp

import pytest
from basicsr.archs import build_network
from basicsr.data import build_dataset
from basicsr.losses import build_loss
from basicsr.models import build_model

from kdsr_testutils import list_states, short_run, write_yaml


def run_yaml(yml: str, root) -> None:
    """BasicSR's ``train_pipeline`` on an option file as written (no re-serialisation)."""
    import sys

    from basicsr.train import train_pipeline

    argv, sys.argv = sys.argv, ['kdsr_train', '-opt', yml]
    try:
        train_pipeline(str(root))
    finally:
        sys.argv = argv


# ------------------------------------------------------------------------------ registry names
@pytest.mark.parametrize('what, build, name, suggestion', [
    ('model', lambda n: build_model({'model_type': n}), 'KDModle', 'KDModel'),
    ('arch', lambda n: build_network({'type': n}), 'edsr', 'EDSR'),
    ('loss', lambda n: build_loss({'type': n}), 'KDFitnetLoss', 'KDFitNetLoss'),
    ('dataset', lambda n: build_dataset({'type': n, 'phase': 'train', 'name': 'x'}), 'PairedImageDatset',
     'PairedImageDataset'),
])
def test_unknown_registry_name_lists_close_matches_and_registered_names(what, build, name, suggestion):
    with pytest.raises(KeyError) as info:
        build(name)
    message = str(info.value)
    assert message.startswith(f"No object named '{name}' found in '{what}' registry!")  # BasicSR's own words first
    assert f'Did you mean: {suggestion}' in message
    assert 'Registered: ' in message and 'import kdsr_plugins' in message
    if what == 'model':
        assert '(from kdsr_plugins: AmpSRModel, DUKDModel, FeatureKDModel, KDModel, ' in message


# ------------------------------------------------------------------------------ option YAMLs
def test_option_yaml_cannot_run_code(workdir, demo_data, teacher_ckpt):
    """BasicSR reads options with PyYAML's full loader; the plugin switches it to the safe one."""
    import yaml

    evidence = str(workdir / 'code_ran')
    yml = write_yaml(short_run(demo_data, teacher_ckpt, 'evil_yaml'), str(workdir / 'evil.yml'))
    with open(yml, 'a') as f:
        f.write(f'payload: !!python/object/apply:os.makedirs [{evidence!r}]\n')
    with pytest.raises(yaml.constructor.ConstructorError, match='python/object/apply:os.makedirs'):
        run_yaml(yml, workdir)
    assert not osp.exists(evidence)
    with open(yml) as f:  # standard tags still work
        text = f.read().replace(f'payload: !!python/object/apply:os.makedirs [{evidence!r}]\n', '')
    assert 'lr: 0.0002' in text
    with open(yml, 'w') as f:
        f.write(text.replace('lr: 0.0002', 'lr: !!float 2e-4'))
    run_yaml(yml, workdir)
    assert list_states(workdir, 'evil_yaml') == ['2.state', '4.state']
