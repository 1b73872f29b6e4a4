"""GPU check of the package: every model type under each AMP mode, the entry points, CUDA resume, 1-process torchrun.

Run through ``bash bench/gpu_check.sh`` on a CUDA machine (``--device cuda``, ``num_gpu: 1``); with
``--device cpu --amp off --size tiny`` the same steps run on CPU (the test in
``tests/tools/test_gpu_check.py``). Everything runs on data built here (the offline demo
generator, ``kdsr_plugins.data_prep.demo``) and on random-weight networks; nothing is downloaded.

Steps, each failing loudly (``FAILED: <step>: <reason>`` on stderr, exit status 1):

1. In process, per model type (KDModel, FeatureKDModel with FAKD and with FitNet, DUKDModel,
   MiPKDModel, MTKDAggregatorModel, MTKDStudentModel) and per ``train.amp`` mode: ``--warmup``
   + ``--iters`` training iterations on synthetic batches; s/iter (device synchronised), peak
   memory (``torch.cuda.max_memory_allocated`` on CUDA) and the AMP speed-up over ``amp: off``.
   On CUDA one more KDModel row uses ``train.channels_last: true``.
2. ``python -m kdsr_plugins.train`` (KDModel, validation at the end), then ``python -m kdsr_plugins.test``
   on its checkpoint.
3. Resume: MiPKD (random masks drawn on the model device, so the CUDA generator state matters)
   trained 4 iterations in one go vs 2 iterations + ``--auto_resume`` to 4; the training state must
   hold the CUDA RNG state and the resumed weights must match the uninterrupted ones.
4. ``torchrun --nproc_per_node 1`` (nccl on CUDA, gloo on CPU) of a short KDModel run.

Figures go to ``--out`` (default ``bench/results/gpu.md``) with the command, machine and date.

Usage:
    python bench/gpu_check.py --device cuda --amp off,bf16,fp16 [--iters 10] [--warmup 3] [--work DIR]
    python bench/gpu_check.py --device cpu --amp off --size tiny --iters 1 --warmup 1 --out X.md
"""
from __future__ import annotations

import argparse
import datetime
import glob
import os
import os.path as osp
import platform
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from copy import deepcopy
from dataclasses import dataclass
from typing import Callable

import kdsr_plugins  # noqa: F401,I001  (first: registers the plugin)

import torch
import yaml
from basicsr.archs import build_network
from basicsr.models import build_model

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
MEAN = [0.4488, 0.4371, 0.4040]
L1 = {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}
AMP_MODES = ('off', 'bf16', 'fp16')
#: Batch of the entry-point runs: the demo set keeps only 8 training sub-images.
ENTRY_BATCH = 2


class CheckFailed(RuntimeError):
    """One step of the check failed (reported as ``FAILED: <step>: <reason>``)."""


@dataclass(frozen=True)
class Size:
    """Network and batch sizes of one check size."""

    scale: int
    batch: int
    lr_patch: int
    teacher: tuple[int, int]  # EDSR (num_feat, num_block)
    student: tuple[int, int]
    swin_dim: int
    swin_depths: tuple[int, ...]
    agg_dim: int


SIZES = {
    # the bench/speed_memory.py configuration (EDSR 64c16b -> 32c8b, x4, batch 16, LR 48)
    'bench': Size(scale=4, batch=16, lr_patch=48, teacher=(64, 16), student=(32, 8), swin_dim=60, swin_depths=(2, 2),
                  agg_dim=60),
    'tiny': Size(scale=2, batch=2, lr_patch=16, teacher=(16, 2), student=(8, 2), swin_dim=12, swin_depths=(1,),
                 agg_dim=12),
}


def edsr(feat: tuple[int, int], scale: int) -> dict:
    return dict(type='EDSR', num_in_ch=3, num_out_ch=3, num_feat=feat[0], num_block=feat[1], upscale=scale,
                res_scale=1.0, img_range=255.0, rgb_mean=MEAN)


def swinir(size: Size) -> dict:
    return dict(type='SwinIR', upscale=size.scale, in_chans=3, img_size=size.lr_patch, window_size=8, img_range=1.0,
                depths=list(size.swin_depths), embed_dim=size.swin_dim, num_heads=[2] * len(size.swin_depths),
                mlp_ratio=2, upsampler='pixelshuffledirect', resi_connection='1conv')


