"""MiPKD (``MiPKDModel``) for the EDSR, RCAN and SwinIR pairs at x2, x3, x4 (docs/mipkd.md).

Recipe: the shared DIV2K recipe of ``option_templates`` (logits KD L1 1.0 / 1.0) plus
λ_feat 1, AE 1, λ_block 0.1 and every ``train.mipkd_opt`` default written out. Positions are the
stage boundaries of the networks (docs/mipkd.md, "Our choices vs the paper"). EDSR comes in three
students: c64b32 (width only, the group's protocol), c64b16 (compounded) and c256b16 (depth
only, Fig. 1 study). EDSR x4 students start from the MiPKD x2 student of the same variant
(``strict_load_g: false``), as the group's EDSR x4 configs do (docs/mipkd.md, "Our choices vs the
paper"). ``find_unused_parameters: true`` is required in distributed runs. ``EDSR_lite`` is the
cheaper preset: the c64b32 pair with ``latent_dim`` = C_S = 64 and ``enc_type: mlp``.
"""
from option_templates import PAIRS, SCALES, edsr, insert_after, pair_tag, test_options, train_options

#: variant -> (family, student builder or None = the pair's default, tag, positions_t, positions_s)
VARIANTS = {
    'EDSR': ('EDSR', None, None, [7, 15, 23, 31], [7, 15, 23, 31]),
    'EDSR_c64b16': ('EDSR', lambda s: edsr(64, 16, s, 0.1), 'x{s}c256b32_c64b16', [7, 15, 23, 31], [3, 7, 11, 15]),
    'EDSR_c256b16': ('EDSR', lambda s: edsr(256, 16, s, 0.1), 'x{s}c256b32_c256b16', [7, 15, 23, 31],
                     [3, 7, 11, 15]),
    'RCAN': ('RCAN', None, None, [2, 5, 9], [2, 5, 9]),
    'SwinIR': ('SwinIR', None, None, [2, 5], [1, 3]),
    # cheaper preset (docs/mipkd.md, "Cheaper preset"): the c64b32 pair with 1x1 mixers at the student width
    'EDSR_lite': ('EDSR', None, 'x{s}c256b32_c64b32_lite', [7, 15, 23, 31], [7, 15, 23, 31]),
}
#: variant -> mipkd_opt values that differ from the defaults
PRESETS = {'EDSR_lite': {'latent_dim': 64, 'enc_type': 'mlp'}}


def l1(weight: float) -> dict:
    return {'type': 'L1Loss', 'loss_weight': weight, 'reduction': 'mean'}


def method_train(positions_t: list, positions_s: list) -> dict:
    return {
        'feat_opt': l1(1.0),
        'ae_opt': l1(1.0),
        'block_opt': l1(0.1),
        'mipkd_opt': {
            'positions_t': list(positions_t), 'positions_s': list(positions_s), 'latent_dim': None,
            'enc_type': 'cnn', 'enc_layers': 2, 'encoder': 'separate', 'mask_type': 'random3d', 'mask_prob': 0.5,
            'use_ae_loss': True, 'ae_student': False, 'bpm_mode': 'single', 'path_prob': 0.5,
            'student_adapter': 'decoder', 'block_target': 'teacher',
        },
        'optim_aux': {'lr': None},
        'teacher_train_mode': False,
    }


def tag(variant: str, scale: int) -> str:
    family, _, custom_tag, _, _ = VARIANTS[variant]
    return custom_tag.format(s=scale) if custom_tag else pair_tag(family, scale)


def run_name(variant: str, scale: int) -> str:
    return f'MiPKD_{VARIANTS[variant][0]}_{tag(variant, scale)}'


def train_config(variant: str, scale: int) -> dict:
    family, student, _, pos_t, pos_s = VARIANTS[variant]
    method = method_train(pos_t, pos_s)
    method['mipkd_opt'].update(PRESETS.get(variant, {}))
    opt = train_options(run_name(variant, scale), 'MiPKDModel', family, scale, method_train=method)
    opt = insert_after(opt, 'num_gpu', 'find_unused_parameters', True)
    if student is not None:
        opt['network_g'] = student(scale)
    if family == 'EDSR' and scale == 4:
        opt['path']['pretrain_network_g'] = f'experiments/{run_name(variant, 2)}/models/net_g_latest.pth'
        opt['path']['strict_load_g'] = False
    return opt


def test_config(variant: str, scale: int) -> dict:
    family, student, _, _, _ = VARIANTS[variant]
    name = run_name(variant, scale)
    opt = test_options(f'test_{name}', name, family, scale, model_type='MiPKDModel')
    if student is not None:
        opt['network_g'] = student(scale)
    return opt


def generate() -> dict:
    out = {}
    for variant in VARIANTS:
        assert VARIANTS[variant][0] in PAIRS
        for scale in SCALES:
            name = run_name(variant, scale)
            out[f'options/train/MiPKD/train_{name}.yml'] = train_config(variant, scale)
            out[f'options/test/MiPKD/test_{name}.yml'] = test_config(variant, scale)
    return out
