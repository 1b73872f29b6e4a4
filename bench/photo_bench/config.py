"""Benchmark configuration and the per-run option files made from the shipped method YAMLs.

A run's options are the shipped method YAML (``options/train/...``: model type, loss blocks and
their weights, method options: the papers' defaults) with the benchmark's own parts substituted:
name, seed, student, teacher(s), data, the training recipe (optimizer, schedule, iterations, EMA,
the same for every method), feature taps at equal relative depth, validation and logging.
"""
from __future__ import annotations

import os.path as osp
from copy import deepcopy
from dataclasses import dataclass, field
from typing import Any

import yaml

from kdsr_plugins.core.amp_sr_model import apply_precision
from kdsr_plugins.data_prep.div2k import div2k_output_paths

#: Method keys in table order; ``mtkd`` is the stage-2 student (stage 1: ``mtkd1``, the aggregator);
#: ``mipkd_lite``: MiPKD's cheaper preset (MLP encoders, latent width = student width).
METHODS = ('scratch', 'kd', 'fitnet', 'at', 'fakd', 'rkd', 'dukd', 'mipkd', 'mipkd_lite', 'mtkd')
#: Methods whose loss only needs the teacher's (or aggregator's) output: the teacher-output cache serves them.
OUTPUT_ONLY = ('kd', 'mtkd')
#: Suffix of a table row trained at the sweep's chosen loss weight (``kd (swept)``).
SWEPT_ROW = ' (swept)'


def run_name(method: str, seed: int, swept: bool = False) -> str:
    """Experiment name of a benchmark run: ``<method>_s<seed>`` or ``<method>_swept_s<seed>``."""
    return f'{method}{"_swept" if swept else ""}_s{seed}'


def row_label(method: str, swept: bool = False) -> str:
    """Table row of a method: its key, or ``<method> (swept)``."""
    return method + (SWEPT_ROW if swept else '')


def parse_row_label(label: str) -> tuple[str, bool]:
    """``(method, swept)`` of a table row label (inverse of :func:`row_label`)."""
    swept = label.endswith(SWEPT_ROW)
    return (label[:-len(SWEPT_ROW)] if swept else label), swept


REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


@dataclass
class Teacher:
    """A frozen teacher: name, BasicSR network options, checkpoint (``params``), feature taps."""

    name: str
    network: dict
    pretrain: str
    taps: list = field(default_factory=list)
    mipkd_positions: list = field(default_factory=list)
    card: dict | None = None


@dataclass
class Benchmark:
    """A loaded benchmark config (see ``bench/photo/benchmark.yml`` for every key)."""

    name: str
    scale: int
    data: str
    iters: int
    seeds: list[int]
    val_freq: int
    recipe: dict
    student: dict
    student_taps: list
    student_mipkd_positions: list
    teachers: list[Teacher]
    methods: dict[str, dict]
    cache_teacher: bool
    teacher_check: str
    aggregator: dict
    aggregator_iters: int
    sweep_iters: int
    sweep_seed: int
    path: str = ''
    raw: dict = field(default_factory=dict)

    @property
    def aggregator_seed(self) -> int:
        """The seed of MTKD's stage-1 aggregator: the config's first seed, whatever ``--seeds`` selects, so
        stage-2 runs of any seed subset distil the same aggregator (a new seed must not retrain it)."""
        return int(self.raw.get('seeds', [0])[0])

    @property
    def aggregator_run(self) -> str:
        return f'mtkd1_s{self.aggregator_seed}'


def _resolve(path: str, base: str) -> str:
    """A path from the config: absolute as given, else relative to the repository root, else to ``base``."""
    if osp.isabs(path):
        return path
    for root in (REPO, base):
        if osp.exists(osp.join(root, path)):
            return osp.abspath(osp.join(root, path))
    return osp.abspath(path)


def load_teacher(entry: dict, base: str) -> Teacher:
    """A teacher from ``{card: <card.yml>}`` (``bench/photo/teacher_card.py``) or ``{name, network, pretrain}``."""
    if 'card' in entry:
        card_path = _resolve(entry['card'], base)
        if not osp.isfile(card_path):
            raise SystemExit(f'teacher card {card_path} not found (made by bench/photo/teacher_card.py)')
        card = read_yaml(card_path)
        if 'weights' not in card:
            raise SystemExit(f'teacher card {card_path} has no weights (written with --no-weights?)')
        pretrain = osp.join(osp.dirname(card_path), card['weights']['file'])
        name, network = entry.get('name', card['name']), card['network_g']
    else:
        card, name, network = None, entry['name'], entry['network']
        pretrain = _resolve(entry['pretrain'], base)
    if not osp.isfile(pretrain):
        raise SystemExit(f'teacher {name}: no checkpoint {pretrain}')
    return Teacher(name, dict(network), pretrain, list(entry.get('taps', [])), list(entry.get('mipkd_positions', [])),
                   card)


