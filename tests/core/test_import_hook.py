"""Start-up hook: ``import basicsr`` / ``import torchvision`` without importing kdsr_plugins first
(docs/guarantees.md, "Environment"). Found case: both failed in the installed environment.

The hook is written into a temporary site folder (``site.addsitedir`` processes its ``.pth`` as
site-packages would), never into the shared environment.
"""
import os.path as osp
import subprocess
import sys

import pytest

from kdsr_plugins.__main__ import main as kdsr_main
from kdsr_plugins.compat.shims import HOOK_PTH


def run_python(site_dir, code):
    return subprocess.run([sys.executable, '-c', f'import site; site.addsitedir({str(site_dir)!r}); {code}'],
                          capture_output=True, text=True, timeout=300, cwd=str(site_dir))


@pytest.mark.subprocess
@pytest.mark.slow
def test_hook_makes_plain_imports_work_without_importing_torch_at_start(tmp_path, capsys):
    assert kdsr_main(['--install-hook', '--site-dir', str(tmp_path)]) == 0
    assert osp.isfile(tmp_path / HOOK_PTH) and str(tmp_path / HOOK_PTH) in capsys.readouterr().out
    proc = run_python(tmp_path, "import sys; assert 'torch' not in sys.modules; import basicsr; print('ok')")
    assert proc.returncode == 0 and proc.stdout.strip() == 'ok', proc.stderr[-2000:]
    proc = run_python(tmp_path, 'import torchvision, torchvision.transforms.functional_tensor as f; '
                                'from torchvision.ops import nms; print(f.__name__)')
    assert proc.returncode == 0 and 'functional_tensor' in proc.stdout, proc.stderr[-2000:]
    proc = run_python(tmp_path, 'import kdsr_plugins; print(len(kdsr_plugins.registered_names()["MODEL"]) > 0)')
    assert proc.returncode == 0 and proc.stdout.strip() == 'True', proc.stderr[-2000:]


@pytest.mark.subprocess
def test_hook_line_is_harmless_when_the_package_is_gone(tmp_path):
    from kdsr_plugins.compat.shims import hook_pth_line

    (tmp_path / HOOK_PTH).write_text(hook_pth_line(str(tmp_path / 'moved' / 'shims.py')))
    proc = run_python(tmp_path, "print('started')")
    assert proc.returncode == 0 and proc.stdout.strip() == 'started' and proc.stderr == '', proc.stderr