def aggregator(size: Size) -> dict:
    return dict(type='MTKDDCTSwin', num_teachers=2, upscale=size.scale, img_size=32, window_size=4,
                embed_dim=size.agg_dim, depths=[1], num_heads=[2], mlp_ratio=2, num_feat=8)


def save_random(net_opt: dict, path: str, seed: int) -> str:
    torch.manual_seed(seed)
    torch.save({'params': build_network(deepcopy(net_opt)).state_dict()}, path)
    return path


# ----------------------------------------------------------------------------- model configurations
def taps(size: Size) -> tuple[list, list]:
    """Head, two body units and the body output of teacher and student (docs/feature_kd.md)."""
    nt, ns = size.teacher[1], size.student[1]
    return (['conv_first', nt // 2 - 1, nt - 1, 'conv_after_body'],
            ['conv_first', ns // 2 - 1, ns - 1, 'conv_after_body'])


def mipkd_positions(size: Size) -> tuple[list, list]:
    nt, ns = size.teacher[1], size.student[1]
    return [nt // 2 - 1, nt - 1], [ns // 2 - 1, ns - 1]


def model_configs(size: Size, ckpts: dict) -> dict[str, tuple[str, dict, dict]]:
    """label -> (model_type, train-block additions, top-level additions) of every model type."""
    taps_t, taps_s = taps(size)
    pos_t, pos_s = mipkd_positions(size)
    feature = {'kd_opt': L1, 'feature_kd': {'positions_t': taps_t, 'positions_s': taps_s}}
    teachers = [{'name': 'edsr', 'network': edsr(size.teacher, size.scale), 'pretrain': ckpts['teacher']},
                {'name': 'swinir', 'network': swinir(size), 'pretrain': ckpts['swinir']}]
    return {
        'KDModel': ('KDModel', {'kd_opt': L1}, {}),
        'FeatureKDModel (FAKD)': ('FeatureKDModel', {**feature, 'feature_opt': {'type': 'KDAffinityLoss',
                                                                                'loss_weight': 10.0}}, {}),
        'FeatureKDModel (FitNet)': ('FeatureKDModel', {**feature, 'feature_opt': {'type': 'KDFitNetLoss',
                                                                                  'loss_weight': 10.0}}, {}),
        'DUKDModel': ('DUKDModel', {'kd_opt': L1, 'dukd_opt': {'n_gt_sub': [1], 'zoom_out': True},
                                    'noisy': {'prob': 0.3}}, {}),
        'MiPKDModel': ('MiPKDModel', {'kd_opt': L1, 'mipkd_opt': {'positions_t': pos_t, 'positions_s': pos_s}}, {}),
        'MTKDAggregatorModel': ('MTKDAggregatorModel', {}, {'teachers': teachers, 'network_g': aggregator(size)}),
        'MTKDStudentModel': ('MTKDStudentModel', {'pixel_opt': {**L1, 'loss_weight': 0.1},
                                                  'kd_opt': {'type': 'KDWaveletLoss', 'loss_weight': 1.0,
                                                             'levels': 1}},
                             {'teachers': teachers, 'aggregator': {'network': aggregator(size),
                                                                   'pretrain': ckpts['aggregator'],
                                                                   'param_key': 'params',
                                                                   'teacher_order': ['edsr', 'swinir']}}),
    }


def amp_block(amp: str, channels_last: bool = False) -> dict:
    """``train.amp`` / ``train.channels_last`` (written only when not the default)."""
    block: dict = {} if amp == 'off' else {'amp': amp}
    if channels_last:
        block['channels_last'] = True
    return block


def train_options(label: str, size: Size, ckpts: dict, num_gpu: int, amp: str, root: str,
                  channels_last: bool = False) -> dict:
    model_type, train_extra, top_extra = model_configs(size, ckpts)[label]
    opt = {'name': f'gpu_check_{model_type}', 'model_type': model_type, 'scale': size.scale, 'num_gpu': num_gpu,
           'is_train': True, 'dist': False, 'rank': 0, 'world_size': 1,
           'network_g': edsr(size.student, size.scale), 'network_t': edsr(size.teacher, size.scale),
           'path': {'pretrain_network_g': None, 'pretrain_network_t': ckpts['teacher'], 'models': root,
                    'training_states': root},
           'train': {'ema_decay': 0.999, 'optim_g': {'type': 'Adam', 'lr': 1e-4, 'betas': [0.9, 0.99]},
                     'scheduler': {'type': 'MultiStepLR', 'milestones': [10 ** 6], 'gamma': 0.5},
                     'total_iter': 100, 'pixel_opt': L1, 'teacher_check': 'off', **deepcopy(train_extra),
                     **amp_block(amp, channels_last)}}
    opt.update(deepcopy(top_extra))
    if 'teachers' in opt:
        del opt['network_t'], opt['path']['pretrain_network_t']
    return opt


# ----------------------------------------------------------------------------- step 1: timings
def synchronize(device: str) -> None:
    if device == 'cuda':
        torch.cuda.synchronize()


def synthetic_batch(size: Size, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    hr = size.lr_patch * size.scale
    return {'lq': torch.rand(size.batch, 3, size.lr_patch, size.lr_patch, generator=g),
            'gt': torch.rand(size.batch, 3, hr, hr, generator=g)}


def time_model(label: str, size: Size, ckpts: dict, device: str, amp: str, iters: int, warmup: int, root: str,
               channels_last: bool = False) -> dict:
    """s/iter and peak memory of ``optimize_parameters`` (synthetic batches, device synchronised)."""
    num_gpu = 1 if device == 'cuda' else 0
    torch.manual_seed(0)
    model = build_model(train_options(label, size, ckpts, num_gpu, amp, root, channels_last))
    data = [synthetic_batch(size, i) for i in range(2)]
    if device == 'cuda':
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(warmup + iters):
        model.feed_data(data[i % 2])
        synchronize(device)
        start = time.perf_counter()
        model.optimize_parameters(i + 1)
        synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    losses = {k: float(v) for k, v in model.get_current_log().items()}
    bad = [k for k, v in losses.items() if not torch.isfinite(torch.tensor(v))]
    if bad:
        raise CheckFailed(f'non-finite losses {bad} ({losses})')
    peak = torch.cuda.max_memory_allocated() / 2 ** 20 if device == 'cuda' else float('nan')
    del model
    return {'label': label, 'amp': amp, 'channels_last': channels_last, 's_per_iter': sum(times) / len(times),
            'peak_mb': peak, 'losses': sorted(losses)}


# ----------------------------------------------------------------------------- steps 2-4: subprocesses
def run(cmd: list[str], cwd: str, step: str, timeout: int = 300) -> str:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get('PYTHONPATH')) if p),
               PYTHONUNBUFFERED='1')
    print(f'[gpu_check] {step}: {shlex.join(cmd)}', flush=True)
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise CheckFailed(f'timed out after {timeout} s: {shlex.join(cmd)}') from exc
    if proc.returncode != 0:
        tail = (proc.stdout[-1500:] + '\n' + proc.stderr[-3000:]).strip()
        raise CheckFailed(f'exit status {proc.returncode} of {shlex.join(cmd)}\n{tail}')
    return proc.stdout + proc.stderr


def data_blocks(data_root: str, size: Size, num_gpu: int) -> dict:
    train = dict(name='demo_train', type='PairedImageDataset', dataroot_gt=osp.join(data_root, 'train_HR_sub.lmdb'),
                 dataroot_lq=osp.join(data_root, f'train_LR_X{size.scale}_sub.lmdb'), io_backend={'type': 'lmdb'},
                 gt_size=size.lr_patch * size.scale, use_hflip=True, use_rot=True, num_worker_per_gpu=0,
                 batch_size_per_gpu=ENTRY_BATCH, dataset_enlarge_ratio=1, prefetch_mode=None)
    if num_gpu:
        train.update(prefetch_mode='cuda', pin_memory=True)
    val = dict(name='demo_val', type='PairedImageDataset', dataroot_gt=osp.join(data_root, 'val_HR.lmdb'),
               dataroot_lq=osp.join(data_root, f'val_LR_X{size.scale}.lmdb'), io_backend={'type': 'lmdb'})
    return {'train': train, 'val': val}


def entry_train_options(name: str, model_type: str, size: Size, ckpts: dict, data_root: str, num_gpu: int,
                        amp: str, total_iter: int, train_extra: dict, backend: str = 'nccl') -> dict:
    return {
        'name': name, 'model_type': model_type, 'scale': size.scale, 'num_gpu': num_gpu, 'manual_seed': 10,
        'datasets': data_blocks(data_root, size, num_gpu),
        'network_g': edsr(size.student, size.scale), 'network_t': edsr(size.teacher, size.scale),
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None,
                 'pretrain_network_t': ckpts['teacher']},
        'train': {'ema_decay': 0.999, 'optim_g': {'type': 'Adam', 'lr': 2e-4, 'weight_decay': 0, 'betas': [0.9, 0.99]},
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [100], 'gamma': 0.5},
                  'total_iter': total_iter, 'warmup_iter': -1, 'pixel_opt': L1, 'kd_opt': L1,
                  'teacher_check': 'off', **deepcopy(train_extra), **amp_block(amp)},
        'val': {'val_freq': total_iter, 'save_img': False,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': size.scale, 'test_y_channel': True}}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 2, 'use_tb_logger': False},
        'dist_params': {'backend': backend, 'port': 29500},
    }


def write_yaml(opt: dict, path: str) -> str:
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return path


def check_entry_points(work: str, size: Size, ckpts: dict, data_root: str, num_gpu: int, amp: str) -> dict:
    """Train entry (validation at the end), then the test entry on its checkpoint."""
    opt = entry_train_options('entry_train', 'KDModel', size, ckpts, data_root, num_gpu, amp, 4, {})
    start = time.perf_counter()
    log = run([sys.executable, '-m', 'kdsr_plugins.train', '-opt', write_yaml(opt, osp.join(work, 'entry.yml'))],
              work, 'train entry')
    train_s = time.perf_counter() - start
    ckpt = osp.join(work, 'experiments', 'entry_train', 'models', 'net_g_4.pth')
    if not osp.isfile(ckpt) or 'psnr' not in log.lower():
        raise CheckFailed(f'train entry: no {ckpt} or no validation PSNR in the log')
    test = {'name': 'entry_test', 'model_type': 'KDModel', 'scale': size.scale, 'num_gpu': num_gpu,
            'datasets': {'test_1': data_blocks(data_root, size, 0)['val']}, 'network_g': edsr(size.student, size.scale),
            'path': {'pretrain_network_g': ckpt, 'param_key_g': 'params_ema', 'strict_load_g': True},
            'val': {'save_img': False, 'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': size.scale,
                                                            'test_y_channel': True}}}}
    start = time.perf_counter()
    log = run([sys.executable, '-m', 'kdsr_plugins.test', '-opt', write_yaml(test, osp.join(work, 'test.yml'))],
              work, 'test entry')
    if 'psnr' not in log.lower():
        raise CheckFailed('test entry: no PSNR in the log')
    return {'train_s': train_s, 'test_s': time.perf_counter() - start}