def _merge(base: dict, over: dict) -> dict:
    """``over`` on ``base``: mappings merged key by key, anything else (lists, scalars) replaced."""
    out = deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else deepcopy(v)
    return out


def read_config(path: str, _seen: tuple[str, ...] = ()) -> dict:
    """A benchmark config with its ``base:`` chain applied.

    ``base: <file>`` (relative to this config's folder) makes the config a variant of another one: its
    keys are merged onto the base's (mappings key by key, lists and scalars replaced), except
    ``methods``, which selects: the variant's methods are the ones it lists, each merged onto the
    base's entry of that name (so ``at: {overrides: {...}}`` keeps the base's ``options``).
    """
    path = osp.abspath(path)
    if path in _seen:
        raise SystemExit(f'{path}: base: chain loops ({" -> ".join(_seen + (path,))})')
    raw = read_yaml(path) or {}
    if 'base' not in raw:
        return raw
    base_path = osp.join(osp.dirname(path), raw.pop('base'))
    if not osp.isfile(base_path):
        raise SystemExit(f'{path}: base: no file {base_path}')
    base = read_config(base_path, _seen + (path,))
    methods = raw.pop('methods', None)
    merged = _merge(base, raw)
    if methods is not None:
        merged['methods'] = {m: _merge(base.get('methods', {}).get(m) or {}, spec or {}) for m, spec in methods.items()}
    return merged


def load_benchmark(path: str) -> Benchmark:
    """Read and check a benchmark config (clear errors before anything is trained)."""
    raw = read_config(path)
    base = osp.dirname(osp.abspath(path))
    unknown = sorted(set(raw.get('methods', {})) - set(METHODS))
    if unknown:
        raise SystemExit(f'{path}: unknown method(s) {unknown}; valid: {list(METHODS)}')
    methods = {}
    for key, spec in raw['methods'].items():
        spec = dict(spec)
        if 'options' not in spec:
            raise SystemExit(f'{path}: methods.{key} has no options (the shipped method YAML to train)')
        for k in ('options', 'stage1'):
            if k in spec:
                spec[k] = _resolve(spec[k], base)
                if not osp.isfile(spec[k]):
                    raise SystemExit(f'{path}: methods.{key}.{k}: no file {spec[k]}')
        methods[key] = spec
    sweeps = [len(s['sweep']['values']) for s in methods.values() if s.get('sweep')]
    if len(set(sweeps)) > 1:
        raise SystemExit(f'{path}: every sweep must try the same number of weights (same budget), got {sweeps}')
    student = raw['student']
    mtkd = raw.get('mtkd', {})
    return Benchmark(
        name=raw['name'], scale=int(raw['scale']), data=raw['data'], iters=int(raw['iters']),
        seeds=[int(s) for s in raw.get('seeds', [0, 1, 2])], val_freq=int(raw['val_freq']), recipe=dict(raw['recipe']),
        student=dict(student['network_g']), student_taps=list(student.get('taps', [])),
        student_mipkd_positions=list(student.get('mipkd_positions', [])),
        teachers=[load_teacher(t, base) for t in raw.get('teachers', [])], methods=methods,
        cache_teacher=bool(raw.get('cache_teacher', False)), teacher_check=str(raw.get('teacher_check', 'error')),
        aggregator=dict(mtkd.get('aggregator', {})), aggregator_iters=int(mtkd.get('aggregator_iters', raw['iters'])),
        sweep_iters=int(raw.get('sweep', {}).get('iters', raw['iters'])),
        sweep_seed=int(raw.get('sweep', {}).get('seed', 0)), path=osp.abspath(path), raw=raw)


def set_key(opt: dict, dotted: str, value: Any) -> None:
    """Set ``opt[a][b][c] = value`` for ``dotted`` = ``a.b.c`` (the key must exist: no silent typo)."""
    *parents, last = dotted.split('.')
    node = opt
    for k in parents:
        node = node[k]
    if last not in node:
        raise KeyError(f'option {dotted!r} not in the shipped YAML; sweep keys must name an existing loss weight')
    node[last] = value


def read_yaml(path: str) -> dict:
    with open(path, encoding='utf-8') as f:
        return yaml.safe_load(f)


def _datasets(bm: Benchmark, cache: str | None) -> dict:
    root, s = osp.abspath(bm.data), bm.scale
    r = bm.recipe
    lmdbs = div2k_output_paths(osp.join(root, 'train'), [s])  # what `data_prep photos` writes for train
    train = {'name': f'{bm.name}_train', 'type': 'PairedImageDataset',
             'dataroot_gt': lmdbs['hr_lmdb'], 'dataroot_lq': lmdbs['lr_lmdb'][s],
             'io_backend': {'type': 'lmdb'}, 'gt_size': int(r['gt_size']), 'use_hflip': True, 'use_rot': True,
             'num_worker_per_gpu': 0, 'batch_size_per_gpu': int(r['batch_size']),
             'dataset_enlarge_ratio': int(r.get('dataset_enlarge_ratio', 1)), 'prefetch_mode': None}
    if cache:
        train.update(type='KDCachedTargetDataset', dataroot_target=cache)
    val = {'name': f'{bm.name}_val', 'type': 'PairedImageDataset', 'dataroot_gt': osp.join(root, 'val', 'HR'),
           'dataroot_lq': osp.join(root, 'val', 'LR_bicubic', f'X{s}'), 'filename_tmpl': f'{{}}x{s}',
           'io_backend': {'type': 'disk'}}
    return {'train': train, 'val': val}


