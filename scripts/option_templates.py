"""Building blocks for the shipped option YAMLs (paper teacher/student pairs, DIV2K recipe).

Each method has a module in ``scripts/option_methods/`` exposing ``generate() -> dict[path, opt]``;
``scripts/make_options.py`` writes them all. Keeping the shared parts here means every method's
YAMLs use the same data, validation, metrics and arch settings.
"""
from __future__ import annotations

from copy import deepcopy

RGB_MEAN = [0.4488, 0.4371, 0.4040]
SCALES = (2, 3, 4)
BENCHMARK_SETS = ('Set5', 'Set14', 'B100', 'Urban100')
DIV2K_LMDB = 'datasets/DIV2K'
BENCHMARK_ROOT = 'datasets/benchmark'

EDSR_L_ZOO = {2: 'EDSR_Lx2_f256b32_DIV2K_official-be38e77d.pth', 3: 'EDSR_Lx3_f256b32_DIV2K_official-3660f70d.pth',
              4: 'EDSR_Lx4_f256b32_DIV2K_official-76ee1c8f.pth'}


def edsr(num_feat: int, num_block: int, scale: int, res_scale: float) -> dict:
    return dict(type='EDSR', num_in_ch=3, num_out_ch=3, num_feat=num_feat, num_block=num_block, upscale=scale,
                res_scale=res_scale, img_range=255.0, rgb_mean=RGB_MEAN)


def rcan(num_group: int, num_block: int, scale: int) -> dict:
    return dict(type='RCAN', num_in_ch=3, num_out_ch=3, num_feat=64, num_group=num_group, num_block=num_block,
                squeeze_factor=16, upscale=scale, res_scale=1, img_range=255.0, rgb_mean=RGB_MEAN)


def swinir(embed_dim: int, stages: int, scale: int, img_size: int = 48) -> dict:
    return dict(type='SwinIR', upscale=scale, in_chans=3, img_size=img_size, window_size=8, img_range=1.0,
                depths=[6] * stages, embed_dim=embed_dim, num_heads=[6] * stages, mlp_ratio=2,
                upsampler='pixelshuffle', resi_connection='1conv')


#: family -> (label, teacher builder, student builder, teacher checkpoint path, param key)
PAIRS = {
    'EDSR': dict(tag='x{s}c256b32_c64b32', teacher=lambda s: edsr(256, 32, s, 0.1),
                 student=lambda s: edsr(64, 32, s, 0.1),
                 ckpt=lambda s: f'experiments/pretrained_models/EDSR/{EDSR_L_ZOO[s]}', key='params'),
    'RCAN': dict(tag='x{s}g10b20_g10b6', teacher=lambda s: rcan(10, 20, s), student=lambda s: rcan(10, 6, s),
                 ckpt=lambda s: f'experiments/pretrained_models/RCAN/RCAN_BIX{s}_basicsr.pth', key='params'),
    'SwinIR': dict(tag='x{s}e180d6_e60d4', teacher=lambda s: swinir(180, 6, s), student=lambda s: swinir(60, 4, s),
                   ckpt=lambda s: ('experiments/pretrained_models/SwinIR/'
                                   f'001_classicalSR_DIV2K_s48w8_SwinIR-M_x{s}.pth'), key='params'),
}


def metrics(scale: int) -> dict:
    return {'psnr': {'type': 'calculate_psnr', 'crop_border': scale, 'test_y_channel': True},
            'ssim': {'type': 'calculate_ssim', 'crop_border': scale, 'test_y_channel': True}}


def benchmark_set(name: str, scale: int) -> dict:
    return {'name': name, 'type': 'PairedImageDataset', 'dataroot_gt': f'{BENCHMARK_ROOT}/{name}/HR',
            'dataroot_lq': f'{BENCHMARK_ROOT}/{name}/LR_bicubic/X{scale}', 'filename_tmpl': f'{{}}x{scale}',
            'io_backend': {'type': 'disk'}}


