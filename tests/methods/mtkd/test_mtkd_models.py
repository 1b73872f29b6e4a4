"""MTKD models: stage 1 / stage 2 training runs, teacher-order checks, public checkpoints, target caches."""
import contextlib
import glob
import json
import logging
import os
import os.path as osp
import runpy
import sys

import lmdb
import numpy as np
import pytest
import torch
from basicsr.archs import build_network
from basicsr.data import build_dataset
from basicsr.utils import imfrombytes

from kdsr_plugins.core.kd_cached_target_dataset import (CACHE_META_FILE, KDCachedTargetDataset, decode_target,
                                                        encode_target, read_cache_meta)
from kdsr_plugins.methods.mtkd.mtkd_loss import KDWaveletLoss
from kdsr_plugins.core.arch_info import mirror_pad
from kdsr_plugins.methods.mtkd.aggregator import TeacherOrderError
from kdsr_plugins.tools import cache_teacher_outputs as cache_cli
from kdsr_plugins.core.checkpoints import CheckpointError
from kdsr_testutils import (build_model_from_opt, edsr, model_file, run_ddp_check, run_train, save_random_net,
                            train_opt, write_yaml)

TESTS_DIR = osp.dirname(osp.abspath(__file__))
SCALE = 4
PNG16_TOL = 1.5 / 65535  # one png16 step over the default range [-0.25, 1.25]


def swinir_tiny(scale: int = SCALE) -> dict:
    return dict(type='SwinIR', upscale=scale, in_chans=3, img_size=16, window_size=4, img_range=1.0, depths=[2],
                embed_dim=12, num_heads=[2], mlp_ratio=2, upsampler='pixelshuffledirect', resi_connection='1conv')


def aggregator_net(n: int = 2, scale: int = SCALE, **kw) -> dict:
    net = dict(type='MTKDDCTSwin', num_teachers=n, upscale=scale, img_size=32, window_size=4, embed_dim=12,
               depths=[1], num_heads=[2], mlp_ratio=2, num_feat=8)
    net.update(kw)
    return net


@pytest.fixture(scope='module')
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp('mtkd_teachers')
    return {'edsr': save_random_net(edsr(8, 1, SCALE), str(root / 'edsr.pth'), seed=1),
            'swinir': save_random_net(swinir_tiny(), str(root / 'swinir.pth'), seed=2)}


def teachers_block(ckpts, order=('edsr', 'swinir')):
    nets = {'edsr': edsr(8, 1, SCALE), 'swinir': swinir_tiny()}
    return [{'name': n, 'network': nets[n], 'pretrain': ckpts[n]} for n in order]


def stage1_opt(name, demo_data, ckpts, order=('edsr', 'swinir'), total_iter=2, **kw):
    opt = train_opt(name, demo_data, None, model_type='MTKDAggregatorModel', scale=SCALE, total_iter=total_iter,
                    student=aggregator_net(len(order)), **kw)
    opt['teachers'] = teachers_block(ckpts, order)
    del opt['train']['kd_opt']
    opt['datasets']['train']['gt_size'] = 32 * SCALE
    return opt


def stage2_opt(name, demo_data, ckpts, agg_ckpt, order=('edsr', 'swinir'), total_iter=2, aggregator=None, **kw):
    opt = train_opt(name, demo_data, None, model_type='MTKDStudentModel', scale=SCALE, total_iter=total_iter,
                    student=edsr(8, 2, SCALE), **kw)
    opt['teachers'] = teachers_block(ckpts, order)
    opt['aggregator'] = aggregator or {'network': aggregator_net(len(order)), 'pretrain': agg_ckpt}
    opt['train']['kd_opt'] = {'type': 'KDWaveletLoss', 'loss_weight': 1.0, 'levels': 1}
    opt['train']['pixel_opt'] = {'type': 'L1Loss', 'loss_weight': 0.1, 'reduction': 'mean'}
    opt['datasets']['train']['gt_size'] = 32 * SCALE
    return opt


@pytest.fixture(scope='module')
def stage1(tmp_path_factory, demo_data, ckpts):
    """One real stage-1 train_pipeline run (2 iterations, validation with teachers at the end)."""
    root = tmp_path_factory.mktemp('mtkd_stage1')
    old = os.getcwd()
    os.chdir(root)
    try:
        opt = stage1_opt('mtkd_s1', demo_data, ckpts, total_iter=2, val_freq=2, save_freq=2)
        log = logged_run(opt, root)
    finally:
        os.chdir(old)
    return {'root': root, 'opt': opt, 'ckpt': model_file(root, 'mtkd_s1', 'net_g', 'latest'), 'log': log}