def _teachers_list(bm: Benchmark) -> list[dict]:
    return [{'name': t.name, 'network': deepcopy(t.network), 'pretrain': t.pretrain, 'param_key': 'params',
             'strict_load': True} for t in bm.teachers]


def aggregator_network(bm: Benchmark, shipped: dict) -> dict:
    """The shipped aggregator options (``output_convention``, ``mask_mode``...) with the config's size."""
    return {**deepcopy(shipped), **deepcopy(bm.aggregator), 'num_teachers': len(bm.teachers), 'upscale': bm.scale}


def run_options(bm: Benchmark, method: str, name: str, seed: int, iters: int, *, weight: float | None = None,
                cache: str | None = None, aggregator_ckpt: str | None = None) -> dict:
    """Option dict of one run (``method`` in :data:`METHODS` or ``mtkd1``, the stage-1 aggregator).

    Args:
        weight: Loss weight set at ``methods.<method>.sweep.key`` (the sweep), ``None``: the shipped one.
            ``methods.<method>.overrides`` (``{dotted key: value}``, keys of the shipped YAML) are set first.
        cache: Teacher-output cache LMDB (``KDCachedTargetDataset``), ``None``: teachers run online.
        aggregator_ckpt: Stage-1 checkpoint of the MTKD student run.
    """
    spec = bm.methods['mtkd' if method == 'mtkd1' else method]
    base = read_yaml(spec['stage1'] if method == 'mtkd1' else spec['options'])
    r = bm.recipe
    opt = {k: deepcopy(v) for k, v in base.items() if k not in ('datasets', 'val', 'logger', 'path', 'name')}
    opt.update(name=name, scale=bm.scale, manual_seed=seed, datasets=_datasets(bm, cache))
    opt['path'] = {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None}
    opt['network_g'] = aggregator_network(bm, base['network_g']) if method == 'mtkd1' else deepcopy(bm.student)
    train = opt['train']
    lr = float(r['aggregator_lr'] if method == 'mtkd1' and 'aggregator_lr' in r else r['lr'])
    train.update(ema_decay=float(r.get('ema_decay', 0)), total_iter=iters, warmup_iter=int(r.get('warmup_iter', -1)),
                 optim_g={'type': 'Adam', 'lr': lr, 'weight_decay': 0, 'betas': list(r.get('betas', [0.9, 0.99]))},
                 scheduler={'type': 'CosineAnnealingRestartLR', 'periods': [iters], 'restart_weights': [1],
                            'eta_min': float(r.get('eta_min', 1e-6))})
    apply_precision(opt, str(r.get('amp', 'off')), bool(r.get('channels_last', False)))
    if 'network_t' in base:
        t = bm.teachers[0]
        opt['network_t'] = deepcopy(t.network)
        opt['path'].update(pretrain_network_t=t.pretrain, param_key_t='params', strict_load_t=True)
    if 'teachers' in base:
        opt['teachers'] = _teachers_list(bm)
    if 'aggregator' in base:
        opt['aggregator'] = {**base['aggregator'], 'network': aggregator_network(bm, base['aggregator']['network']),
                             'pretrain': aggregator_ckpt,
                             'param_key': 'params_ema' if train['ema_decay'] > 0 else 'params'}
    if 'feature_kd' in train:
        train['feature_kd'].update(positions_t=list(bm.teachers[0].taps), positions_s=list(bm.student_taps))
    if 'mipkd_opt' in train:
        train['mipkd_opt'].update(positions_t=list(bm.teachers[0].mipkd_positions),
                                  positions_s=list(bm.student_mipkd_positions))
    if opt['model_type'] not in ('SRModel', 'AmpSRModel'):
        train['teacher_check'] = bm.teacher_check
    for key, value in spec.get('overrides', {}).items():
        set_key(opt, key, value)
    if weight is not None:
        set_key(opt, spec['sweep']['key'], weight)
    opt['val'] = {'val_freq': bm.val_freq, 'save_img': False, 'metrics': {
        m: {'type': f'calculate_{m}', 'crop_border': bm.scale, 'test_y_channel': True} for m in ('psnr', 'ssim')}}
    opt['logger'] = {'print_freq': max(1, min(100, bm.val_freq)), 'save_checkpoint_freq': bm.val_freq,
                     'use_tb_logger': False, 'wandb': {'project': None, 'resume_id': None}}
    return opt