def _weights(path: str) -> dict:
    return torch.load(path, map_location='cpu', weights_only=True)['params']


def check_resume(work: str, size: Size, ckpts: dict, data_root: str, num_gpu: int, amp: str) -> dict:
    """MiPKD 4 iterations in one go vs 2 + ``--auto_resume`` to 4: same weights; CUDA RNG in the state."""
    pos_t, pos_s = mipkd_positions(size)
    extra = {'mipkd_opt': {'positions_t': pos_t, 'positions_s': pos_s}}
    full = entry_train_options('resume_full', 'MiPKDModel', size, ckpts, data_root, num_gpu, amp, 4, extra)
    part = entry_train_options('resume_part', 'MiPKDModel', size, ckpts, data_root, num_gpu, amp, 2, extra)
    for opt in (full, part):
        del opt['val'], opt['datasets']['val']
    train = [sys.executable, '-m', 'kdsr_plugins.train', '-opt']
    run(train + [write_yaml(full, osp.join(work, 'resume_full.yml'))], work, 'resume: uninterrupted run')
    run(train + [write_yaml(part, osp.join(work, 'resume_part.yml'))], work, 'resume: first 2 iterations')
    state = torch.load(osp.join(work, 'experiments', 'resume_part', 'training_states', '2.state'), map_location='cpu',
                       weights_only=False)
    has_cuda_rng = any('cuda' in v for v in _nested_keys(state))
    if num_gpu and not has_cuda_rng:
        raise CheckFailed('resume: the training state 2.state holds no CUDA RNG state')
    part['train']['total_iter'] = 4
    run(train + [write_yaml(part, osp.join(work, 'resume_part.yml')), '--auto_resume'], work, 'resume: 2 -> 4')
    models = osp.join(work, 'experiments', '{}', 'models')
    ref, got = _weights(osp.join(models.format('resume_full'), 'net_g_4.pth')), \
        _weights(osp.join(models.format('resume_part'), 'net_g_4.pth'))
    start = _weights(osp.join(models.format('resume_full'), 'net_g_2.pth'))
    diff = max((ref[k].double() - got[k].double()).abs().max().item() for k in ref)
    update = max((ref[k].double() - start[k].double()).abs().max().item() for k in ref)
    # CUDA kernels are not bitwise deterministic; other masks or data would differ by about the update itself
    if not diff <= 1e-2 * update:
        raise CheckFailed(f'resume: resumed weights differ from the uninterrupted run by {diff:.3g} '
                          f'(the last two updates moved them by {update:.3g})')
    return {'max_diff': diff, 'update': update, 'cuda_rng': has_cuda_rng}