@contextlib.contextmanager
def captured_log():
    """Collect BasicSR log messages of an in-process run (its log file exists only for the first run)."""
    lines = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    logger, handler = logging.getLogger('basicsr'), Collect()
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def logged_run(opt, root):
    with captured_log() as lines:
        run_train(opt, str(root))
    return '\n'.join(lines)


# ------------------------------------------------------------------------------------ stage 1 / 2 runs
def test_stage1_run_saves_kd_meta_and_validates_with_teachers(stage1):
    ckpt = torch.load(stage1['ckpt'], weights_only=True)
    assert set(ckpt) == {'params', 'params_ema', 'kd_meta'}
    assert ckpt['kd_meta'] == {'teacher_order': ['edsr', 'swinir'], 'teacher_types': ['EDSR', 'SwinIR'],
                               'num_teachers': 2, 'scale': 4, 'output_convention': 'image', 'mask_mode': 'dct_label'}
    log = stage1['log']
    assert 'l_pix:' in log and 'l_kd' not in log
    assert '# psnr:' in log  # validation ran: LR -> both teachers (SwinIR padded) -> aggregator


def test_stage2_run_loads_stage1_checkpoint(stage1, workdir, demo_data, ckpts):
    opt = stage2_opt('mtkd_s2', demo_data, ckpts, stage1['ckpt'], total_iter=2, val_freq=2)
    log = logged_run(opt, workdir)
    assert 'l_kd:' in log and 'l_pix:' in log and '# psnr:' in log
    assert "teacher order ['edsr', 'swinir']" in log
    assert set(torch.load(model_file(workdir, 'mtkd_s2', 'net_g', 'latest'))) == {'params', 'params_ema'}


def test_stage2_step_frozen_target_and_loss_values(stage1, tmp_path, demo_data, ckpts):
    opt = stage2_opt('s2_step', demo_data, ckpts, stage1['ckpt'])
    model = build_model_from_opt(opt, tmp_path)
    agg = model.aggregator
    frozen = {k: v.clone() for k, v in agg.state_dict().items()}
    assert not agg.training and all(not p.requires_grad for p in agg.parameters())
    assert all(p is not q for p in agg.parameters() for q in model.net_g.parameters())
    g = torch.Generator().manual_seed(0)
    batch = {'lq': torch.rand(2, 3, 12, 12, generator=g), 'gt': torch.rand(2, 3, 48, 48, generator=g)}
    model.feed_data(batch)
    # hand-made target: teachers (SwinIR padded to its window 4 is a no-op at 12) -> params_ema aggregator
    ref = build_network(aggregator_net()).eval()
    ref.load_state_dict(torch.load(stage1['ckpt'])['params_ema'])
    with torch.no_grad():
        t_out = [model.teachers[n](batch['lq']) for n in ('edsr', 'swinir')]
        target = ref(torch.cat(t_out, 1))
        losses = model.compute_losses(1)
        out = model.net_g(batch['lq'])
    assert list(losses) == ['l_pix', 'l_kd']
    assert losses['l_kd'].item() == pytest.approx(KDWaveletLoss(levels=1)(out, target).item(), rel=1e-5)
    assert losses['l_pix'].item() == pytest.approx(0.1 * (out - batch['gt']).abs().mean().item(), rel=1e-5)
    for it in (1, 2):
        agg.train()  # a stray .train() must not survive into the step
        model.optimize_parameters(it)
        assert not agg.training
    assert all(p.grad is None for p in agg.parameters())
    assert all(p.grad is None for t in model.teachers.values() for p in t.parameters())
    assert all(torch.equal(v, frozen[k]) for k, v in agg.state_dict().items())


