"""Start-up check of whole option files (kdsr_plugins.core.option_checks; docs/options.md)."""
import glob
import os
import os.path as osp
import re
import subprocess
import sys
from copy import deepcopy

import pytest
import torch
import yaml

from kdsr_plugins.__main__ import main as cli_main
from kdsr_plugins.core.option_checks import check_num_gpu, check_option_file, load_option_file
from kdsr_plugins.core.option_reference import options_markdown
from kdsr_plugins.core.schema import OptionError
from kdsr_testutils import train_opt, write_yaml

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def kd_opt_file(**train_extra) -> dict:
    return train_opt('chk', '/data', '/ckpt/teacher.pth', **train_extra)


def changed(change) -> dict:
    opt = kd_opt_file()
    change(opt)
    return opt


def test_valid_file_passes_without_warnings():
    assert check_option_file(kd_opt_file()) == []


def test_misspelled_kd_opt_is_refused_with_suggestion():
    # kd_otp used to train the student from scratch (no l_kd) and exit 0
    opt = kd_opt_file()
    opt['train']['kd_otp'] = opt['train'].pop('kd_opt')
    with pytest.raises(OptionError, match=r"Unknown option key\(s\) \['kd_otp'\] in train; valid keys: .*'kd_opt'.*"
                                          r"Did you mean: 'kd_otp' -> 'kd_opt'"):
        check_option_file(opt)


def test_misspelled_train_level_key_is_refused():
    with pytest.raises(OptionError, match=r"\['teacher_train_mod'\] in train.*-> 'teacher_train_mode'"):
        check_option_file(kd_opt_file(teacher_train_mod=True))


@pytest.mark.parametrize('change, match', [
    (lambda o: o['datasets']['train'].update(gt_szie=32), r"\['gt_szie'\] in datasets.train.*-> 'gt_size'"),
    (lambda o: o['datasets']['val'].update(dataroot_qt='x'), r"\['dataroot_qt'\] in datasets.val.*'dataroot_gt'"),
    (lambda o: o['network_g'].update(num_feats=8), r"\['num_feats'\] in network_g; valid keys: .*-> 'num_feat'"),
    (lambda o: o['network_t'].update(upscal=2), r"\['upscal'\] in network_t.*-> 'upscale'"),
    (lambda o: o['path'].update(pretrain_network_tt='x'), r"\['pretrain_network_tt'\] in path.*'pretrain_network_t'"),
    (lambda o: o['val'].update(val_frq=5), r"\['val_frq'\] in val; valid keys: .*-> 'val_freq'"),
    (lambda o: o['val']['metrics']['psnr'].update(type='calculate_psnrr'),
     r"(?s)val.metrics.psnr.type: No object named 'calculate_psnrr'.*Did you mean: calculate_psnr"),
    (lambda o: o['logger'].update(print_frq=1), r"\['print_frq'\] in logger.*-> 'print_freq'"),
    (lambda o: o['dist_params'].update(prot=1), r"\['prot'\] in dist_params.*-> 'port'"),
    (lambda o: o['train']['kd_opt'].update(los_weight=1), r"\['los_weight'\] in train.kd_opt.*-> 'loss_weight'"),
    (lambda o: o['train']['optim_g'].update(weight_decy=0), r"\['weight_decy'\] in train.optim_g.*'weight_decay'"),
    (lambda o: o['train']['scheduler'].update(milestone=[1]), r"\['milestone'\] in train.scheduler.*'milestones'"),
    (lambda o: o.update(maual_seed=1), r"\['maual_seed'\] at the top level.*-> 'manual_seed'"),
    (lambda o: o.update(network_d={'type': 'EDSR'}), r'network_d: KDModel builds no such network'),
    (lambda o: o['datasets'].update(valid=o['datasets']['val']), r"datasets.valid: .*phases train and val.*'val'"),
])
def test_unknown_keys_in_every_block(change, match):
    with pytest.raises(OptionError, match=match):
        check_option_file(changed(change))