def _nested_keys(obj, depth: int = 0):
    if isinstance(obj, dict) and depth < 4:
        for key, value in obj.items():
            yield str(key)
            yield from _nested_keys(value, depth + 1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def check_torchrun(work: str, size: Size, ckpts: dict, data_root: str, num_gpu: int, amp: str) -> dict:
    backend = 'nccl' if num_gpu else 'gloo'
    opt = entry_train_options('torchrun', 'KDModel', size, ckpts, data_root, num_gpu, amp, 2, {}, backend)
    del opt['val'], opt['datasets']['val']
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '1', '--master_port', str(free_port()),
           '-m', 'kdsr_plugins.train', '-opt', write_yaml(opt, osp.join(work, 'torchrun.yml')), '--launcher', 'pytorch']
    start = time.perf_counter()
    run(cmd, work, f'torchrun ({backend})')
    if not glob.glob(osp.join(work, 'experiments', 'torchrun', 'models', 'net_g_2.pth')):
        raise CheckFailed('torchrun: no net_g_2.pth written')
    return {'backend': backend, 'seconds': time.perf_counter() - start}


# ----------------------------------------------------------------------------- report
def device_name(device: str) -> str:
    if device == 'cuda':
        return f'{torch.cuda.get_device_name(0)}, CUDA {torch.version.cuda}, torch {torch.__version__}'
    return f'{platform.machine()} CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads), torch ' \
           f'{torch.__version__}'