def test_default_stage2_losses_and_fixed_teacher_weights(tmp_path, demo_data, ckpts):
    opt = stage2_opt('fixed', demo_data, ckpts, None)
    opt['aggregator'] = None
    del opt['train']['kd_opt'], opt['train']['pixel_opt']  # defaults: KDWaveletLoss 1.0 (levels 1), L1 0.1
    opt['train']['fixed_teacher_weights'] = [0.3, 0.7]
    model = build_model_from_opt(opt, tmp_path)
    assert isinstance(model.cri_kd, KDWaveletLoss) and model.cri_kd.levels == 1
    assert model.cri_pix.loss_weight == pytest.approx(0.1)
    g = torch.Generator().manual_seed(1)
    model.feed_data({'lq': torch.rand(2, 3, 8, 8, generator=g), 'gt': torch.rand(2, 3, 32, 32, generator=g)})
    losses = model.compute_losses(1)
    assert list(losses) == ['l_pix', 'l_kd_edsr', 'l_kd_swinir']
    with torch.no_grad():
        out = model.net_g(model.lq)
        t_sw = model.teachers['swinir'](model.lq)
    assert losses['l_kd_swinir'].item() == pytest.approx(0.7 * KDWaveletLoss()(out, t_sw).item(), rel=1e-5)
    model.optimize_parameters(1)
    bad = dict(opt, train=dict(opt['train'], fixed_teacher_weights=[1.0]))
    with pytest.raises(ValueError, match='1 weights for 2 teachers'):
        build_model_from_opt(bad, tmp_path)


# ------------------------------------------------------------------------------------ teacher order
def test_teacher_order_mismatch_is_a_clear_error(stage1, tmp_path, demo_data, ckpts):
    opt = stage2_opt('order', demo_data, ckpts, stage1['ckpt'], order=('swinir', 'edsr'))
    with pytest.raises(TeacherOrderError, match=r"order \['edsr', 'swinir'\].*teachers list is \['swinir', 'edsr'\]"):
        build_model_from_opt(opt, tmp_path)
    opt['aggregator']['teacher_order_check'] = 'warn'
    model = build_model_from_opt(opt, tmp_path)  # proceeds, with a warning
    assert list(model.teachers) == ['swinir', 'edsr']
    # same names, other archs under them
    opt = stage2_opt('types', demo_data, ckpts, stage1['ckpt'])
    opt['teachers'][1] = {'name': 'swinir', 'network': edsr(8, 1, SCALE), 'pretrain': ckpts['edsr']}
    with pytest.raises(TeacherOrderError, match=r"archs \['EDSR', 'SwinIR'\]"):
        build_model_from_opt(opt, tmp_path)
    # declared order contradicting kd_meta
    opt = stage2_opt('decl', demo_data, ckpts, stage1['ckpt'])
    opt['aggregator']['teacher_order'] = ['swinir', 'edsr']
    with pytest.raises(TeacherOrderError, match='contradicts'):
        build_model_from_opt(opt, tmp_path)
    # output convention differing from kd_meta
    opt = stage2_opt('conv', demo_data, ckpts, stage1['ckpt'])
    opt['aggregator']['network'] = aggregator_net(output_convention='mean255')
    with pytest.raises(ValueError, match="output_convention = 'image'"):
        build_model_from_opt(opt, tmp_path)


def test_stage1_test_mode_checks_order_of_loaded_aggregator(stage1, tmp_path, demo_data, ckpts):
    opt = stage1_opt('s1_test', demo_data, ckpts, order=('swinir', 'edsr'))
    opt['path']['pretrain_network_g'] = stage1['ckpt']
    opt['path']['param_key_g'] = 'params_ema'
    with pytest.raises(TeacherOrderError, match='Teacher order mismatch'):
        build_model_from_opt(opt, tmp_path, is_train=False)
    opt = stage1_opt('s1_test', demo_data, ckpts)
    opt['path'].update(pretrain_network_g=stage1['ckpt'], param_key_g='params_ema')
    model = build_model_from_opt(opt, tmp_path, is_train=False)
    assert list(model.teachers) == ['edsr', 'swinir']
    model.feed_data({'lq': torch.rand(1, 3, 10, 13), 'gt': torch.rand(1, 3, 40, 52)})
    model.test()  # 10 x 13: SwinIR teacher padded to 12 x 16 and cropped; aggregator pads itself
    assert model.output.shape == (1, 3, 40, 52)


