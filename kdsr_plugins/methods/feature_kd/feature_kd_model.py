"""``FeatureKDModel``: output KD plus any number of feature-KD terms (docs/feature_kd.md).

One model class serves every parameter-free feature loss (``KDFitNetLoss``, ``KDAttentionLoss``,
``KDAffinityLoss``, ``KDRelationLoss`` or any registered loss with the same ``forward_terms``
contract): a term is a loss plus matched teacher/student taps (docs/core.md, "Feature taps"). FitNet
regressors are the model's auxiliary modules (one ``KDAdapterBank`` per term that needs them).

Option forms (all under ``train``):

* single term (docs/feature_kd.md, "Options"): ``feature_kd: {positions_t, positions_s | positions, adapter,
  log_pairs}`` + ``feature_opt: {type, loss_weight, ...}``;
* list form: ``feature_kd: {log_pairs, terms: [{name, positions_t, positions_s | positions,
  adapter, loss: {type, loss_weight, ...}}, ...]}``;
* yun224/DUKD form: ``feature_distillation: {positions, type}`` with ``feature_opt.loss_weight``.
"""
from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from copy import deepcopy
from dataclasses import dataclass, field
from typing import Any

import torch
from basicsr.losses import build_loss
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY
from torch import Tensor, nn
from torch.nn.parallel import DataParallel

from kdsr_plugins.core.arch_info import pad_multiple
from kdsr_plugins.core.auto_teacher import SpandrelTeacher
from kdsr_plugins.core.kd_adapter_arch import KDAdapterBank
from kdsr_plugins.core.kd_model import KDModel
from kdsr_plugins.core.option_checks import loss_block
from kdsr_plugins.core.options import check_option_keys
from kdsr_plugins.core.schema import Field, Schema
from kdsr_plugins.core.taps import FeatureTaps, TapError, TapSpec, resolve_tap
from kdsr_plugins.methods.feature_kd.legacy_options import legacy_feature_loss_opt

__all__ = ['FeatureKDModel', 'FeatureTermSpec', 'FeatureKDAdapters', 'parse_feature_kd_options']

LIST_FORM_KEYS = ('terms', 'log_pairs')
ADAPTER_POLICIES = KDAdapterBank.POLICIES
#: Default term names (log suffix and adapter-bank key) of the known losses.
DEFAULT_TERM_NAMES = {'KDFitNetLoss': 'fitnet', 'KDAttentionLoss': 'at', 'KDAffinityLoss': 'fakd',
                      'KDRelationLoss': 'rkd'}
_NAME_RE = re.compile(r'^[a-z][a-z0-9_]*$')
_PROBE_MIN_SIZE = 8


@dataclass
class FeatureTermSpec:
    """One parsed feature-KD term: a loss option dict and its matched taps."""

    name: str
    positions_t: list[TapSpec]
    positions_s: list[TapSpec]
    adapter: str
    loss_opt: dict
    where: str
    position_keys: tuple[str, str] = ('positions_t', 'positions_s')


@dataclass
class _FeatureTerm:
    """A built term: loss module, indices into the shared tap lists, log keys."""

    spec: FeatureTermSpec
    loss: nn.Module
    t_index: list[int]
    s_index: list[int]
    log_key: str
    pair_keys: list[str] = field(default_factory=list)
    channel_pairs: list[tuple[int, int]] = field(default_factory=list)
    adapted: bool = False


# ---------------------------------------------------------------------- option parsing
def _default_name(loss_opt: Mapping[str, Any]) -> str:
    loss_type = str(loss_opt['type'])
    if loss_type in DEFAULT_TERM_NAMES:
        return DEFAULT_TERM_NAMES[loss_type]
    name = re.sub(r'[^a-z0-9_]', '', loss_type.lower())
    name = name[2:] if name.startswith('kd') else name
    name = name[:-4] if name.endswith('loss') and len(name) > 4 else name
    return name if _NAME_RE.match(name) else 'feat'