def report(rows: list[dict], extra: dict, args: argparse.Namespace, size: Size) -> str:
    off = {r['label']: r['s_per_iter'] for r in rows if r['amp'] == 'off' and not r['channels_last']}
    lines = ['# GPU check', '', f'Command: `{args.command}`; machine: {device_name(args.device)}; '
             f'date: {datetime.date.today().isoformat()}.', '',
             f'Synthetic batches: x{size.scale}, batch {size.batch}, LR patch {size.lr_patch}; EDSR '
             f'{size.teacher[0]}c{size.teacher[1]}b teacher -> {size.student[0]}c{size.student[1]}b student (MTKD: '
             f'+ SwinIR teacher, DCT-Swin aggregator); random weights. Mean of {args.iters} iterations after '
             f'{args.warmup} warm-up, device synchronised around each `optimize_parameters`.', '',
             '| Model | train.amp | channels_last | s / iter | peak memory (MiB) | AMP speed-up vs off |',
             '|---|---|---|---:|---:|---:|']
    for r in rows:
        speed = f'{off[r["label"]] / r["s_per_iter"]:.2f}' if r['label'] in off and r['amp'] != 'off' else '-'
        peak = '-' if r['peak_mb'] != r['peak_mb'] else f'{r["peak_mb"]:.0f}'
        lines.append(f'| {r["label"]} | {r["amp"]} | {str(r["channels_last"]).lower()} | {r["s_per_iter"]:.4f} | '
                     f'{peak} | {speed} |')
    lines += ['', '| Step | Result |', '|---|---|']
    if 'entry' in extra:
        lines.append(f'| `python -m kdsr_plugins.train` then `python -m kdsr_plugins.test` (KDModel, amp '
                     f'{args.entry_amp}) | ok: {extra["entry"]["train_s"]:.1f} s + {extra["entry"]["test_s"]:.1f} s |')
    if 'resume' in extra:
        r = extra['resume']
        lines.append(f'| resume (MiPKDModel, 2 + `--auto_resume` 2 vs 4 iterations) | ok: max weight difference '
                     f'{r["max_diff"]:.3g} (last two updates {r["update"]:.3g}); CUDA RNG in the state: '
                     f'{str(r["cuda_rng"]).lower()} |')
    if 'torchrun' in extra:
        t = extra['torchrun']
        lines.append(f'| `torchrun --nproc_per_node 1` ({t["backend"]}, KDModel) | ok: {t["seconds"]:.1f} s |')
    lines += ['', 'All steps passed.']
    return '\n'.join(lines) + '\n'


