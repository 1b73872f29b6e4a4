"""Classic feature-KD baselines (FitNet, AT, FAKD, RKD) for the EDSR, RCAN and SwinIR paper pairs.

All use ``FeatureKDModel`` with output KD (``pixel_opt`` and ``kd_opt`` L1, weights 1.0 / 1.0) plus
one feature term in the single-term form, with the default losses of docs/feature_kd.md:

* FitNet: ``KDFitNetLoss`` L1, weight 10, ``adapter: auto`` (1×1 regressors only where widths
  differ: EDSR 64->256 and SwinIR 60->180 get one per tap, RCAN 64/64 none);
* AT: ``KDAttentionLoss`` mode ``sr_l1``, p = 2, weight 10;
* FAKD: ``KDAffinityLoss`` weight 10, ``max_hw`` 65536, blocked evaluation (tiles of 512);
* RKD: ``KDRelationLoss`` weight 1, λ_D 25, λ_A 50, ``embed: avg`` (batch 16 >= 3).

Taps (the same for every loss): the head (``conv_first``), two body units, and the body output
(``conv_after_body``, pre-skip). Teacher body units: EDSR (32 blocks) 10 and 21,
RCAN (10 groups) 2 and 6. The student unit matching teacher unit i is the one ending at the
nearest relative depth, ``round((i + 1) · n_s / n_t) − 1``: identical for EDSR (32 -> 32 blocks)
and RCAN (10 -> 10 groups); for SwinIR the teacher RSTBs 1 and 3 (ends at 2/6 and 4/6 of the six
RSTBs) map to student RSTBs 0 and 2 (ends at 1/4 and 3/4 of four), i.e. teacher
``[conv_first, 1, 3, conv_after_body]`` vs student ``[conv_first, 0, 2, conv_after_body]``. SwinIR
RSTB taps are pre-norm token outputs, returned as maps.

Test YAMLs use ``model_type: FeatureKDModel`` (test mode builds only the student).
"""
from option_templates import PAIRS, SCALES, pair_tag, test_options, train_options

LOSSES = {
    'FitNet': {'type': 'KDFitNetLoss', 'loss_weight': 10.0, 'distance': 'l1', 'mode': 'regress'},
    'AT': {'type': 'KDAttentionLoss', 'loss_weight': 10.0, 'mode': 'sr_l1', 'p': 2},
    'FAKD': {'type': 'KDAffinityLoss', 'loss_weight': 10.0, 'max_hw': 65536, 'blocked': True, 'tile': 512},
    'RKD': {'type': 'KDRelationLoss', 'loss_weight': 1.0, 'lambda_d': 25.0, 'lambda_a': 50.0, 'embed': 'avg'},
}
#: Teacher body units tapped between the head and the body output (docs/feature_kd.md, "Shipped YAMLs").
TEACHER_UNITS = {'EDSR': (10, 21), 'RCAN': (2, 6), 'SwinIR': (1, 3)}


def num_units(net_opt: dict) -> int:
    """Body units of an EDSR (blocks), RCAN (groups) or SwinIR (RSTBs) option dict."""
    if net_opt['type'] == 'EDSR':
        return net_opt['num_block']
    if net_opt['type'] == 'RCAN':
        return net_opt['num_group']
    return len(net_opt['depths'])


def matching_unit(index: int, n_teacher: int, n_student: int) -> int:
    """Student unit ending at the relative depth nearest to the end of teacher unit ``index``."""
    return max(0, round((index + 1) * n_student / n_teacher) - 1)


def positions(family: str, scale: int) -> tuple[list, list]:
    n_t, n_s = num_units(PAIRS[family]['teacher'](scale)), num_units(PAIRS[family]['student'](scale))
    units_t = list(TEACHER_UNITS[family])
    units_s = [matching_unit(i, n_t, n_s) for i in units_t]
    return ['conv_first', *units_t, 'conv_after_body'], ['conv_first', *units_s, 'conv_after_body']


def feature_block(family: str, scale: int, method: str) -> dict:
    taps_t, taps_s = positions(family, scale)
    feature_kd = {'positions_t': taps_t, 'positions_s': taps_s}
    if method == 'FitNet':
        feature_kd['adapter'] = 'auto'
    feature_kd['log_pairs'] = True
    return {'feature_kd': feature_kd, 'feature_opt': dict(LOSSES[method])}


def generate() -> dict:
    out = {}
    for method in LOSSES:
        for family in PAIRS:
            for scale in SCALES:
                name = f'{method}_{family}_{pair_tag(family, scale)}'
                out[f'options/train/FeatureKD/train_{name}.yml'] = train_options(
                    name, 'FeatureKDModel', family, scale, method_train=feature_block(family, scale, method))
                out[f'options/test/FeatureKD/test_{name}.yml'] = test_options(
                    f'test_{name}', name, family, scale, model_type='FeatureKDModel')
    return out
