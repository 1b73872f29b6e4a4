"""Cached teacher targets: the png16 / png8 / npy32 codec, ``KDCachedTargetDataset`` crops and augmentations,
logits KD on a cached target (the cache tool and MTKD training from caches: tests/tools/test_cache_teacher_outputs.py).
"""
import json
import os.path as osp

import lmdb
import numpy as np
import pytest
import torch
from basicsr.data import build_dataset

from kdsr_plugins.core.kd_cached_target_dataset import (
    CACHE_META_FILE,
    KDCachedTargetDataset,
    decode_target,
    encode_target,
)
from kdsr_plugins.tools import cache_teacher_outputs as cache_cli
from kdsr_testutils import (
    MTKD_SCALE,
    PNG16_TOL,
    build_model_from_opt,
    cached_opt,
    close_dataset,
    edsr,
    first_batch,
    no_teachers,
    read_lmdb,
    train_opt,
)

SCALE = MTKD_SCALE  # the x4 teachers of the mtkd_ckpts fixture


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


def test_logits_kd_uses_cached_target(tmp_path, demo_data, mtkd_ckpts, monkeypatch):
    opt = train_opt('kd_cached', demo_data, mtkd_ckpts['edsr'], scale=SCALE, teacher=edsr(8, 1, SCALE))
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