def step(name: str, func: Callable, *args, **kwargs):
    try:
        return func(*args, **kwargs)
    except CheckFailed as exc:
        raise CheckFailed(f'{name}: {exc}') from exc
    except Exception as exc:  # any error of a step is a failure of the check, with its traceback
        traceback.print_exc()
        raise CheckFailed(f'{name}: {type(exc).__name__}: {exc}') from exc


def prepare(work: str, size: Size) -> tuple[dict, str]:
    from kdsr_plugins.data_prep.demo import build_demo_dataset

    data_root = osp.join(work, 'demo_data')
    build_demo_dataset(data_root, scales=(size.scale,), max_train_images=8)
    ckpts = {'teacher': save_random(edsr(size.teacher, size.scale), osp.join(work, 'teacher.pth'), 1),
             'swinir': save_random(swinir(size), osp.join(work, 'swinir.pth'), 2),
             'aggregator': save_random(aggregator(size), osp.join(work, 'aggregator.pth'), 3)}
    return ckpts, data_root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', choices=('cuda', 'cpu'), default='cuda')
    parser.add_argument('--amp', default=','.join(AMP_MODES), help='comma-separated train.amp modes')
    parser.add_argument('--size', choices=tuple(SIZES), default='bench')
    parser.add_argument('--iters', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--work', default=None, help='work folder (default: a fresh temporary one)')
    parser.add_argument('--out', default=osp.join(ROOT, 'bench', 'results', 'gpu.md'))
    args = parser.parse_args(argv)
    args.command = 'python bench/gpu_check.py ' + shlex.join(argv if argv is not None else sys.argv[1:])
    amps = [a for a in args.amp.split(',') if a]
    if not amps or any(a not in AMP_MODES for a in amps):
        parser.error(f'--amp: comma-separated values of {AMP_MODES}, got {args.amp!r}')
    if args.device == 'cuda' and not torch.cuda.is_available():
        print('FAILED: setup: --device cuda but torch.cuda.is_available() is False', file=sys.stderr)
        return 1
    size = SIZES[args.size]
    num_gpu = 1 if args.device == 'cuda' else 0
    args.entry_amp = next((a for a in amps if a != 'off'), 'off')
    work = args.work or tempfile.mkdtemp(prefix='kdsr_gpu_check_')
    os.makedirs(work, exist_ok=True)
    try:
        ckpts, data_root = step('setup', prepare, work, size)
        rows, extra = [], {}
        for label in model_configs(size, ckpts):
            for amp in amps:
                print(f'[gpu_check] {label}, amp {amp}', flush=True)
                rows.append(step(f'{label} (amp {amp})', time_model, label, size, ckpts, args.device, amp, args.iters,
                                 args.warmup, work))
        if args.device == 'cuda':
            amp = args.entry_amp
            rows.append(step(f'KDModel (amp {amp}, channels_last)', time_model, 'KDModel', size, ckpts, args.device,
                             amp, args.iters, args.warmup, work, channels_last=True))
        extra['entry'] = step('entry points', check_entry_points, work, size, ckpts, data_root, num_gpu,
                              args.entry_amp)
        extra['resume'] = step('resume', check_resume, work, size, ckpts, data_root, num_gpu, args.entry_amp)
        extra['torchrun'] = step('torchrun', check_torchrun, work, size, ckpts, data_root, num_gpu, args.entry_amp)
    except CheckFailed as exc:
        print(f'FAILED: {exc}', file=sys.stderr)
        return 1
    text = report(rows, extra, args, size)
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
        f.write(text)
    print(text)
    print(f'[gpu_check] all steps passed; figures in {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