@pytest.mark.parametrize('change, match', [
    (lambda o: o['train']['kd_opt'].update(loss_weight=-1.0), r'train.kd_opt.loss_weight: expected a non-negative'),
    (lambda o: o['train'].update(ema_decay=1.0), r'train.ema_decay: expected a number in \[0, 1\), got 1.0'),
    (lambda o: o['logger'].update(print_freq=0), r'logger.print_freq: expected an integer in \[1, inf\), got 0'),
    (lambda o: o['train']['optim_g'].update(lr='fast'), r"train.optim_g.lr: expected a number, got 'fast'"),
    (lambda o: o['val'].update(save_img='no'), r"val.save_img: expected true/false, got 'no'"),
    (lambda o: o.update(model_type='MiPKDModel') or o['train'].update(mipkd_opt={'mask_prob': 1.5}),
     r'train.mipkd_opt.mask_prob: expected a probability in \[0, 1\], got 1.5'),
    (lambda o: o.update(model_type='DUKDModel') or o['train'].update(noisy={'prob': -0.1}),
     r'train.noisy.prob must be a number in \[0, 1\], got -0.1'),
    (lambda o: o['train'].pop('total_iter'), r"train needs a 'total_iter' key"),
])
def test_harmful_values_are_refused(change, match):
    with pytest.raises(OptionError, match=match):
        check_option_file(changed(change))


def test_read_but_ignored_keys_warn():
    opt = kd_opt_file()
    opt['datasets']['val'].update(gt_size=32, use_hflip=True)
    opt['val']['self_ensemble'] = True
    opt['val']['metrics']['psnr']['crop_boarder'] = 2  # swallowed by calculate_psnr(**kwargs)
    opt['train']['perceptual_opt'] = {'type': 'L1Loss'}
    warnings = check_option_file(opt)
    assert any(w.startswith('datasets.val.gt_size is ignored') for w in warnings)
    assert any(w.startswith('datasets.val.use_hflip is ignored') for w in warnings)
    assert any('val.self_ensemble is ignored: BasicSR 1.4.2 has no self-ensemble' in w for w in warnings)
    assert any("val.metrics.psnr.crop_boarder" in w and "'crop_border'" in w for w in warnings)
    assert any(w.startswith('train.perceptual_opt is ignored') for w in warnings)


def test_yaml_number_strings_are_numbers(tmp_path, monkeypatch):
    opt = kd_opt_file()
    monkeypatch.setattr('kdsr_plugins.core.startup.PREFLIGHT_CHECKS', [])  # files do not exist; numbers only
    opt['train']['optim_g']['lr'] = '1e-4'  # what PyYAML makes of a hand-written lr: 1e-4
    opt['train']['total_iter'] = '5e3'
    opt['train']['scheduler']['milestones'] = ['2e3', 4000]
    opt['train']['kd_opt']['loss_weight'] = '5e-1'
    yml = write_yaml(opt, str(tmp_path / 'n.yml'))
    assert yaml.safe_load(open(yml))['train']['optim_g']['lr'] == '1e-4'
    from basicsr.train import parse_options  # the patched one, as train_pipeline calls it

    monkeypatch.setattr(sys, 'argv', ['train', '-opt', yml])
    parsed, _ = parse_options(str(tmp_path), is_train=True)
    train = parsed['train']
    assert train['optim_g']['lr'] == 1e-4 and isinstance(train['optim_g']['lr'], float)
    assert train['total_iter'] == 5000 and isinstance(train['total_iter'], int)
    assert train['scheduler']['milestones'] == [2000, 4000] and train['kd_opt']['loss_weight'] == 0.5
    torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=train['optim_g']['lr'])  # the former TypeError
    assert not osp.exists(tmp_path / 'experiments')