def _check_tap_list(value: Any, where: str) -> list[TapSpec]:
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f'{where} must be a non-empty list of taps (module paths or body-unit indices), '
                         f'got {value!r}.')
    for j, tap in enumerate(value):
        if isinstance(tap, bool) or not isinstance(tap, (str, int)):
            raise ValueError(f'{where}[{j}] = {tap!r}: a tap is a module path string or a body-unit index.')
    return list(value)


def _tap_field(name: str, doc: str) -> Field:
    return Field(name, 'any', None, doc, check=_check_tap_list, type_doc='list of module paths | body-unit indices')


_POSITION_FIELDS = (
    _tap_field('positions', 'taps of teacher and student (same paths), instead of positions_t + positions_s'),
    _tap_field('positions_t', 'teacher taps, matched by index with positions_s'),
    _tap_field('positions_s', 'student taps'),
)
_ADAPTER = Field('adapter', 'str', 'auto', 'FitNet regressors: auto (1x1 conv where widths differ), conv1x1, none',
                 choices=ADAPTER_POLICIES,
                 message='{where}: unknown value {value}; valid values: ' + ', '.join(ADAPTER_POLICIES) + '.')
TERM_SCHEMA = Schema('train.feature_kd.terms[]', (
    Field('name', 'any', None, 'term name [a-z][a-z0-9_]* (log key l_feat_<name>; default from the loss type)'),
    *_POSITION_FIELDS,
    _ADAPTER,
    Field('loss', 'mapping', None, 'loss block of the term (type: KDFitNetLoss | KDAttentionLoss | KDAffinityLoss | '
          'KDRelationLoss, loss_weight, ...)', dynamic=loss_block, role='loss'),
), doc='One feature-KD term of the list form.')
FEATURE_KD_SCHEMA = Schema('train.feature_kd', (
    *_POSITION_FIELDS,
    _ADAPTER,
    Field('log_pairs', 'bool', True, 'log each tap pair as l_feat_<i>',
          message='train.feature_kd.log_pairs must be true or false, got {value}.'),
    Field('terms', 'list', None, 'list form: several terms, each entry below (then only log_pairs besides)',
          item_schema=TERM_SCHEMA),
), doc='Feature-KD method block: single term (taps + train.feature_opt) or list form (terms).')
LEGACY_SCHEMA = Schema('train.feature_distillation', (
    Field('positions', 'any', None, 'taps (list, or {t: [...], g: [...]})'),
    Field('type', 'str', None, 'SA | AT | Fitnet (yun224/DUKD names)'),
), doc='yun224/DUKD form: {positions, type} with the weight in train.feature_opt.loss_weight.')
FEATURE_KD_KEYS = tuple(FEATURE_KD_SCHEMA.keys)
TERM_KEYS = tuple(TERM_SCHEMA.keys)
LEGACY_KEYS = tuple(LEGACY_SCHEMA.keys)


def _feature_opt_block(value: Any, where: str, warnings: list[str] | None, in_place: bool) -> Any:
    """``train.feature_opt``: a loss block, or only ``loss_weight`` in the yun224/DUKD form."""
    if isinstance(value, Mapping) and 'type' not in value:
        Field('loss_weight', 'number', None, min=0.0).validate(value.get('loss_weight'), f'{where}.loss_weight')
        return value
    return loss_block(value, where, warnings, in_place)


def _parse_positions(entry: Mapping[str, Any], where: str) -> tuple[list[TapSpec], list[TapSpec], tuple[str, str]]:
    has_plain = 'positions' in entry
    has_pair = 'positions_t' in entry or 'positions_s' in entry
    if has_plain and has_pair:
        raise ValueError(f'{where}: give either positions (same taps for teacher and student) or '
                         'positions_t + positions_s, not both.')
    if has_plain:
        taps = _check_tap_list(entry['positions'], f'{where}.positions')
        return taps, list(taps), ('positions', 'positions')
    if not ('positions_t' in entry and 'positions_s' in entry):
        raise ValueError(f'{where} needs the taps: positions_t and positions_s (matched by index), or positions.')
    taps_t = _check_tap_list(entry['positions_t'], f'{where}.positions_t')
    taps_s = _check_tap_list(entry['positions_s'], f'{where}.positions_s')
    if len(taps_t) != len(taps_s):
        raise ValueError(f'{where}: positions_t has {len(taps_t)} taps but positions_s has {len(taps_s)}; '
                         'pairs are matched by index, so the lengths must be equal.')
    return taps_t, taps_s, ('positions_t', 'positions_s')


