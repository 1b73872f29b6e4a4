"""Networks, data and training settings of the demo (x4 on the scikit-image demo dataset)."""
from __future__ import annotations

import os.path as osp
from copy import deepcopy

from kdsr_plugins.core.amp_sr_model import apply_precision

SCALE = 4
RGB_MEAN = [0.4488, 0.4371, 0.4040]
ASSETS = osp.join(osp.dirname(osp.abspath(__file__)), 'assets')


def edsr(num_feat: int, num_block: int) -> dict:
    return dict(type='EDSR', num_in_ch=3, num_out_ch=3, num_feat=num_feat, num_block=num_block, upscale=SCALE,
                res_scale=1.0, img_range=255.0, rgb_mean=RGB_MEAN)


def rcan(num_feat: int, num_group: int, num_block: int) -> dict:
    return dict(type='RCAN', num_in_ch=3, num_out_ch=3, num_feat=num_feat, num_group=num_group, num_block=num_block,
                squeeze_factor=8, upscale=SCALE, res_scale=1, img_range=255.0, rgb_mean=RGB_MEAN)


#: The repository checkout this package runs from (``bash demo.sh``); the photo teacher ships under ``bench/``.
REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
#: The real-photo benchmark teachers (``bench/teachers/<name>.yml``: the cards, test PSNR-Y 36.58 / 36.44 dB),
#: trained by ``bench/photo`` (bench/photo/README.md); the demo never retrains them.
PHOTO_TEACHER = osp.join(REPO, 'bench', 'teachers', 'teacher_edsr_f48b16_x4.pth')
PHOTO_RCAN_TEACHER = osp.join(REPO, 'bench', 'teachers', 'teacher_rcan_f48g4b4_x4.pth')

#: Teachers: name -> (network options, shipped checkpoint). ``edsr`` teaches every single-teacher method;
#: MTKD aggregates both.
TEACHERS = {
    'edsr': (edsr(48, 16), PHOTO_TEACHER),
    'rcan': (rcan(48, 4, 4), PHOTO_RCAN_TEACHER),
}
#: The benchmark's student (``bench/photo/benchmark.yml``): 17,667 parameters, 1/48 of the EDSR teacher.
STUDENT = edsr(12, 2)
#: The stored real-photo benchmark result the demo prints next to its own table.
BENCHMARK_TABLE = osp.join(REPO, 'bench', 'results', 'photo_x4', 'table.md')
#: The same student at convergence (4,800 iterations), printed after it: how much of the 1,200-iteration gains stays.
CONVERGED_TABLE = osp.join(REPO, 'bench', 'results', 'photo_x4_4800', 'table.md')


def datasets(data_root: str, lr_patch: int = 24, batch: int = 8) -> dict:
    """Train and validation blocks on the demo LMDBs (absolute paths: BasicSR resolves from the CWD)."""
    root = osp.abspath(data_root)
    return {
        'train': dict(name='demo_train', type='PairedImageDataset', dataroot_gt=osp.join(root, 'train_HR_sub.lmdb'),
                      dataroot_lq=osp.join(root, f'train_LR_X{SCALE}_sub.lmdb'), io_backend={'type': 'lmdb'},
                      gt_size=lr_patch * SCALE, use_hflip=True, use_rot=True, num_worker_per_gpu=0,
                      batch_size_per_gpu=batch, dataset_enlarge_ratio=1, prefetch_mode=None),
        'val': dict(name='demo_val', type='PairedImageDataset', dataroot_gt=osp.join(root, 'val_HR.lmdb'),
                    dataroot_lq=osp.join(root, f'val_LR_X{SCALE}.lmdb'), io_backend={'type': 'lmdb'}),
    }


def default_precision() -> str:
    """``bf16`` on a CPU with native bfloat16 (AMX / AVX-512 BF16: 2-4x faster with channels-last), else ``off``."""
    from kdsr_plugins.core.amp import native_bf16_cpu
    return 'bf16' if native_bf16_cpu() else 'off'


def metrics() -> dict:
    return {'psnr': {'type': 'calculate_psnr', 'crop_border': SCALE, 'test_y_channel': True},
            'ssim': {'type': 'calculate_ssim', 'crop_border': SCALE, 'test_y_channel': True}}


def train_options(name: str, model_type: str, network_g: dict, data_root: str, iters: int, seed: int,
                  train_extra: dict | None = None, top_extra: dict | None = None, lr: float = 1e-3,
                  val_freq: int | None = None, amp: str = 'off') -> dict:
    """A complete training option dict for one demo run (no EMA: short runs, raw weights scored).

    ``amp`` other than ``off`` trains under ``train.amp`` with ``train.channels_last`` (docs/amp.md);
    the student trained alone then runs as ``AmpSRModel`` so that every row has the same precision.

    ``val_freq`` adds validation on the demo validation images every ``val_freq`` iterations (and
    after the last), so the training log holds PSNR/SSIM curves; ``None`` (the demo) validates never.
    Validation is random-neutral for the KD models, so it does not change what is trained.
    """
    train = {
        'ema_decay': 0,
        'optim_g': {'type': 'Adam', 'lr': lr, 'weight_decay': 0, 'betas': [0.9, 0.99]},
        'scheduler': {'type': 'CosineAnnealingRestartLR', 'periods': [iters], 'restart_weights': [1],
                      'eta_min': lr * 0.05},
        'total_iter': iters, 'warmup_iter': -1,
        'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'},
    }
    train.update(deepcopy(train_extra or {}))
    opt = {'name': name, 'model_type': model_type, 'scale': SCALE, 'num_gpu': 0, 'manual_seed': seed,
           'datasets': datasets(data_root), 'network_g': deepcopy(network_g),
           'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
           'train': train,
           'logger': {'print_freq': max(1, iters // 5), 'save_checkpoint_freq': iters, 'use_tb_logger': False}}
    apply_precision(opt, amp, channels_last=amp != 'off')
    if val_freq:
        opt['val'] = {'val_freq': val_freq, 'save_img': False, 'metrics': metrics()}
    opt.update(deepcopy(top_extra or {}))
    return opt


def test_options(name: str, network_g: dict, checkpoint: str, data_root: str, model_type: str = 'SRModel',
                 param_key: str = 'params', save_img: bool = True) -> dict:
    val = datasets(data_root)['val']
    return {'name': name, 'model_type': model_type, 'scale': SCALE, 'num_gpu': 0, 'manual_seed': 0,
            'datasets': {'test_1': val}, 'network_g': deepcopy(network_g),
            'path': {'pretrain_network_g': checkpoint, 'param_key_g': param_key, 'strict_load_g': True},
            'val': {'save_img': save_img, 'suffix': None, 'metrics': metrics()}}
