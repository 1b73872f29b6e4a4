"""Tiny networks and option dicts for fast CPU tests of the training pipeline."""
from __future__ import annotations

import contextlib
import logging
import os
import os.path as osp
import sys
from copy import deepcopy

import torch
import yaml
from basicsr.archs import build_network

TESTS_DIR = osp.dirname(osp.abspath(__file__))  # helper scripts (fault_train.py, ddp_*_check.py) live here
ROOT = osp.dirname(TESTS_DIR)  # repository root (options/, scripts/)
RGB_MEAN = [0.4488, 0.4371, 0.4040]


def edsr(num_feat: int, num_block: int, scale: int = 2) -> dict:
    return dict(type='EDSR', num_in_ch=3, num_out_ch=3, num_feat=num_feat, num_block=num_block, upscale=scale,
                res_scale=1.0, img_range=255.0, rgb_mean=RGB_MEAN)


def rcan(num_feat: int = 16, num_group: int = 2, num_block: int = 2, scale: int = 2) -> dict:
    """A tiny BasicSR RCAN option dict (squeeze factor 4, so ``num_feat`` must be a multiple of 4)."""
    return dict(type='RCAN', num_in_ch=3, num_out_ch=3, num_feat=num_feat, num_group=num_group, num_block=num_block,
                squeeze_factor=4, upscale=scale, res_scale=1, img_range=255.0, rgb_mean=RGB_MEAN)


def swinir(scale: int = 2, embed_dim: int = 12, depths=(1,), window_size: int = 4, img_size: int = 16,
           upsampler: str = 'pixelshuffledirect', **kw) -> dict:
    """A tiny BasicSR SwinIR option dict: 2 heads per stage, MLP ratio 2, 1conv; ``kw`` adds or overrides keys."""
    opt = dict(type='SwinIR', upscale=scale, in_chans=3, img_size=img_size, window_size=window_size, img_range=1.0,
               depths=list(depths), embed_dim=embed_dim, num_heads=[2] * len(depths), mlp_ratio=2,
               upsampler=upsampler, resi_connection='1conv')
    opt.update(kw)
    return opt


def aggregator(num_teachers: int = 2, scale: int = 2, depths=(1,), **kw) -> dict:
    """A tiny MTKD DCT-Swin aggregator (``MTKDDCTSwin``) option dict; ``kw`` adds or overrides keys."""
    opt = dict(type='MTKDDCTSwin', num_teachers=num_teachers, upscale=scale, img_size=32, window_size=4, embed_dim=12,
               depths=list(depths), num_heads=[2] * len(depths), mlp_ratio=2, num_feat=8)
    opt.update(kw)
    return opt


def tiny_net(net_opt: dict, seed: int | None = 0) -> torch.nn.Module:
    """Build ``net_opt`` through BasicSR's registry, with weights drawn after ``torch.manual_seed(seed)``."""
    if seed is not None:
        torch.manual_seed(seed)
    return build_network(deepcopy(net_opt))


def save_random_net(net_opt: dict, path: str, seed: int = 0, param_key: str = 'params') -> str:
    """Build ``net_opt`` with seeded random weights and save it BasicSR-style."""
    torch.manual_seed(seed)
    net = build_network(deepcopy(net_opt))
    torch.save({param_key: net.state_dict()}, path)
    return path


def data_opts(data_root: str, scale: int, gt_size: int = 32, batch: int = 2) -> dict:
    """Train + val dataset blocks on the demo LMDBs."""
    return {
        'train': dict(name='demo_train', type='PairedImageDataset',
                      dataroot_gt=osp.join(data_root, 'train_HR_sub.lmdb'),
                      dataroot_lq=osp.join(data_root, f'train_LR_X{scale}_sub.lmdb'),
                      io_backend={'type': 'lmdb'}, gt_size=gt_size, use_hflip=True, use_rot=True,
                      num_worker_per_gpu=0, batch_size_per_gpu=batch, dataset_enlarge_ratio=1, prefetch_mode=None),
        'val': dict(name='demo_val', type='PairedImageDataset', dataroot_gt=osp.join(data_root, 'val_HR.lmdb'),
                    dataroot_lq=osp.join(data_root, f'val_LR_X{scale}.lmdb'), io_backend={'type': 'lmdb'}),
    }