def _parse_adapter(entry: Mapping[str, Any], where: str) -> str:
    return _ADAPTER.validate(entry.get('adapter', 'auto'), f'{where}.adapter')


def _parse_loss_opt(value: Any, where: str) -> dict:
    if not isinstance(value, Mapping) or 'type' not in value:
        raise ValueError(f'{where} must be a loss option mapping with a type (e.g. {{type: KDAffinityLoss, '
                         f'loss_weight: 10.0}}), got {value!r}.')
    return deepcopy(dict(value))


def _parse_legacy(train_opt: Mapping[str, Any]) -> FeatureTermSpec:
    where = 'train.feature_distillation'
    block = train_opt['feature_distillation']
    LEGACY_SCHEMA.check(block, where, defaults=False)
    for key in LEGACY_KEYS:
        if key not in block:
            raise ValueError(f'{where} needs a {key!r} key (yun224/DUKD form: {{positions, type}}).')
    positions = block['positions']
    if isinstance(positions, Mapping):
        check_option_keys(positions, ('t', 'g'), f'{where}.positions')
        if 't' not in positions or 'g' not in positions:
            raise ValueError(f'{where}.positions as a mapping needs t (teacher) and g (student) lists.')
        entry, keys = {'positions_t': positions['t'], 'positions_s': positions['g']}, ('positions.t', 'positions.g')
    else:
        entry, keys = {'positions': positions}, ('positions', 'positions')
    taps_t, taps_s, _ = _parse_positions(entry, where)
    feature_opt = train_opt.get('feature_opt')
    if not isinstance(feature_opt, Mapping) or 'loss_weight' not in feature_opt:
        raise ValueError(f'{where} takes its weight from train.feature_opt.loss_weight, which is missing.')
    loss_opt = legacy_feature_loss_opt(block['type'], feature_opt['loss_weight'])
    logger = get_root_logger()
    ignored = sorted(set(feature_opt) - {'loss_weight'})
    if ignored:
        logger.info(f'{where}: train.feature_opt keys {ignored} are ignored in the yun224/DUKD form '
                    f'(the loss is {loss_opt["type"]}).')
    if 'conv_after_body' in taps_t + taps_s:
        logger.warning(f'{where}: our conv_after_body tap is the pre-skip body output; yun224/DUKD effectively '
                       'tapped the post-skip value (upsample:in for EDSR/RCAN), see docs/core.md "Feature taps".')
    return FeatureTermSpec(_default_name(loss_opt), taps_t, taps_s, 'auto', loss_opt, where, keys)