def test_num_gpu_without_cuda(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 0)
    with pytest.raises(OptionError, match=r'num_gpu: 1 but this machine has no usable CUDA device.*num_gpu: 0.*'
                                          r'num_gpu: auto'):
        check_num_gpu({'num_gpu': 1})
    check_num_gpu({'num_gpu': 0})
    check_num_gpu({'num_gpu': 'auto'})
    from basicsr.train import parse_options

    yml = write_yaml(dict(kd_opt_file(), num_gpu=1), str(tmp_path / 'g.yml'))
    monkeypatch.setattr(sys, 'argv', ['train', '-opt', yml])
    with pytest.raises(OptionError, match='set num_gpu: 0'):
        parse_options(str(tmp_path), is_train=True)


def test_tab_in_yaml_is_named(tmp_path):
    path = tmp_path / 'indent.yml'
    path.write_text('name: x\ntrain:\n\ttotal_iter: 10\n')
    with pytest.raises(OptionError, match=r'contains a tab character in its indentation \(line 3\); YAML '
                                          'indentation needs spaces'):
        load_option_file(str(path))
    path.write_text('name: [x\n')
    with pytest.raises(OptionError, match='not valid YAML'):
        load_option_file(str(path))


def test_every_shipped_yaml_passes():
    files = sorted(glob.glob(osp.join(REPO, 'options', '**', '*.yml'), recursive=True))
    assert len(files) > 100
    for path in files:
        is_train = f'{os.sep}train{os.sep}' in osp.relpath(path, REPO)
        warnings = check_option_file(load_option_file(path), is_train=is_train)
        assert warnings == [], (path, warnings)


def test_docs_options_md_is_current():
    with open(osp.join(REPO, 'docs', 'options.md'), encoding='utf-8') as f:
        committed = f.read()
    assert committed == options_markdown(), 'regenerate: python -m kdsr_plugins --options-md > docs/options.md'


def test_cli_options_prints_every_key(capsys):
    assert cli_main(['--options', 'KDModel']) == 0
    out = capsys.readouterr().out
    for key in ('train.kd_opt', 'train.teacher_train_mode', 'train.use_cached_targets', 'path.pretrain_network_t',
                'teachers[].strict_load', 'datasets.<phase>.gt_size', 'logger.print_freq', 'val.metrics'):
        assert key in out, key
    assert 'auto | true | false  (default: auto)' in out
    assert cli_main(['--options', 'MiPKDModel']) == 0
    assert re.search(r'train\.mipkd_opt\.mask_prob +number in \[0, 1\]  \(default: 0\.5\)', capsys.readouterr().out)
    assert cli_main(['--options', 'KDModle']) == 2
    assert 'Did you mean: KDModel' in capsys.readouterr().err


def test_model_level_parsers_use_the_same_schema():
    from kdsr_plugins.methods.dukd.options import DUKDOptions
    from kdsr_plugins.methods.mipkd.mipkd_model import MiPKDOptions

    assert MiPKDOptions.from_dict({'mask_prob': '5e-1'}).mask_prob == 0.5
    with pytest.raises(ValueError, match=r"Unknown key\(s\) in train.dukd_opt: \['zoom_outt'\]; valid keys: "
                                         r"\['n_gt_sub', .*Did you mean: 'zoom_outt' -> 'zoom_out'"):
        DUKDOptions.from_dict({'zoom_outt': True})
    assert DUKDOptions.from_dict({'update_mode': 'joint', 'lc_on': 'zoom_out'}).update_mode == 'single_step'


@pytest.mark.slow
@pytest.mark.subprocess
def test_refused_start_leaves_no_folders(tmp_path):
    opt = deepcopy(kd_opt_file())
    opt['train']['kd_otp'] = opt['train'].pop('kd_opt')
    opt['logger']['use_tb_logger'] = True
    yml = write_yaml(opt, str(tmp_path / 'bad.yml'))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO] + sys.path), OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, '-m', 'kdsr_plugins.train', '-opt', yml], cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode != 0
    assert "Did you mean: 'kd_otp' -> 'kd_opt'" in proc.stderr
    assert not osp.exists(tmp_path / 'experiments') and not osp.exists(tmp_path / 'tb_logger')
