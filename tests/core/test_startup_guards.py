"""Start-up order and messages (docs/guarantees.md, "Start-up guards").

A refused start (pre-flight data check, model build with its teacher check, unknown registry
name, missing checkpoint) exits 2 with one ``error:`` line and leaves no folder behind: nothing
under experiments/ or tb_logger/, and an earlier experiment folder that BasicSR archived is renamed
back. A failure after training has started keeps the run's folders.
"""
import os
import os.path as osp
import subprocess
import sys

from kdsr_plugins import train as kdsr_train

import pytest

from kdsr_plugins.core import dataset_checks, startup
from kdsr_plugins.core.dataset_checks import DatasetOptionError
from kdsr_testutils import edsr, save_random_net, train_opt, write_yaml


def run_main(opt, workdir, *args):
    """``python -m kdsr_plugins.train -opt <opt>`` in-process; returns the exit code (0 if it returned)."""
    yml = write_yaml(opt, osp.join(str(workdir), f'{opt["name"]}.yml'))
    old = sys.argv
    sys.argv = ['kdsr_train', '-opt', yml, *args]
    try:
        kdsr_train.main()
        return 0
    except SystemExit as err:
        return err.code
    finally:
        sys.argv = old


def tree(root):
    """Every path under root, relative (folders end in /), but the option files the tests write."""
    out = []
    for base, dirs, files in os.walk(root):
        rel = osp.relpath(base, root)
        out += [osp.normpath(osp.join(rel, d)) + '/' for d in dirs] + [osp.normpath(osp.join(rel, f)) for f in files]
    return sorted(p for p in out if not p.endswith('.yml'))


def make_opt(workdir, demo_data, name, **kw):
    ckpt = save_random_net(edsr(16, 2), str(workdir / 'teacher.pth'), seed=1)
    opt = train_opt(name, demo_data, ckpt, total_iter=2, **kw)
    opt['logger']['use_tb_logger'] = True
    return opt


def break_dataset(opt, workdir):
    empty = workdir / 'empty_val'
    empty.mkdir(exist_ok=True)
    opt['datasets']['val'].update(dataroot_gt=str(empty), dataroot_lq=str(empty), io_backend={'type': 'disk'})


def break_teacher(opt, workdir):
    opt['train']['teacher_check'] = 'error'  # a random teacher


def break_arch(opt, workdir):
    opt['network_g']['type'] = 'EDSRR'


def break_checkpoint(opt, workdir):
    opt['path']['pretrain_network_t'] = str(workdir / 'missing.pth')


BREAKS = {'dataset': (break_dataset, 'holds no image'), 'teacher': (break_teacher, 'Teacher sanity check failed'),
          'arch': (break_arch, "No object named 'EDSRR'"), 'checkpoint': (break_checkpoint, 'checkpoint not found')}


@pytest.mark.slow
@pytest.mark.parametrize('kind', list(BREAKS))
@pytest.mark.parametrize('earlier_run', [False, True])
def test_refused_start_leaves_nothing_behind(workdir, demo_data, capsys, kind, earlier_run):
    """Found case: every failed start left experiments/<name>_archived_<time> and tb_logger/... behind."""
    name = f'refused_{kind}'
    if earlier_run:  # a previous run's folders, which BasicSR archives (renames) before building anything
        for folder in ('experiments', 'tb_logger'):
            os.makedirs(workdir / folder / name)
            (workdir / folder / name / 'earlier.txt').write_text('keep me')
    opt = make_opt(workdir, demo_data, name)
    brk, message = BREAKS[kind]
    brk(opt, workdir)
    before = tree(workdir)
    assert run_main(opt, workdir) == 2
    err = capsys.readouterr().err
    assert 'error: ' in err and message in err and 'Traceback' not in err
    assert tree(workdir) == before
    if earlier_run:
        assert (workdir / 'experiments' / name / 'earlier.txt').read_text() == 'keep me'


def test_debug_shows_the_exception(workdir, demo_data):
    opt = make_opt(workdir, demo_data, 'debug_refused')
    break_dataset(opt, workdir)
    with pytest.raises(DatasetOptionError, match='holds no image'):
        run_main(opt, workdir, '--debug')
    assert not osp.exists(workdir / 'experiments')


@pytest.mark.slow
def test_failure_after_start_keeps_the_run_and_names_the_lmdb_key(workdir, demo_data, tmp_path, capsys, monkeypatch):
    """Found case: a corrupted LMDB value crashed a worker mid-training naming neither key nor check-lmdb."""
    import shutil

    import lmdb

    gt = tmp_path / 'train_HR_sub.lmdb'
    shutil.copytree(osp.join(demo_data, 'train_HR_sub.lmdb'), gt)
    keys = [line.split('.')[0] for line in open(gt / 'meta_info.txt')]
    env = lmdb.open(str(gt), map_size=1 << 30)
    with env.begin(write=True) as txn:
        txn.put(keys[3].encode(), b'garbage')
    env.close()
    monkeypatch.setattr(dataset_checks, 'LMDB_DECODE_SAMPLE', 2)  # the start-up sample misses keys[3]
    opt = make_opt(workdir, demo_data, 'mid_run')
    opt['train']['total_iter'] = 8  # two epochs of 8 images: keys[3] is drawn
    opt['datasets']['train']['dataroot_gt'] = str(gt)
    opt['logger']['use_tb_logger'] = False
    assert run_main(opt, workdir) == 2
    err = capsys.readouterr().err
    assert f"key '{keys[3]}' of the LMDB {gt} (gt) does not decode" in err and 'check-lmdb' in err
    assert osp.isdir(workdir / 'experiments' / 'mid_run')  # training had started: its folder and log are kept


def test_journal_only_undoes_what_this_run_did(tmp_path):
    other = tmp_path / 'experiments' / 'other_run'
    other.mkdir(parents=True)
    startup.JOURNAL.reset(active=True)
    try:
        startup.mkdir_and_rename(str(tmp_path / 'experiments' / 'mine'))
        startup.mkdir_and_rename(str(tmp_path / 'new_root' / 'deep' / 'mine'))
        startup.mkdir_and_rename(str(other))  # archived: renamed back on rollback
        (other / 'new.txt').write_text('written by this run')
        done = startup.JOURNAL.rollback()
    finally:
        startup.JOURNAL.reset(active=False)
    assert len(done) == 3
    assert sorted(os.listdir(tmp_path)) == ['experiments'] and os.listdir(tmp_path / 'experiments') == ['other_run']
    assert os.listdir(other) == []


@pytest.mark.subprocess
def test_entry_point_prints_one_error_line_and_exits_2(workdir, demo_data):
    opt = make_opt(workdir, demo_data, 'cli_refused')
    break_arch(opt, workdir)
    yml = write_yaml(opt, str(workdir / 'cli.yml'))
    proc = subprocess.run([sys.executable, '-m', 'kdsr_plugins.train', '-opt', yml], cwd=workdir, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    # after BasicSR's log lines
    assert "No object named 'EDSRR' found in 'arch' registry!" in proc.stderr and 'error: ' in proc.stderr
    assert 'Traceback' not in proc.stderr and not osp.exists(workdir / 'experiments')