# ------------------------------------------------------------------------------------ public checkpoints
def test_public_mtkd_checkpoint_loads(tmp_path, demo_data, ckpts):
    torch.manual_seed(3)
    ref = build_network(aggregator_net(depths=[2], output_convention='mean255')).eval()
    public = {f'module.{k}': v for k, v in ref.state_dict().items()}
    public['module.layers.0.residual_group.blocks.1.attn_mask'] = torch.zeros(4, 16, 16)
    path = str(tmp_path / 'DCTSwin_public.pth')
    torch.save({'params': public}, path)  # the public code saves BasicSR layout, no kd_meta, no params_ema
    block = {'network': aggregator_net(depths=[2]), 'pretrain': path, 'format': 'public_mtkd',
             'teacher_order': ['edsr', 'swinir']}
    model = build_model_from_opt(stage2_opt('pub', demo_data, ckpts, None, aggregator=block), tmp_path)
    assert model.aggregator.output_convention == 'mean255'
    x = torch.rand(1, 6, 20, 24)
    with torch.no_grad():
        assert torch.allclose(model.aggregator(x), ref(x), atol=1e-6)
    with pytest.raises(TeacherOrderError, match='teacher_order'):
        build_model_from_opt(stage2_opt('pub', demo_data, ckpts, None, aggregator=dict(block, teacher_order=None)),
                             tmp_path)
    with pytest.raises(ValueError, match='mean255'):
        bad = dict(block, network=aggregator_net(depths=[2], output_convention='image'))
        build_model_from_opt(stage2_opt('pub', demo_data, ckpts, None, aggregator=bad), tmp_path)
    with pytest.raises(CheckpointError, match='format: public_mtkd'):
        build_model_from_opt(stage2_opt('pub', demo_data, ckpts, None, aggregator=dict(block, format='basicsr')),
                             tmp_path)