def parse_feature_kd_options(train_opt: Mapping[str, Any]) -> tuple[list[FeatureTermSpec], bool]:
    """Validate the feature-KD option blocks of ``train`` and normalise them to a list of terms.

    Args:
        train_opt: The ``train`` option block.

    Returns:
        ``(terms, log_pairs)``; ``log_pairs`` (default true) asks for ``l_feat_<i>`` logs.

    Raises:
        ValueError: Unknown keys (the valid ones are listed), missing or conflicting blocks,
            malformed taps, duplicate term names.
    """
    has_new, has_legacy = train_opt.get('feature_kd') is not None, train_opt.get('feature_distillation') is not None
    if has_new and has_legacy:
        raise ValueError('Give either train.feature_kd or the yun224/DUKD train.feature_distillation, not both.')
    if has_legacy:
        return [_parse_legacy(train_opt)], True
    if not has_new:
        if train_opt.get('feature_opt') is not None:
            raise ValueError('train.feature_opt needs its taps in train.feature_kd '
                             '(positions_t / positions_s, adapter).')
        raise ValueError('FeatureKDModel needs feature-KD terms: train.feature_kd (+ train.feature_opt, or '
                         'feature_kd.terms) or train.feature_distillation. Use KDModel for output KD only.')
    block = train_opt['feature_kd']
    if isinstance(block, Mapping):
        check_option_keys(block, FEATURE_KD_KEYS, 'train.feature_kd')  # unknown keys first, then the values
    log_pairs = FEATURE_KD_SCHEMA.check(block)['log_pairs']
    if 'terms' not in block:
        if train_opt.get('feature_opt') is None:
            raise ValueError('train.feature_kd needs its loss: train.feature_opt (e.g. {type: KDAffinityLoss, '
                             'loss_weight: 10.0}), or a train.feature_kd.terms list.')
        loss_opt = _parse_loss_opt(train_opt['feature_opt'], 'train.feature_opt')
        taps_t, taps_s, keys = _parse_positions(block, 'train.feature_kd')
        spec = FeatureTermSpec(_default_name(loss_opt), taps_t, taps_s, _parse_adapter(block, 'train.feature_kd'),
                               loss_opt, 'train.feature_kd', keys)
        return [spec], log_pairs
    extra = sorted(set(block) - set(LIST_FORM_KEYS))
    if extra:
        raise ValueError(f'train.feature_kd with terms takes only {list(LIST_FORM_KEYS)}; move {extra} into each '
                         f'terms[] entry (valid entry keys: {list(TERM_KEYS)}).')
    if train_opt.get('feature_opt') is not None:
        raise ValueError('train.feature_opt cannot be combined with train.feature_kd.terms; give each loss as '
                         'terms[i].loss.')
    entries = block['terms']
    if not isinstance(entries, list) or not entries:
        raise ValueError('train.feature_kd.terms must be a non-empty list of '
                         '{name, positions_t, positions_s, adapter, loss}.')
    specs: list[FeatureTermSpec] = []
    for i, entry in enumerate(entries):
        where = f'train.feature_kd.terms[{i}]'
        TERM_SCHEMA.check(entry, where, defaults=False)
        if 'loss' not in entry:
            raise ValueError(f'{where} needs a loss (e.g. {{type: KDFitNetLoss, loss_weight: 10.0}}).')
        loss_opt = _parse_loss_opt(entry['loss'], f'{where}.loss')
        name = entry.get('name', _default_name(loss_opt))
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ValueError(f'{where}.name {name!r} must match [a-z][a-z0-9_]* (it suffixes the log key).')
        taps_t, taps_s, keys = _parse_positions(entry, where)
        specs.append(FeatureTermSpec(name, taps_t, taps_s, _parse_adapter(entry, where), loss_opt, where, keys))
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f'train.feature_kd.terms: duplicate term name(s) {duplicates}; give each term a distinct '
                         'name (it suffixes the log key l_feat_<name>).')
    return specs, log_pairs


# ---------------------------------------------------------------------- auxiliary modules
class FeatureKDAdapters(nn.Module):
    """The FitNet adapter banks of all terms that need them (the model's ``net_aux``).

    Args:
        banks: Term name -> ``KDAdapterBank``; state-dict keys are
            ``banks.<term>.adapters.<pair>.conv.{weight,bias}``.
    """

    def __init__(self, banks: Mapping[str, KDAdapterBank]) -> None:
        super().__init__()
        self.banks = nn.ModuleDict(dict(banks))

    def forward(self, feats: Mapping[str, Sequence[Tensor]]) -> dict[str, list[Tensor]]:
        """Adapt the student features of every term in one call (one call per backward, for DDP)."""
        return {name: self.banks[name](f) for name, f in feats.items()}


