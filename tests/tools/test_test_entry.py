"""Test entry (python -m kdsr_plugins.test) refuses silent wrong scores (docs/guarantees.md, "Test entry").

Found cases: scale 2 on an x4 student and x4 data scored the top-left quarter of each image;
``pretrain_network_g: ~`` scored a random network; ``param_key: params_ema`` on a params-only
checkpoint logged ``params_ema`` while ``params`` was loaded.
"""
import logging
import os.path as osp
import re
import sys

from kdsr_plugins import test as kdsr_test

import pytest

from kdsr_testutils import build_model_from_opt, edsr, save_random_net, train_opt, write_yaml


def entry_opt(demo_data, ckpt, scale=4, net_scale=4, data_scale=4, model_type='SRModel', **path):
    return {'name': 'entry', 'model_type': model_type, 'scale': scale, 'num_gpu': 0, 'manual_seed': 0,
            'datasets': {'test_1': dict(name='demo_val', type='PairedImageDataset',
                                        dataroot_gt=osp.join(demo_data, 'val_HR.lmdb'),
                                        dataroot_lq=osp.join(demo_data, f'val_LR_X{data_scale}.lmdb'),
                                        io_backend={'type': 'lmdb'})},
            'network_g': edsr(8, 1, net_scale),
            'path': {'pretrain_network_g': ckpt, 'strict_load_g': True, **path},
            'val': {'save_img': False, 'suffix': None,
                    'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': scale, 'test_y_channel': True}}}}


def run_test_main(opt, workdir):
    yml = write_yaml(opt, osp.join(str(workdir), 'entry.yml'))
    old = sys.argv
    sys.argv = ['kdsr_test', '-opt', yml]
    try:
        kdsr_test.main()
        return 0
    except SystemExit as err:
        return err.code
    finally:
        sys.argv = old


@pytest.fixture
def student4(tmp_path):
    return save_random_net(edsr(8, 1, 4), str(tmp_path / 'student_x4.pth'))


@pytest.mark.parametrize('scale, net_scale, data_scale, message', [
    (2, 4, 4, 'scale is 2 but network_g \\(EDSR\\) upscales x4|GT is larger than 2 x LQ'),  # found case 3
    (2, 2, 4, 'GT is larger than 2 x LQ .*the data look x4'),
    (4, 4, 2, 'GT is smaller than 4 x LQ'),
])
def test_scale_that_disagrees_with_network_or_data_is_refused(workdir, demo_data, tmp_path, capsys, scale, net_scale,
                                                              data_scale, message):
    ckpt = save_random_net(edsr(8, 1, net_scale), str(tmp_path / 's.pth'))
    assert run_test_main(entry_opt(demo_data, ckpt, scale, net_scale, data_scale), workdir) == 2
    err = capsys.readouterr().err
    assert 'error: ' in err and 'Traceback' not in err
    assert re.search(message, err), err
    assert not osp.exists(workdir / 'results')


def test_missing_checkpoint_is_refused_unless_random_init_is_asked_for(workdir, demo_data, capsys):
    assert run_test_main(entry_opt(demo_data, None), workdir) == 2  # found case 4
    err = capsys.readouterr().err
    assert 'path.pretrain_network_g is not set: the test would score a randomly initialised EDSR' in err
    assert 'path.allow_random_init: true' in err and not osp.exists(workdir / 'results')
    assert run_test_main(entry_opt(demo_data, str(workdir / 'nope.pth')), workdir) == 2
    assert "path.pretrain_network_g: checkpoint not found: '" in capsys.readouterr().err
    assert run_test_main(entry_opt(demo_data, None, allow_random_init='yes'), workdir) == 2
    assert 'path.allow_random_init: expected true/false' in capsys.readouterr().err
    assert run_test_main(entry_opt(demo_data, None, allow_random_init=True), workdir) == 0
    assert osp.isdir(workdir / 'results' / 'entry')


def messages(caplog):
    return [r.getMessage() for r in caplog.records]


def test_good_test_run_scores(workdir, demo_data, student4, caplog):
    with caplog.at_level(logging.INFO, logger='basicsr'):
        assert run_test_main(entry_opt(demo_data, student4), workdir) == 0
    assert any('# psnr:' in m for m in messages(caplog))


def test_logged_param_key_is_the_one_loaded(workdir, demo_data, student4, tmp_path, caplog):
    """Found case 8, student (KD model test) and teacher (training)."""
    with caplog.at_level(logging.INFO, logger='basicsr'):
        assert run_test_main(entry_opt(demo_data, student4, model_type='KDModel', param_key_g='params_ema'),
                             workdir) == 0
    log = '\n'.join(messages(caplog))
    assert 'param key [params] (params_ema was asked for; the checkpoint has none)' in log
    assert 'param key [params_ema]' not in log
    caplog.clear()
    teacher = save_random_net(edsr(16, 1), str(tmp_path / 't.pth'))
    opt = train_opt('pk', demo_data, teacher, teacher=edsr(16, 1), ema=0)
    opt['path']['param_key_t'] = 'params_ema'
    with caplog.at_level(logging.INFO, logger='basicsr'):
        build_model_from_opt(opt, tmp_path)
    lines = [m for m in messages(caplog) if "(teacher 't')" in m]
    assert lines and all('param key [params] (params_ema was asked for' in line for line in lines)
