"""MTKD (docs/mtkd.md): stage-1 DCTSwin aggregators and stage-2 students (EDSR-bl, RCAN-lw, SwinIR-lw).

Teachers (canonical order ``[edsr, swinir, rcan]``): EDSR-L, SwinIR-M trained on DF2K (s64w8,
``img_size 64``) and RCAN, at every scale. Recipes: docs/mtkd.md, "5. Shipped option YAMLs".
Besides the plain configs: EDSR ``*_finetune`` variants (student initialised from BasicSR's
EDSR-M), ``*_cached`` x4 variants training from teacher/aggregator caches (built with
``python -m kdsr_plugins.tools.cache_teacher_outputs -opt <yml>``) and a x4 stage-2 config that
loads an aggregator checkpoint of the public MTKD code.
"""
from __future__ import annotations

from copy import deepcopy

from option_templates import DIV2K_LMDB, EDSR_L_ZOO, SCALES, benchmark_set, div2k_train, edsr, metrics, rcan

TEACHER_ORDER = ('edsr', 'swinir', 'rcan')
STAGE1 = 'MTKD_DCTSwin_x{s}_edsr_swinir_rcan'
CACHE_DIR = f'{DIV2K_LMDB}/mtkd_cache_x{{s}}'
EDSR_M_ZOO = {2: 'EDSR_Mx2_f64b16_DIV2K_official-3ba7b086.pth', 3: 'EDSR_Mx3_f64b16_DIV2K_official-6908f88a.pth',
              4: 'EDSR_Mx4_f64b16_DIV2K_official-0c287733.pth'}
TEST_SETS = ('Set5', 'Set14', 'B100', 'Urban100', 'Manga109')
MILESTONES = [250000, 400000, 450000, 475000]


def swinir(embed_dim: int, stages: int, scale: int, upsampler: str) -> dict:
    return dict(type='SwinIR', upscale=scale, in_chans=3, img_size=64, window_size=8, img_range=1.0,
                depths=[6] * stages, embed_dim=embed_dim, num_heads=[6] * stages, mlp_ratio=2, upsampler=upsampler,
                resi_connection='1conv')


def teachers(scale: int) -> list:
    """EDSR-L, SwinIR-M (DF2K s64w8) and RCAN, in the canonical order."""
    return [
        {'name': 'edsr', 'network': edsr(256, 32, scale, 0.1),
         'pretrain': f'experiments/pretrained_models/EDSR/{EDSR_L_ZOO[scale]}', 'param_key': 'params',
         'strict_load': True},
        {'name': 'swinir', 'network': swinir(180, 6, scale, 'pixelshuffle'),
         'pretrain': f'experiments/pretrained_models/SwinIR/001_classicalSR_DF2K_s64w8_SwinIR-M_x{scale}.pth',
         'param_key': 'params', 'strict_load': True},
        {'name': 'rcan', 'network': rcan(10, 20, scale),
         'pretrain': f'experiments/pretrained_models/RCAN/RCAN_BIX{scale}_basicsr.pth', 'param_key': 'params',
         'strict_load': True},
    ]


def aggregator(scale: int, output_convention: str = 'image') -> dict:
    """The released x4 DCTSwin hyper-parameters (docs/mtkd.md, "5. Shipped option YAMLs") at ``scale``."""
    return dict(type='MTKDDCTSwin', num_teachers=len(TEACHER_ORDER), upscale=scale, img_size=256, window_size=8,
                embed_dim=96, depths=[4, 4], num_heads=[6, 6], mlp_ratio=2, upsampler='pixelshuffle',
                resi_connection='1conv', output_convention=output_convention, mask_mode='reference')


STUDENTS = {
    'EDSRbl': lambda s: edsr(64, 16, s, 1.0),
    'RCANlw': lambda s: rcan(10, 6, s),
    'SwinIRlw': lambda s: swinir(60, 4, s, 'pixelshuffledirect'),
}


def _common(name: str, model_type: str, scale: int, lr_patch: int, seed: int) -> dict:
    train_set = div2k_train(scale, lr_patch=lr_patch, batch=16)
    train_set['num_worker_per_gpu'] = 4
    return {'name': name, 'model_type': model_type, 'scale': scale, 'num_gpu': 'auto', 'manual_seed': seed,
            'datasets': {'train': train_set, 'val': benchmark_set('Set5', scale)}}


def _train_block(lr: float, losses: dict) -> dict:
    block = {'ema_decay': 0.999,
             'optim_g': {'type': 'Adam', 'lr': lr, 'weight_decay': 0, 'betas': [0.9, 0.999]},
             'scheduler': {'type': 'MultiStepLR', 'milestones': list(MILESTONES), 'gamma': 0.5},
             'total_iter': 500000, 'warmup_iter': -1}
    block.update(losses)
    return block


def _tail(opt: dict, scale: int) -> dict:
    opt['val'] = {'val_freq': 1000, 'save_img': False, 'metrics': metrics(scale)}
    opt['logger'] = {'print_freq': 100, 'save_checkpoint_freq': 5000, 'use_tb_logger': True,
                     'wandb': {'project': None, 'resume_id': None}}
    return opt