# ---------------------------------------------------------------------- model
@MODEL_REGISTRY.register()
class FeatureKDModel(KDModel):
    """Output KD plus feature-KD terms (FitNet, AT, FAKD, RKD or any loss with ``forward_terms``).

    Option keys (``train``; see the module docstring for the three forms): ``feature_kd.positions_t``
    / ``positions_s`` (matched by index) or ``positions`` (both); ``feature_kd.adapter``
    (``auto`` default | ``conv1x1`` | ``none``; only for losses with ``uses_adapter``);
    ``feature_kd.log_pairs`` (default true); ``feature_opt`` (the loss, single form) or
    ``feature_kd.terms[i].{name, positions*, adapter, loss}`` (``name`` defaults to fitnet / at /
    fakd / rkd); or ``feature_distillation.{positions, type}`` + ``feature_opt.loss_weight``.

    Each term compares the first teacher's features with the student's at matched taps (docs/core.md
    "Feature taps"); its weighted value is logged as ``l_feat`` (one term) or ``l_feat_<name>``
    (several), and each tap pair as ``l_feat_<i>`` / ``l_feat_<name>_<i>`` (``log_pairs``; these
    are components of the former, not extra objective terms). FitNet regressors are auxiliary
    modules. At construction one tiny no-grad forward of teacher and student (eval mode) measures
    every tap, so unknown taps, spatial mismatches and channel mismatches without adapter fail
    before training. In test mode only the student is built.
    """

    option_fields = {'train': (
        Field('feature_kd', 'mapping', None, 'feature-KD method block', schema=FEATURE_KD_SCHEMA, role='method'),
        Field('feature_opt', 'mapping', None, 'loss block of the single-term form (l_feat)',
              dynamic=_feature_opt_block, role='loss'),
        Field('feature_distillation', 'mapping', None, 'yun224/DUKD form of the method block',
              schema=LEGACY_SCHEMA, role='method'),
    )}

    def __init__(self, opt: dict) -> None:
        self.feature_terms: list[_FeatureTerm] = []
        self.teacher_taps: FeatureTaps | None = None
        self.student_taps: FeatureTaps | None = None
        self.log_pairs = True
        self._adapter_banks: dict[str, KDAdapterBank] = {}
        self._pair_logs: OrderedDict[str, Tensor] = OrderedDict()
        super().__init__(opt)

    # ------------------------------------------------------------------ construction
    def init_method(self) -> None:
        logger = get_root_logger()
        if isinstance(self.net_g, DataParallel):
            # DataParallel replicas would all write into the one tap store of the bare network
            raise NotImplementedError('FeatureKDModel does not support DataParallel (num_gpu > 1 without a '
                                      'distributed launcher); launch with torchrun / --launcher pytorch instead.')
        specs, self.log_pairs = parse_feature_kd_options(self.opt['train'])
        teacher = self.net_t
        student = self.get_bare_model(self.net_g)
        if isinstance(teacher, SpandrelTeacher):
            self._check_auto_teacher_patch(teacher)
        # an auto (spandrel) teacher's taps name module paths inside the spandrel network (docs/auto_teachers.md)
        self.teacher_taps, t_indices = self._build_taps(getattr(teacher, 'tap_root', teacher), specs, 't')
        self.student_taps, s_indices = self._build_taps(student, specs, 's')
        probe_t, probe_s = self._probe_features(teacher, student)
        several = len(specs) > 1
        for spec, t_index, s_index in zip(specs, t_indices, s_indices):
            loss = build_loss(spec.loss_opt).to(self.device)
            if not callable(getattr(loss, 'forward_terms', None)):
                raise TypeError(f'{spec.where}: loss {spec.loss_opt["type"]} is not a feature-KD loss (it needs '
                                'forward_terms(feats_s, feats_t, weighted) like KDFitNetLoss, KDAttentionLoss, '
                                'KDAffinityLoss, KDRelationLoss).')
            log_key = f'l_feat_{spec.name}' if several else 'l_feat'
            term = _FeatureTerm(spec, loss, t_index, s_index, log_key,
                                [f'{log_key}_{i}' for i in range(len(t_index))] if self.log_pairs else [])
            self._check_term_shapes(term, probe_t, probe_s)
            self.feature_terms.append(term)
            adapters = term.adapted and self._adapter_banks[spec.name].num_adapters
            logger.info(f'Feature-KD term {spec.name!r} -> {log_key}: {loss!r}; taps teacher {spec.positions_t} / '
                        f'student {spec.positions_s}; channels (C_S, C_T) {term.channel_pairs}; '
                        f'{adapters or "no"} adapter(s).')
        keys = ['l_pix', 'l_kd'] + [k for t in self.feature_terms for k in [t.log_key, *t.pair_keys]]
        clashes = sorted({k for k in keys if keys.count(k) > 1})
        if clashes:
            raise ValueError(f'train.feature_kd.terms: term names give clashing log keys {clashes}; rename the terms.')

    def _build_taps(self, net: nn.Module, specs: list[FeatureTermSpec], side: str
                    ) -> tuple[FeatureTaps, list[list[int]]]:
        """One ``FeatureTaps`` per network for all terms (shared module paths are hooked once)."""
        label = 'teacher' if side == 't' else 'student'
        unique: dict[tuple[str, bool], int] = {}
        unique_specs: list[TapSpec] = []
        indices = []
        for spec in specs:
            key_name = spec.position_keys[0 if side == 't' else 1]
            index = []
            for j, tap in enumerate(spec.positions_t if side == 't' else spec.positions_s):
                try:
                    resolved = resolve_tap(net, tap)
                except TapError as err:
                    raise TapError(f'{spec.where}.{key_name}[{j}] = {tap!r} is not a tap of the {label} '
                                   f'({type(net).__name__}): {err}') from None
                if resolved not in unique:
                    unique[resolved] = len(unique_specs)
                    unique_specs.append(tap)
                index.append(unique[resolved])
            indices.append(index)
        return FeatureTaps(net, unique_specs), indices

    def _probe_size(self) -> int:
        multiple = math.lcm(pad_multiple(self.opt['network_g']), pad_multiple(self.teacher_specs[0].network_opt))
        minimum = _PROBE_MIN_SIZE
        teacher = self.net_t
        if isinstance(teacher, SpandrelTeacher):  # the probe must not be padded by the teacher
            multiple = math.lcm(multiple, teacher.size_requirements.multiple_of)
            minimum = max(minimum, teacher.size_requirements.minimum)
        return multiple * math.ceil(minimum / multiple)

    def _check_auto_teacher_patch(self, teacher: SpandrelTeacher) -> None:
        """Refuse an LR training patch the auto teacher would pad (its features would not match the student's)."""
        gt_size = ((self.opt.get('datasets') or {}).get('train') or {}).get('gt_size')
        if not gt_size:
            return
        patch = int(gt_size) // int(self.opt['scale'])
        if teacher.padding(patch, patch) != (0, 0):
            req = teacher.size_requirements
            raise ValueError(f'Feature KD from the auto teacher {teacher.arch} ({teacher.path!r}): the LR training '
                             f'patch {patch} (gt_size {gt_size}) would be padded by the teacher (minimum '
                             f'{req.minimum}, multiple of {req.multiple_of}), so its features would not match the '
                             'student\'s; use a larger gt_size.')

    @torch.no_grad()
    def _probe_features(self, teacher: nn.Module, student: nn.Module) -> tuple[list[Tensor], list[Tensor]]:
        """Tap shapes from one tiny eval-mode forward of each network (modes restored afterwards)."""
        net_opt = self.opt['network_g']
        in_ch = int(net_opt.get('num_in_ch', net_opt.get('in_chans', 3)))
        size = self._probe_size()
        # a private generator keeps the global RNG stream (seeded by BasicSR) untouched
        x = torch.rand(1, in_ch, size, size, generator=torch.Generator().manual_seed(0)).to(self.device)
        modes = [(net, net.training) for net in (teacher, student)]
        try:
            teacher.eval()
            student.eval()
            with self.teacher_taps.capture() as feats_t:
                teacher(x)
            with self.student_taps.capture() as feats_s:
                student(x)
        finally:
            for net, mode in modes:
                net.train(mode)
        return feats_t, feats_s

    def _check_term_shapes(self, term: _FeatureTerm, probe_t: list[Tensor], probe_s: list[Tensor]) -> None:
        spec, loss = term.spec, term.loss
        uses_adapter = bool(getattr(loss, 'uses_adapter', False))
        channel_agnostic = bool(getattr(loss, 'channel_agnostic', True))
        if spec.adapter == 'conv1x1' and not uses_adapter:
            raise ValueError(f'{spec.where}.adapter: conv1x1 only applies to losses that regress adapted student '
                             f'features (KDFitNetLoss mode regress), not {loss!r}; use auto or none.')
        mismatched = []
        for i, (ti, si) in enumerate(zip(term.t_index, term.s_index)):
            ft, fs = probe_t[ti], probe_s[si]
            taps = (f'pair {i} (teacher {spec.positions_t[i]!r} -> {tuple(ft.shape)}, '
                    f'student {spec.positions_s[i]!r} -> {tuple(fs.shape)}, B×C×H×W)')
            if ft.dim() != 4 or fs.dim() != 4:
                raise ValueError(f'{spec.where}: {taps}: feature-KD taps must give B×C×H×W maps.')
            if ft.shape[2:] != fs.shape[2:]:
                raise ValueError(f'{spec.where}: {taps}: spatial sizes differ for the same input; tap the same '
                                 'resolution in both networks (LR-resolution body features).')
            term.channel_pairs.append((int(fs.shape[1]), int(ft.shape[1])))
            if fs.shape[1] != ft.shape[1]:
                mismatched.append(taps)
        if uses_adapter:
            if mismatched and spec.adapter == 'none':
                raise ValueError(f'{spec.where}: adapter none but channel counts differ at '
                                 f'{"; ".join(mismatched)}. Set adapter: auto (1×1 regressor where widths differ) '
                                 'or conv1x1.')
            bank = KDAdapterBank(term.channel_pairs, spec.adapter)
            if bank.num_adapters:
                self._adapter_banks[spec.name] = bank.to(self.device)
                term.adapted = True
        elif not channel_agnostic and mismatched:
            raise ValueError(f'{spec.where}: {spec.loss_opt["type"]} needs equal channel counts but they differ at '
                             f'{"; ".join(mismatched)}.')

    def build_aux_modules(self) -> nn.Module | None:
        """The FitNet adapter banks (``None`` when no term needs a regressor)."""
        return FeatureKDAdapters(self._adapter_banks) if self._adapter_banks else None

    def has_loss_terms(self) -> bool:
        return super().has_loss_terms() or bool(self.feature_terms)

    # ------------------------------------------------------------------ one iteration
    def compute_losses(self, current_iter: int) -> OrderedDict[str, Tensor]:
        """Output-KD terms plus one weighted term per feature-KD loss (graph kept, teacher constant)."""
        with self.teacher_taps.capture() as feats_t:
            teacher_out = self.teacher_forward(self.lq)
        with self.student_taps.capture() as feats_s:
            self.output = self.net_g(self.lq)  # the DDP wrapper: hooks on the bare net still fire
        self.check_teacher_output(self.output, teacher_out)
        loss_dict = self.output_losses(self.output, teacher_out)
        student = {t.spec.name: [feats_s[j] for j in t.s_index] for t in self.feature_terms}
        if self.net_aux is not None:
            student.update(self.net_aux({t.spec.name: student[t.spec.name]
                                         for t in self.feature_terms if t.adapted}))
        pair_logs: OrderedDict[str, Tensor] = OrderedDict()
        for term in self.feature_terms:
            values = term.loss.forward_terms(student[term.spec.name], [feats_t[j] for j in term.t_index],
                                             weighted=True)
            loss_dict[term.log_key] = torch.stack(values).sum()
            for key, value in zip(term.pair_keys, values):
                pair_logs[key] = value.detach()
        self._pair_logs = pair_logs
        return loss_dict

    def optimize_parameters(self, current_iter: int) -> None:
        super().optimize_parameters(current_iter)
        if self._pair_logs:  # per-pair parts of l_feat: logged, not added to the objective again
            self.log_dict.update(self.reduce_loss_dict(self._pair_logs))