def div2k_train(scale: int, lr_patch: int = 48, batch: int = 16) -> dict:
    return {'name': 'DIV2K', 'type': 'PairedImageDataset',
            'dataroot_gt': f'{DIV2K_LMDB}/DIV2K_train_HR_sub.lmdb',
            'dataroot_lq': f'{DIV2K_LMDB}/DIV2K_train_LR_bicubic_X{scale}_sub.lmdb',
            'io_backend': {'type': 'lmdb'}, 'gt_size': lr_patch * scale, 'use_hflip': True, 'use_rot': True,
            'num_worker_per_gpu': 6, 'batch_size_per_gpu': batch, 'dataset_enlarge_ratio': 100,
            'prefetch_mode': None}


def train_options(name: str, model_type: str, family: str, scale: int, method_train: dict | None = None,
                  total_iter: int = 250000, milestones: tuple = (100000, 200000), lr: float = 1e-4,
                  seed: int = 10, teacher: bool = True) -> dict:
    """The DUKD/MiPKD recipe (docs/dukd.md "Shipped YAMLs", docs/mipkd.md) for one pair and scale."""
    pair = PAIRS[family]
    datasets = {'train': div2k_train(scale)}
    for i, set_name in enumerate(BENCHMARK_SETS):
        datasets['val' if i == 0 else f'val_{i}'] = benchmark_set(set_name, scale)
    opt = {
        'name': name, 'model_type': model_type, 'scale': scale, 'num_gpu': 'auto', 'manual_seed': seed,
        'datasets': datasets,
        'network_g': pair['student'](scale),
    }
    path = {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None}
    if teacher:
        opt['network_t'] = pair['teacher'](scale)
        path.update(pretrain_network_t=pair['ckpt'](scale), param_key_t=pair['key'], strict_load_t=True)
    opt['path'] = path
    train = {
        'ema_decay': 0.999,
        'optim_g': {'type': 'Adam', 'lr': lr, 'weight_decay': 0, 'betas': [0.9, 0.99]},
        'scheduler': {'type': 'MultiStepLR', 'milestones': list(milestones), 'gamma': 0.1},
        'total_iter': total_iter, 'warmup_iter': -1,
        'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'},
    }
    if teacher:
        train['kd_opt'] = {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}
    train.update(deepcopy(method_train or {}))
    opt['train'] = train
    opt['val'] = {'val_freq': 5000, 'save_img': False, 'metrics': metrics(scale)}
    opt['logger'] = {'print_freq': 100, 'save_checkpoint_freq': 5000, 'use_tb_logger': True,
                     'wandb': {'project': None, 'resume_id': None}}
    return opt


def test_options(name: str, train_name: str, family: str, scale: int, model_type: str = 'KDModel',
                 param_key: str = 'params_ema') -> dict:
    """Evaluate the student of a training run on the benchmark sets (Y channel, crop = scale)."""
    datasets = {f'test_{i + 1}': benchmark_set(s, scale) for i, s in enumerate(BENCHMARK_SETS + ('Manga109',))}
    return {
        'name': name, 'model_type': model_type, 'scale': scale, 'num_gpu': 'auto', 'manual_seed': 10,
        'datasets': datasets, 'network_g': PAIRS[family]['student'](scale),
        'path': {'pretrain_network_g': f'experiments/{train_name}/models/net_g_latest.pth',
                 'param_key_g': param_key, 'strict_load_g': True},
        'val': {'save_img': True, 'suffix': None, 'metrics': metrics(scale)},
    }


def insert_after(opt: dict, after: str, key: str, value) -> dict:
    """A copy of ``opt`` with ``key: value`` placed right after ``after`` (keeps YAML key order readable)."""
    out = {}
    for k, v in opt.items():
        out[k] = v
        if k == after:
            out[key] = value
    return out


def pair_tag(family: str, scale: int) -> str:
    return PAIRS[family]['tag'].format(s=scale)
