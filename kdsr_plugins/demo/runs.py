"""The demo's rows: one entry per method, each a student trained for the same iterations and seed."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kdsr_plugins.demo import config


@dataclass
class DemoRun:
    """One trained-and-evaluated row of the demo table.

    Attributes:
        key: Short id used on the command line (``--methods kd,scratch``).
        label: Row label in the table.
        model_type: Registered model class.
        make_options: ``f(teacher_ckpts, previous_runs) -> (train_extra, top_extra)``.
        needs: Keys of runs that must finish first (e.g. MTKD stage 2 needs stage 1).
        student: Network of the evaluated model (``None``: the demo student).
    """

    key: str
    label: str
    model_type: str
    make_options: Callable[[dict, dict], tuple[dict, dict]]
    needs: tuple[str, ...] = ()
    student: dict | None = None
    test_model_type: str = 'SRModel'
    test_top_extra: Callable[[dict], dict] | None = None


def single_teacher(name: str = 'edsr') -> Callable[[dict], dict]:
    def top(ckpts: dict) -> dict:
        return {'network_t': config.TEACHERS[name][0],
                'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None,
                         'pretrain_network_t': ckpts[name], 'param_key_t': 'params', 'strict_load_t': True}}
    return top


KD_L1 = {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}


def _scratch(ckpts: dict, done: dict) -> tuple[dict, dict]:
    return {}, {}


def _logits_kd(ckpts: dict, done: dict) -> tuple[dict, dict]:
    return {'kd_opt': KD_L1}, single_teacher()(ckpts)


#: Teacher EDSR f48b16 -> student EDSR f12b2: head, two body units at equal relative depth, body end
#: (the photo benchmark's taps, bench/photo/benchmark.yml).
TAPS_T = ['conv_first', 7, 15, 'conv_after_body']
TAPS_S = ['conv_first', 0, 1, 'conv_after_body']
#: MiPKD's stage boundaries at equal relative depth (teacher 16 blocks, student 2).
MIPKD_T, MIPKD_S = [7, 15], [0, 1]


def feature_kd(loss: dict) -> Callable[[dict, dict], tuple[dict, dict]]:
    def make(ckpts: dict, done: dict) -> tuple[dict, dict]:
        return ({'kd_opt': KD_L1, 'feature_kd': {'positions_t': TAPS_T, 'positions_s': TAPS_S},
                 'feature_opt': loss}, single_teacher()(ckpts))
    return make


def _dukd(ckpts: dict, done: dict) -> tuple[dict, dict]:
    """The paper's EDSR x4 setting (dukd spec table): w_pix 5, w_kd 1, one zoom-in tile, zoom-out, p = 0.3."""
    return ({'pixel_opt': {'type': 'L1Loss', 'loss_weight': 5.0, 'reduction': 'mean'}, 'kd_opt': KD_L1,
             'dukd_opt': {'n_gt_sub': [1], 'zoom_out': True}, 'noisy': {'prob': 0.3}}, single_teacher()(ckpts))


def _mipkd(ckpts: dict, done: dict) -> tuple[dict, dict]:
    """Mixers at two stage boundaries at equal relative depth (teacher 16 blocks, student 2)."""
    return ({'kd_opt': KD_L1, 'mipkd_opt': {'positions_t': MIPKD_T, 'positions_s': MIPKD_S}},
            single_teacher()(ckpts))


#: MTKD: a small DCTSwin aggregator over both demo teachers (canonical order edsr, rcan).
AGGREGATOR = dict(type='MTKDDCTSwin', num_teachers=2, upscale=config.SCALE, img_size=64, window_size=8, embed_dim=16,
                  depths=[2], num_heads=[2], mlp_ratio=2, num_feat=16)


def teachers_list(ckpts: dict) -> list[dict]:
    return [{'name': name, 'network': config.TEACHERS[name][0], 'pretrain': ckpts[name], 'param_key': 'params'}
            for name in ('edsr', 'rcan')]


def _mtkd_stage1(ckpts: dict, done: dict) -> tuple[dict, dict]:
    return {}, {'teachers': teachers_list(ckpts)}


def _mtkd_stage2(ckpts: dict, done: dict) -> tuple[dict, dict]:
    """The paper's stage-2 loss: wavelet loss to the aggregated target (1.0) + L1 to GT (0.1)."""
    train = {'pixel_opt': {'type': 'L1Loss', 'loss_weight': 0.1, 'reduction': 'mean'},
             'kd_opt': {'type': 'KDWaveletLoss', 'loss_weight': 1.0, 'levels': 1}}
    aggregator = {'network': AGGREGATOR, 'pretrain': done['mtkd1']['ckpt'], 'param_key': 'params'}
    return train, {'teachers': teachers_list(ckpts), 'aggregator': aggregator}


RUNS: list[DemoRun] = [
    DemoRun('scratch', 'Student from scratch', 'SRModel', _scratch),
    DemoRun('kd', 'Logits KD', 'KDModel', _logits_kd),
    DemoRun('fitnet', 'FitNet (+ logits KD)', 'FeatureKDModel',
            feature_kd({'type': 'KDFitNetLoss', 'loss_weight': 10.0, 'distance': 'l1'})),
    DemoRun('at', 'AT (+ logits KD)', 'FeatureKDModel',
            feature_kd({'type': 'KDAttentionLoss', 'loss_weight': 10.0, 'mode': 'sr_l1'})),
    DemoRun('fakd', 'FAKD (+ logits KD)', 'FeatureKDModel',
            feature_kd({'type': 'KDAffinityLoss', 'loss_weight': 10.0})),
    DemoRun('rkd', 'RKD (+ logits KD)', 'FeatureKDModel', feature_kd({'type': 'KDRelationLoss', 'loss_weight': 1.0})),
    DemoRun('dukd', 'DUKD', 'DUKDModel', _dukd),
    DemoRun('mipkd', 'MiPKD', 'MiPKDModel', _mipkd),
    DemoRun('mtkd1', 'MTKD stage 1 (aggregator of 2 teachers)', 'MTKDAggregatorModel',
            _mtkd_stage1, student=AGGREGATOR, test_model_type='MTKDAggregatorModel',
            test_top_extra=lambda ckpts: {'teachers': teachers_list(ckpts)}),
    DemoRun('mtkd2', 'MTKD stage 2 (student)', 'MTKDStudentModel', _mtkd_stage2, needs=('mtkd1',)),
]


def runs_by_key() -> dict[str, DemoRun]:
    return {run.key: run for run in RUNS}