# ------------------------------------------------------------------------------------ cached targets
def write_cache(path, images: dict, scale=SCALE, encoding='png16', kind='teacher', name='t'):
    """A hand-made target cache (bypassing the CLI) of BGR float images."""
    env = lmdb.open(path, map_size=1 << 28)
    lines = []
    with env.begin(write=True) as txn:
        for key, img in images.items():
            txn.put(key.encode(), encode_target(img, encoding))
            lines.append(f'{key}.png ({img.shape[0]},{img.shape[1]},{img.shape[2]}) 1')
    env.close()
    with open(osp.join(path, 'meta_info.txt'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    with open(osp.join(path, CACHE_META_FILE), 'w') as f:
        json.dump({'kind': kind, 'name': name, 'encoding': encoding, 'value_range': [-0.25, 1.25], 'scale': scale}, f)


def close_dataset(ds):
    """Close the LMDB environments of a dataset (py-lmdb refuses a second open in one process)."""
    if ds.file_client is not None:
        for env in ds.file_client.client._client.values():
            env.close()


def read_lmdb(path):
    env = lmdb.open(path, readonly=True, lock=False)
    with env.begin() as txn:
        out = {k.decode(): imfrombytes(v, float32=True) for k, v in txn.cursor()}
    env.close()
    return out


def test_codec_png16_resolution_and_range():
    img = np.random.default_rng(0).uniform(-0.2, 1.2, (7, 9, 3)).astype(np.float32)
    back = decode_target(encode_target(img, 'png16'), 'png16')
    assert back.dtype == np.float32 and np.abs(back - img).max() <= PNG16_TOL / 2 + 1e-7
    assert np.array_equal(decode_target(encode_target(img, 'npy32'), 'npy32'), img)
    back8 = decode_target(encode_target(img, 'png8'), 'png8')
    assert back8.min() >= 0 and back8.max() <= 1 and np.abs(back8 - np.clip(img, 0, 1)).max() <= 0.5 / 255 + 1e-7


def test_cached_dataset_crops_and_augments_targets_with_gt_and_lr(tmp_path, demo_data):
    gts = read_lmdb(osp.join(demo_data, 'train_HR_sub.lmdb'))
    lqs = read_lmdb(osp.join(demo_data, f'train_LR_X{SCALE}_sub.lmdb'))
    write_cache(str(tmp_path / 'gt_copy.lmdb'), gts, name='a')
    write_cache(str(tmp_path / 'nearest.lmdb'),  # nearest-upsampled LR: block-constant, so [::s, ::s] == LR
                {k: np.kron(v, np.ones((SCALE, SCALE, 1), np.float32)) for k, v in lqs.items()}, name='b')
    opt = {'name': 'c', 'type': 'KDCachedTargetDataset', 'phase': 'train', 'scale': SCALE,
           'dataroot_gt': osp.join(demo_data, 'train_HR_sub.lmdb'),
           'dataroot_lq': osp.join(demo_data, f'train_LR_X{SCALE}_sub.lmdb'),
           'dataroot_target': {'a': str(tmp_path / 'gt_copy.lmdb'), 'b': str(tmp_path / 'nearest.lmdb')},
           'io_backend': {'type': 'lmdb'}, 'gt_size': 64, 'use_hflip': True, 'use_rot': True}
    ds = build_dataset(opt)
    assert isinstance(ds, KDCachedTargetDataset) and len(ds) == len(gts)
    import random
    random.seed(0)
    for i in range(12):
        item = ds[i % len(ds)]
        assert item['lq'].shape == (3, 16, 16) and item['target_a'].shape == item['gt'].shape == (3, 64, 64)
        assert (item['target_a'] - item['gt']).abs().max() <= PNG16_TOL
        assert (item['target_b'][:, ::SCALE, ::SCALE] - item['lq']).abs().max() <= PNG16_TOL
        assert (item['target_b'] - item['gt']).abs().max() > 0.01  # not trivially equal
    close_dataset(ds)
    val = build_dataset(dict(opt, phase='val', dataroot_target=str(tmp_path / 'gt_copy.lmdb')))
    item = val[0]
    assert set(item) == {'lq', 'gt', 'lq_path', 'gt_path', 'target'}
    assert (item['target'] - item['gt']).abs().max() <= PNG16_TOL
    close_dataset(val)
    with pytest.raises(ValueError, match='lacks'):
        write_cache(str(tmp_path / 'partial.lmdb'), dict(list(gts.items())[:2]))
        build_dataset(dict(opt, dataroot_target=str(tmp_path / 'partial.lmdb')))


def cached_opt(opt, targets):
    opt['datasets']['train'].update(type='KDCachedTargetDataset', dataroot_target=targets)
    opt['train']['use_cached_targets'] = True
    return opt


def first_batch(opt):
    ds_opt = dict(opt['datasets']['train'], phase='train', scale=SCALE)
    ds = build_dataset(ds_opt)
    items = [ds[0], ds[1]]
    close_dataset(ds)
    return {k: torch.stack([it[k] for it in items]) for k in items[0] if torch.is_tensor(items[0][k])}


def no_teachers(*args, **kwargs):
    raise AssertionError('a teacher ran although cached targets were given')


@pytest.mark.filterwarnings('ignore:.*found in sys.modules:RuntimeWarning')
def test_cache_cli_round_trip_and_training_from_cache(stage1, workdir, demo_data, ckpts, monkeypatch, capsys):
    cache = workdir / 'cache'
    s1 = cached_opt(stage1_opt('s1_cached', demo_data, ckpts, total_iter=2, val_freq=100),
                    {'edsr': str(cache / 'edsr.lmdb'), 'swinir': str(cache / 'swinir.lmdb')})
    yml = write_yaml(s1, str(workdir / 's1_cached.yml'))
    written = cache_cli.main(['-opt', yml, '--device', 'cpu'])
    assert list(written) == ['target_edsr', 'target_swinir']
    meta = read_cache_meta(str(cache / 'swinir.lmdb'))
    assert meta['kind'] == 'teacher' and meta['name'] == 'swinir' and meta['encoding'] == 'png16'
    assert meta['scale'] == SCALE and meta['value_range'] == [-0.25, 1.25]
    # values: teacher on the whole LR image (SwinIR: 60 x 60 LR, window 4)
    lq = read_lmdb(osp.join(demo_data, f'train_LR_X{SCALE}_sub.lmdb'))
    key = min(lq)
    net = build_network(swinir_tiny()).eval()
    net.load_state_dict(torch.load(ckpts['swinir'])['params'])
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
    s2_pt = cached_opt(stage2_opt('s2_per_teacher', demo_data, ckpts, stage1['ckpt']),
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
    s2 = cached_opt(stage2_opt('s2_cached', demo_data, ckpts, stage1['ckpt'], total_iter=2, val_freq=100),
                    str(cache / 'aggregator.lmdb'))
    written = cache_cli.main(['-opt', write_yaml(s2, str(workdir / 's2.yml')), '--device', 'cpu'])
    assert list(written) == ['target']
    meta = read_cache_meta(str(cache / 'aggregator.lmdb'))
    assert meta['kind'] == 'aggregator' and meta['teacher_order'] == ['edsr', 'swinir']
    assert meta['aggregator']['pretrain'] == stage1['ckpt'] and meta['aggregator']['param_key'] == 'params_ema'
    from kdsr_plugins.methods.mtkd.mtkd_model import MTKDStudentModel
    monkeypatch.setattr(MTKDStudentModel, 'aggregate', no_teachers)
    s2.pop('val')  # student validation is covered by test_stage2_run_loads_stage1_checkpoint
    assert 'l_kd:' in logged_run(s2, workdir)
    # a per-teacher cache is not an aggregator cache
    wrong = cached_opt(stage2_opt('s2_wrong', demo_data, ckpts, stage1['ckpt']), str(cache / 'edsr.lmdb'))
    with pytest.raises(ValueError, match='not an aggregator output'):
        build_model_from_opt(wrong, workdir)


def test_logits_kd_uses_cached_target(tmp_path, demo_data, ckpts, monkeypatch):
    opt = train_opt('kd_cached', demo_data, ckpts['edsr'], scale=SCALE, teacher=edsr(8, 1, SCALE))
    # no flips/rotations here: a teacher is not equivariant, so teacher(aug(x)) != aug(teacher(x)) in general
    opt['datasets']['train'].update(gt_size=64, use_hflip=False, use_rot=False)
    cache_cli.cache_teacher_outputs(opt, out=str(tmp_path / 'c'), device='cpu', log=lambda m: None)
    cached_opt(opt, str(tmp_path / 'c' / 't.lmdb'))
    model = build_model_from_opt(opt, tmp_path)
    batch = first_batch(opt)
    assert set(batch) == {'lq', 'gt', 'target'}
    model.feed_data(batch)
    with torch.no_grad():
        online = model.net_t(model.lq)
    monkeypatch.setattr(model, 'teacher_forward', no_teachers)
    losses = model.compute_losses(1)
    with torch.no_grad():
        out = model.net_g(model.lq)
    assert losses['l_kd'].item() == pytest.approx((out - batch['target']).abs().mean().item(), rel=1e-5)
    # crop of the whole-image output vs output of the crop: equal away from the patch border (EDSR f8 b1 x4:
    # receptive field radius < 6 LR pixels), quantisation aside
    inner = (slice(None), slice(None), slice(6 * SCALE, -6 * SCALE), slice(6 * SCALE, -6 * SCALE))
    assert (online[inner] - batch['target'][inner]).abs().max() <= PNG16_TOL
    model.feed_data({'lq': batch['lq'], 'gt': batch['gt']})
    with pytest.raises(KeyError, match='use_cached_targets is true'):
        model.compute_losses(2)


def test_stage2_ddp_two_process_cpu(stage1, workdir, demo_data, ckpts):
    opt = stage2_opt('mtkd_ddp', demo_data, ckpts, stage1['ckpt'], total_iter=2, save_freq=100)
    result = run_ddp_check(opt, workdir)
    assert result['checksums'][0] == result['checksums'][1]  # identical students on both ranks
    assert 'l_kd' in result['log'] and 'l_pix' in result['log']


# ------------------------------------------------------------------------------------ shipped YAMLs
def test_shipped_mtkd_options_are_consistent():
    import yaml
    from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, MODEL_REGISTRY

    from kdsr_plugins.methods.mtkd.aggregator import AGGREGATOR_KEYS
    from kdsr_plugins.core.options import check_option_keys
    from kdsr_plugins.core.teachers import parse_teacher_specs

    root = osp.dirname(TESTS_DIR)
    train = sorted(glob.glob(osp.join(root, 'options', 'train', 'MTKD', '*.yml')))
    assert len(train) >= 12
    for path in train + sorted(glob.glob(osp.join(root, 'options', 'test', 'MTKD', '*.yml'))):
        opt = yaml.safe_load(open(path))
        assert opt['model_type'] in MODEL_REGISTRY and opt['network_g']['type'] in ARCH_REGISTRY, path
        for ds in opt['datasets'].values():
            assert ds['type'] in DATASET_REGISTRY, path
        if 'teachers' in opt:
            assert [s.name for s in parse_teacher_specs(opt)] == ['edsr', 'swinir', 'rcan'], path
            assert opt['teachers'][1]['network']['img_size'] == 64, path  # SwinIR-M DF2K s64w8
        if 'aggregator' in opt:
            check_option_keys(opt['aggregator'], AGGREGATOR_KEYS, 'aggregator')
            assert opt['train']['kd_opt'] == {'type': 'KDWaveletLoss', 'loss_weight': 1.0, 'levels': 1}, path
            assert opt['train']['pixel_opt']['loss_weight'] == 0.1, path
            assert opt['datasets']['train']['gt_size'] == 32 * opt['scale'], path  # LR patch 32
