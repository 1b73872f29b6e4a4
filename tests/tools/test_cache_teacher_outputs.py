"""The teacher-output cache tool (``python -m kdsr_plugins.tools.cache_teacher_outputs``): per-teacher and
aggregator caches written from MTKD options, their values, and MTKD stage 1 / stage 2 training from them."""
import os.path as osp
import runpy
import sys

import lmdb
import numpy as np
import pytest
import torch
from basicsr.archs import build_network

from kdsr_plugins.core.arch_info import mirror_pad
from kdsr_plugins.core.kd_cached_target_dataset import decode_target, read_cache_meta
from kdsr_plugins.tools import cache_teacher_outputs as cache_cli
from kdsr_testutils import (
    MTKD_SCALE,
    PNG16_TOL,
    build_model_from_opt,
    cached_opt,
    first_batch,
    logged_run,
    mtkd_stage1_opt,
    mtkd_stage2_opt,
    mtkd_swinir,
    no_teachers,
    read_lmdb,
    write_yaml,
)


@pytest.mark.slow
@pytest.mark.filterwarnings('ignore:.*found in sys.modules:RuntimeWarning')
def test_cache_cli_round_trip_and_training_from_cache(mtkd_stage1, workdir, demo_data, mtkd_ckpts, monkeypatch, capsys):
    cache = workdir / 'cache'
    s1 = cached_opt(mtkd_stage1_opt('s1_cached', demo_data, mtkd_ckpts, total_iter=2, val_freq=100),
                    {'edsr': str(cache / 'edsr.lmdb'), 'swinir': str(cache / 'swinir.lmdb')})
    yml = write_yaml(s1, str(workdir / 's1_cached.yml'))
    written = cache_cli.main(['-opt', yml, '--device', 'cpu'])
    assert list(written) == ['target_edsr', 'target_swinir']
    meta = read_cache_meta(str(cache / 'swinir.lmdb'))
    assert meta['kind'] == 'teacher' and meta['name'] == 'swinir' and meta['encoding'] == 'png16'
    assert meta['scale'] == MTKD_SCALE and meta['value_range'] == [-0.25, 1.25]
    # values: teacher on the whole LR image (SwinIR: 60 x 60 LR, window 4)
    lq = read_lmdb(osp.join(demo_data, f'train_LR_X{MTKD_SCALE}_sub.lmdb'))
    key = min(lq)
    net = build_network(mtkd_swinir()).eval()
    net.load_state_dict(torch.load(mtkd_ckpts['swinir'])['params'])
    x = torch.from_numpy(lq[key][:, :, ::-1].copy()).permute(2, 0, 1)[None]
    with torch.no_grad():
        expected = net(mirror_pad(x, 4))[0].permute(1, 2, 0).numpy()[:, :, ::-1]
    env = lmdb.open(str(cache / 'swinir.lmdb'), readonly=True, lock=False)
    with env.begin() as txn:
        got = decode_target(txn.get(key.encode()), 'png16', (-0.25, 1.25))
    env.close()
    assert got.shape == expected.shape
    assert np.abs(got - np.clip(expected, -0.25, 1.25)).max() <= PNG16_TOL / 2 + 1e-6
    # the `python -m` entry point (run in-process: a subprocess would pay the import time again)
    monkeypatch.setattr(sys, 'argv', ['cache_teacher_outputs', '-opt', yml, '--device', 'cpu'])
    with pytest.raises(SystemExit) as exc:
        runpy.run_module('kdsr_plugins.tools.cache_teacher_outputs', run_name='__main__')
    assert exc.value.code == 1 and '--overwrite' in capsys.readouterr().err
    monkeypatch.setattr(sys, 'argv', sys.argv + ['--overwrite'])
    runpy.run_module('kdsr_plugins.tools.cache_teacher_outputs', run_name='__main__')
    assert 'Wrote teacher' in capsys.readouterr().out

    # stage 1 step from the cache: no teacher runs, input = cached stack
    model = build_model_from_opt(s1, workdir)
    monkeypatch.setattr(model, 'teacher_forward', no_teachers)
    model.feed_data(first_batch(s1))
    model.optimize_parameters(1)
    assert model.output.shape == model.gt.shape

    # stage 2 on the per-teacher caches: the aggregator runs online on the cached teacher outputs
    s2_pt = cached_opt(mtkd_stage2_opt('s2_per_teacher', demo_data, mtkd_ckpts, mtkd_stage1['ckpt']),
                       s1['datasets']['train']['dataroot_target'])
    model = build_model_from_opt(s2_pt, workdir)
    monkeypatch.setattr(model, 'teacher_forward', no_teachers)
    batch = first_batch(s2_pt)
    model.feed_data(batch)
    with torch.no_grad():
        expected = model.aggregator(torch.cat([batch['target_edsr'], batch['target_swinir']], 1))
    assert torch.equal(model.aggregate(model.lq), expected)
    model.optimize_parameters(1)

    # stage 2: aggregator-output cache (dataroot_target = one path), real train_pipeline run
    s2 = cached_opt(mtkd_stage2_opt('s2_cached', demo_data, mtkd_ckpts, mtkd_stage1['ckpt'], total_iter=2,
                                    val_freq=100),
                    str(cache / 'aggregator.lmdb'))
    written = cache_cli.main(['-opt', write_yaml(s2, str(workdir / 's2.yml')), '--device', 'cpu'])
    assert list(written) == ['target']
    meta = read_cache_meta(str(cache / 'aggregator.lmdb'))
    assert meta['kind'] == 'aggregator' and meta['teacher_order'] == ['edsr', 'swinir']
    assert meta['aggregator']['pretrain'] == mtkd_stage1['ckpt'] and meta['aggregator']['param_key'] == 'params_ema'
    from kdsr_plugins.methods.mtkd.mtkd_model import MTKDStudentModel
    monkeypatch.setattr(MTKDStudentModel, 'aggregate', no_teachers)
    s2.pop('val')  # student validation is covered by test_stage2_run_loads_stage1_checkpoint
    assert 'l_kd:' in logged_run(s2, workdir)
    # a per-teacher cache is not an aggregator cache
    wrong = cached_opt(mtkd_stage2_opt('s2_wrong', demo_data, mtkd_ckpts, mtkd_stage1['ckpt']),
                       str(cache / 'edsr.lmdb'))
    with pytest.raises(ValueError, match='not an aggregator output'):
        build_model_from_opt(wrong, workdir)