def train_opt(name: str, data_root: str, teacher_ckpt: str | None, model_type: str = 'KDModel', scale: int = 2,
              total_iter: int = 4, student: dict | None = None, teacher: dict | None = None, ema: float = 0.999,
              save_freq: int = 2, val_freq: int = 100, teacher_check: str = 'off', **train_extra) -> dict:
    """A complete BasicSR training option dict for a tiny KD run on CPU.

    ``teacher_check`` is ``off`` by default: the tests' teachers are random tiny networks, which the
    teacher sanity score (``train.teacher_check``, docs/guarantees.md) would rightly refuse.
    """
    opt = {
        'name': name, 'model_type': model_type, 'scale': scale, 'num_gpu': 0, 'manual_seed': 10,
        'datasets': data_opts(data_root, scale),
        'network_g': student or edsr(8, 2, scale),
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {
            'ema_decay': ema,
            'optim_g': {'type': 'Adam', 'lr': 2e-4, 'weight_decay': 0, 'betas': [0.9, 0.99]},
            'scheduler': {'type': 'MultiStepLR', 'milestones': [100], 'gamma': 0.5},
            'total_iter': total_iter, 'warmup_iter': -1,
            'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'},
            'kd_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'},
            'teacher_check': teacher_check,
        },
        'val': {'val_freq': val_freq, 'save_img': False,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': scale, 'test_y_channel': True}}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': save_freq, 'use_tb_logger': False},
        'dist_params': {'backend': 'gloo', 'port': 29500},
    }
    if teacher_ckpt is not None:
        opt['network_t'] = teacher or edsr(16, 2, scale)
        opt['path']['pretrain_network_t'] = teacher_ckpt
    opt['train'].update(train_extra)
    return opt


def short_run(data_root: str, teacher: str, name: str, **kw) -> dict:
    """A 4-iteration KD run (checkpoint every 2) without validation."""
    opt = train_opt(name, data_root, teacher, total_iter=kw.pop('total_iter', 4), **kw)
    del opt['val'], opt['datasets']['val']
    return opt


def write_yaml(opt: dict, path: str) -> str:
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return path


def run_train(opt: dict, workdir: str, *args: str) -> None:
    """Run BasicSR's ``train_pipeline`` in-process on ``opt`` (written to a YAML in ``workdir``)."""
    from basicsr.train import train_pipeline

    yml = write_yaml(opt, osp.join(workdir, f'{opt["name"]}.yml'))
    old_argv = sys.argv
    sys.argv = ['kdsr_train', '-opt', yml, *args]
    try:
        train_pipeline(str(workdir))
    finally:
        sys.argv = old_argv


def run_test(opt: dict, workdir: str) -> None:
    from basicsr.test import test_pipeline

    yml = write_yaml(opt, osp.join(workdir, f'{opt["name"]}.yml'))
    old_argv = sys.argv
    sys.argv = ['kdsr_test', '-opt', yml]
    try:
        test_pipeline(str(workdir))
    finally:
        sys.argv = old_argv


def experiment_dir(workdir: str, name: str) -> str:
    return osp.join(str(workdir), 'experiments', name)


def model_file(workdir: str, name: str, label: str, it: int | str) -> str:
    return osp.join(experiment_dir(workdir, name), 'models', f'{label}_{it}.pth')


def list_states(workdir: str, name: str) -> list[str]:
    return sorted(os.listdir(osp.join(experiment_dir(workdir, name), 'training_states')))


