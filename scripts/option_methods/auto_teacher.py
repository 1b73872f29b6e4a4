"""Teachers from any SR checkpoint (``network: {type: auto}``, docs/auto_teachers.md), x4 examples.

* logits KD of the EDSR c64b32 student from HAT-L (the authors' ``params_ema`` release);
* MTKD stage 1 and 2 with three different spandrel teachers (HAT-L, DAT, ESRGAN's RRDB-PSNR).

The architecture, its hyper-parameters and the scale come from each checkpoint; nothing but the
file is configured. The checkpoints are the authors' releases, put under experiments/pretrained_models.
"""
from __future__ import annotations

from copy import deepcopy

from option_methods.mtkd import STUDENTS, aggregator, stage1, stage2
from option_templates import test_options, train_options

ZOO = 'experiments/pretrained_models'
HAT_L = f'{ZOO}/HAT/HAT-L_SRx4_ImageNet-pretrain.pth'
TEACHERS = [  # MTKD canonical order
    {'name': 'hat', 'network': {'type': 'auto', 'arch': 'HAT'}, 'pretrain': HAT_L},
    {'name': 'dat', 'network': {'type': 'auto', 'arch': 'DAT'}, 'pretrain': f'{ZOO}/DAT/DAT_x4.pth'},
    {'name': 'rrdb', 'network': {'type': 'auto', 'arch': 'ESRGAN'}, 'pretrain': f'{ZOO}/ESRGAN/RRDB_PSNR_x4.pth'},
]
STAGE1 = 'MTKD_DCTSwin_x4_auto_hat_dat_rrdb'


def _kd() -> dict:
    opt = train_options('KD_auto_teacher_x4', 'KDModel', 'EDSR', 4)
    opt['network_t'] = {'type': 'auto'}
    opt['path'] = {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None,
                   'pretrain_network_t': HAT_L}
    return opt


def generate() -> dict:
    s1 = stage1(4, STAGE1)
    s1['teachers'] = deepcopy(TEACHERS)
    agg = {'network': aggregator(4), 'pretrain': f'experiments/{STAGE1}/models/net_g_latest.pth',
           'param_key': 'params_ema', 'strict_load': True, 'teacher_order_check': 'error'}
    s2 = stage2('EDSRbl', 4, 'MTKD_EDSRbl_x4_auto_hat_dat_rrdb', agg=agg)
    s2['teachers'] = deepcopy(TEACHERS)
    assert STUDENTS['EDSRbl'](4) == s2['network_g']
    return {
        'options/train/KD/train_KD_auto_teacher_x4.yml': _kd(),
        'options/test/KD/test_KD_auto_teacher_x4.yml': test_options('test_KD_auto_teacher_x4', 'KD_auto_teacher_x4',
                                                                    'EDSR', 4),
        f'options/train/MTKD/train_{STAGE1}.yml': s1,
        'options/train/MTKD/train_MTKD_EDSRbl_x4_auto_hat_dat_rrdb.yml': s2,
    }