def stage1(scale: int, name: str | None = None) -> dict:
    """Stage 1: DCTSwin on the three teachers' outputs vs GT, L1, GT 64*scale (x4: 256), lr 2e-4."""
    opt = _common(name or STAGE1.format(s=scale), 'MTKDAggregatorModel', scale, lr_patch=64, seed=0)
    opt['teachers'] = teachers(scale)
    opt['network_g'] = aggregator(scale)
    opt['path'] = {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None}
    opt['train'] = _train_block(2e-4, {'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}})
    return _tail(opt, scale)


def stage2(student: str, scale: int, name: str | None = None, pretrain_student: str | None = None,
           agg: dict | None = None) -> dict:
    """Stage 2: student vs frozen aggregator (KDWaveletLoss, 1.0, levels 1) + GT (L1, 0.1), LR 32, lr 2e-5."""
    opt = _common(name or f'MTKD_{student}_x{scale}', 'MTKDStudentModel', scale, lr_patch=32, seed=10)
    opt['teachers'] = teachers(scale)
    opt['aggregator'] = agg or {'network': aggregator(scale),
                                'pretrain': f'experiments/{STAGE1.format(s=scale)}/models/net_g_latest.pth',
                                'param_key': 'params_ema', 'strict_load': True, 'teacher_order_check': 'error'}
    opt['network_g'] = STUDENTS[student](scale)
    path = {'pretrain_network_g': pretrain_student, 'strict_load_g': True, 'resume_state': None}
    if pretrain_student:
        path['param_key_g'] = 'params'
    opt['path'] = path
    opt['train'] = _train_block(2e-5, {
        'kd_opt': {'type': 'KDWaveletLoss', 'loss_weight': 1.0, 'levels': 1},
        'pixel_opt': {'type': 'L1Loss', 'loss_weight': 0.1, 'reduction': 'mean'}})
    return _tail(opt, scale)


def _cached(opt: dict, target) -> dict:
    opt = deepcopy(opt)
    opt['datasets']['train'].update(type='KDCachedTargetDataset', dataroot_target=target)
    opt['train']['use_cached_targets'] = True
    return opt


def _test(name: str, model_type: str, scale: int, network_g: dict, pretrain: str, extra: dict | None = None) -> dict:
    opt = {'name': name, 'model_type': model_type, 'scale': scale, 'num_gpu': 'auto', 'manual_seed': 10,
           'datasets': {f'test_{i + 1}': benchmark_set(s, scale) for i, s in enumerate(TEST_SETS)}}
    opt.update(deepcopy(extra or {}))
    opt['network_g'] = network_g
    opt['path'] = {'pretrain_network_g': pretrain, 'param_key_g': 'params_ema', 'strict_load_g': True}
    opt['val'] = {'save_img': True, 'suffix': None, 'metrics': metrics(scale)}
    return opt


def generate() -> dict:
    out = {}
    for scale in SCALES:
        s1_name = STAGE1.format(s=scale)
        out[f'options/train/MTKD/train_{s1_name}.yml'] = stage1(scale)
        out[f'options/test/MTKD/test_{s1_name}.yml'] = _test(
            f'test_{s1_name}', 'MTKDAggregatorModel', scale, aggregator(scale),
            f'experiments/{s1_name}/models/net_g_latest.pth', {'teachers': teachers(scale)})
        for student, build in STUDENTS.items():
            name = f'MTKD_{student}_x{scale}'
            out[f'options/train/MTKD/train_{name}.yml'] = stage2(student, scale)
            out[f'options/test/MTKD/test_{name}.yml'] = _test(
                f'test_{name}', 'MTKDStudentModel', scale, build(scale), f'experiments/{name}/models/net_g_latest.pth')
        name = f'MTKD_EDSRbl_x{scale}_finetune'
        out[f'options/train/MTKD/train_{name}.yml'] = stage2(
            'EDSRbl', scale, name, f'experiments/pretrained_models/EDSR/{EDSR_M_ZOO[scale]}')
        out[f'options/test/MTKD/test_{name}.yml'] = _test(
            f'test_{name}', 'MTKDStudentModel', scale, STUDENTS['EDSRbl'](scale),
            f'experiments/{name}/models/net_g_latest.pth')

    # x4 examples: training from caches, and a public-MTKD aggregator checkpoint in stage 2
    cache = CACHE_DIR.format(s=4)
    out['options/train/MTKD/train_MTKD_DCTSwin_x4_edsr_swinir_rcan_cached.yml'] = _cached(
        stage1(4, 'MTKD_DCTSwin_x4_edsr_swinir_rcan_cached'), {n: f'{cache}/{n}.lmdb' for n in TEACHER_ORDER})
    out['options/train/MTKD/train_MTKD_EDSRbl_x4_cached.yml'] = _cached(
        stage2('EDSRbl', 4, 'MTKD_EDSRbl_x4_cached'), f'{cache}/aggregator.lmdb')
    public = {'network': aggregator(4, 'mean255'),
              'pretrain': 'experiments/pretrained_models/MTKD/DCTSwinx4_public.pth',
              'param_key': 'params_ema', 'strict_load': True, 'format': 'public_mtkd',
              'teacher_order': list(TEACHER_ORDER), 'teacher_order_check': 'error'}
    out['options/train/MTKD/train_MTKD_EDSRbl_x4_public_aggregator.yml'] = stage2(
        'EDSRbl', 4, 'MTKD_EDSRbl_x4_public_aggregator', agg=public)
    return out