def build_model_from_opt(opt: dict, root: str, is_train: bool = True):
    """Build a model the way ``parse_options`` + ``build_model`` would (no dataloaders).

    Without an explicit ``train.teacher_check`` the teacher sanity score is off (the tests' teachers
    are random networks; shipped YAMLs are built here with random teachers too).
    """
    from basicsr.models import build_model

    opt = deepcopy(opt)
    if is_train and isinstance(opt.get('train'), dict):
        opt['train'].setdefault('teacher_check', 'off')
    opt.update(is_train=is_train, dist=False, rank=0, world_size=1, auto_resume=False)
    exp = osp.join(str(root), 'experiments', opt['name'])
    opt['path'].update(experiments_root=exp, models=osp.join(exp, 'models'),
                       training_states=osp.join(exp, 'training_states'), log=exp,
                       visualization=osp.join(exp, 'visualization'))
    for key in ('models', 'training_states'):
        os.makedirs(opt['path'][key], exist_ok=True)
    for dataset in opt.get('datasets', {}).values():
        dataset['scale'] = opt['scale']
    return build_model(opt)


def random_batch(scale: int = 2, batch: int = 2, size: int = 16, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {'lq': torch.rand(batch, 3, size, size, generator=g),
            'gt': torch.rand(batch, 3, size * scale, size * scale, generator=g)}


def free_port() -> int:
    """A free local TCP port for a torchrun rendezvous (suites may run DDP tests concurrently)."""
    import socket

    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def run_ddp_check(opt: dict, workdir, nproc: int = 2) -> dict:
    """Train ``opt`` under ``torchrun`` (gloo, CPU) and return ``ddp_train_check.py``'s result.

    The result holds per-rank parameter checksums (``checksums``), ``world_size`` and rank 0's
    logged losses (``log``). Fails with the subprocess output when training fails.
    """
    import json
    import subprocess

    yml = write_yaml(opt, osp.join(str(workdir), f'{opt["name"]}.yml'))
    out = osp.join(str(workdir), f'{opt["name"]}_ddp.json')
    script = osp.join(osp.dirname(osp.abspath(__file__)), 'ddp_train_check.py')
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', str(nproc), '--master_port',
           str(free_port()), script, '-opt', yml, '--launcher', 'pytorch', '--out', out]
    proc = subprocess.run(cmd, cwd=str(workdir), env=dict(os.environ, OMP_NUM_THREADS='1'), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-4000:])
    ranks = []
    for rank in range(nproc):
        with open(f'{out}.rank{rank}') as f:
            ranks.append(json.load(f))
    assert all(r['world_size'] == nproc for r in ranks)
    return {'checksums': [r['checksums'] for r in ranks], 'world_size': nproc, 'log': ranks[0]['log']}


def reference_augment(x: torch.Tensor, subset: str) -> torch.Tensor:
    """DUKD's forward augmentation F written out independently: ops in the order i, h, v, t."""
    if 'i' in subset:
        x = 1 - x
    if 'h' in subset:
        x = torch.flip(x, [-2])
    if 'v' in subset:
        x = torch.flip(x, [-1])
    if 't' in subset:
        x = x.permute(0, 1, 3, 2)
    return x


# ----------------------------------------------------------------------------- tiny MTKD runs (x4)
MTKD_SCALE = 4
MTKD_ORDER = ('edsr', 'swinir')


def mtkd_swinir(scale: int = MTKD_SCALE) -> dict:
    """The SwinIR teacher of the tiny MTKD runs: one stage of depth 2 (a shifted-window block)."""
    return swinir(scale, depths=(2,))


def mtkd_aggregator(n: int = 2, scale: int = MTKD_SCALE, **kw) -> dict:
    return aggregator(n, scale, **kw)


def mtkd_teachers(ckpts: dict, order=MTKD_ORDER) -> list[dict]:
    """``teachers`` list of the tiny MTKD runs (EDSR f8 b1, SwinIR) in ``order``; ``ckpts`` from ``mtkd_ckpts``."""
    nets = {'edsr': edsr(8, 1, MTKD_SCALE), 'swinir': mtkd_swinir()}
    return [{'name': n, 'network': nets[n], 'pretrain': ckpts[n]} for n in order]


def mtkd_stage1_opt(name: str, demo_data: str, ckpts: dict, order=MTKD_ORDER, total_iter: int = 2, **kw) -> dict:
    """MTKD stage 1 (aggregator training) on the demo x4 LMDB, LR patch 32."""
    opt = train_opt(name, demo_data, None, model_type='MTKDAggregatorModel', scale=MTKD_SCALE, total_iter=total_iter,
                    student=mtkd_aggregator(len(order)), **kw)
    opt['teachers'] = mtkd_teachers(ckpts, order)
    del opt['train']['kd_opt']
    opt['datasets']['train']['gt_size'] = 32 * MTKD_SCALE
    return opt


def mtkd_stage2_opt(name: str, demo_data: str, ckpts: dict, agg_ckpt: str | None, order=MTKD_ORDER,
                    total_iter: int = 2, aggregator: dict | None = None, **kw) -> dict:
    """MTKD stage 2 (EDSR f8 b2 student, wavelet KD 1.0 + L1 0.1) with the aggregator of ``agg_ckpt``."""
    opt = train_opt(name, demo_data, None, model_type='MTKDStudentModel', scale=MTKD_SCALE, total_iter=total_iter,
                    student=edsr(8, 2, MTKD_SCALE), **kw)
    opt['teachers'] = mtkd_teachers(ckpts, order)
    opt['aggregator'] = aggregator or {'network': mtkd_aggregator(len(order)), 'pretrain': agg_ckpt}
    opt['train']['kd_opt'] = {'type': 'KDWaveletLoss', 'loss_weight': 1.0, 'levels': 1}
    opt['train']['pixel_opt'] = {'type': 'L1Loss', 'loss_weight': 0.1, 'reduction': 'mean'}
    opt['datasets']['train']['gt_size'] = 32 * MTKD_SCALE
    return opt


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


def logged_run(opt: dict, root) -> str:
    """``run_train`` returning the BasicSR log messages as one string."""
    with captured_log() as lines:
        run_train(opt, str(root))
    return '\n'.join(lines)


# ----------------------------------------------------------------------------- cached teacher targets
PNG16_TOL = 1.5 / 65535  # one png16 step over the default range [-0.25, 1.25]


def close_dataset(ds) -> None:
    """Close the LMDB environments of a dataset (py-lmdb refuses a second open in one process)."""
    if ds.file_client is not None:
        for env in ds.file_client.client._client.values():
            env.close()


def read_lmdb(path: str) -> dict:
    """Every image of an LMDB as a float32 BGR array, by key."""
    import lmdb
    from basicsr.utils import imfrombytes

    env = lmdb.open(path, readonly=True, lock=False)
    with env.begin() as txn:
        out = {k.decode(): imfrombytes(v, float32=True) for k, v in txn.cursor()}
    env.close()
    return out


def cached_opt(opt: dict, targets) -> dict:
    """Switch ``opt`` to ``KDCachedTargetDataset`` on the target cache(s) ``targets`` (in place)."""
    opt['datasets']['train'].update(type='KDCachedTargetDataset', dataroot_target=targets)
    opt['train']['use_cached_targets'] = True
    return opt


def first_batch(opt: dict) -> dict:
    """The first two training items of ``opt``'s train dataset, stacked into a batch."""
    from basicsr.data import build_dataset

    ds = build_dataset(dict(opt['datasets']['train'], phase='train', scale=opt['scale']))
    items = [ds[0], ds[1]]
    close_dataset(ds)
    return {k: torch.stack([it[k] for it in items]) for k in items[0] if torch.is_tensor(items[0][k])}


def no_teachers(*args, **kwargs):
    """A ``teacher_forward`` replacement that fails: cached targets must make the teachers unnecessary."""
    raise AssertionError('a teacher ran although cached targets were given')
