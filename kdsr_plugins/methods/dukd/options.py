"""Validation of DUKD's option blocks (dukd.md §5).

``train.dukd_opt`` keys (unknown keys raise ``ValueError`` listing the valid ones):

================  ================  ==========================================================
key               default           meaning
================  ================  ==========================================================
n_gt_sub          ``[1]``           zoom-in tiles per image (int, or list: first element used)
zoom_out          ``false``         enable zoom-out samples
update_mode       ``single_step``   ``official_two_step`` = reference two Adam steps (§3.2);
                                    ``joint`` is accepted as an alias of ``single_step``
lc_inverse        ``exact``         ``official`` = reference inverse (180° on 4 subsets)
lc_on             ``[zoom_in]``     groups with label consistency: zoom_in, zoom_out, original
zoom_in_crop      ``grid``          ``random`` = arbitrary P×P crops of the GT patch
zoom_out_resize   ``matlab``        ``torch`` = batched device port of the MATLAB bicubic
================  ================  ==========================================================

Outside the block (read by ``DUKDOptions.from_train_opt``): ``train.noisy.prob`` (block absent
or null → label consistency off; block present without ``prob`` → 0.3), and the loss weights
``train.pixel_opt.loss_weight`` (w_pix) / ``train.kd_opt.loss_weight`` (w_kd), both required.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

from kdsr_plugins.core.schema import Field, OptionError, Schema
from kdsr_plugins.methods.dukd.invertible_aug import INVERSE_MODES as LC_INVERSES
from kdsr_plugins.methods.dukd.invertible_aug import InvertibleAugmentation
from kdsr_plugins.methods.dukd.upcycling import ZOOM_IN_CROPS, ZOOM_OUT_RESIZES

UPDATE_MODES: tuple[str, ...] = ('single_step', 'official_two_step')
UPDATE_MODE_ALIASES: dict[str, str] = {'joint': 'single_step'}
LC_GROUPS: tuple[str, ...] = ('zoom_in', 'zoom_out', 'original')
DEFAULT_NOISY_PROB: float = 0.3



def _n_gt_sub(value: Any, where: str = '') -> int:
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError('dukd_opt.n_gt_sub: empty list; give an int or a list whose first element is used')
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'dukd_opt.n_gt_sub: expected a positive int (or list of them), got {value!r}')
    return value


def _lc_on(value: Any, where: str = '') -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if value is None:
        value = []
    if not isinstance(value, (list, tuple)):
        raise ValueError(f'dukd_opt.lc_on: expected a list of {list(LC_GROUPS)}, got {value!r}')
    bad = [v for v in value if v not in LC_GROUPS]
    if bad:
        raise ValueError(f'dukd_opt.lc_on: invalid group(s) {bad}; valid: {list(LC_GROUPS)}')
    return tuple(g for g in LC_GROUPS if g in value)  # canonical order, no duplicates


DUKD_SCHEMA = Schema('train.dukd_opt', (
    Field('n_gt_sub', 'any', 1, 'zoom-in tiles per image (int, or list: first element used)', check=_n_gt_sub,
          type_doc='int >= 1 | list'),
    Field('zoom_out', 'bool', False, 'enable zoom-out samples'),
    Field('update_mode', 'str', 'single_step', 'official_two_step: reference two Adam steps (joint = single_step)',
          choices=UPDATE_MODES, aliases=UPDATE_MODE_ALIASES),
    Field('lc_inverse', 'str', 'exact', 'official: reference inverse (180° on 4 subsets)', choices=LC_INVERSES),
    Field('lc_on', 'any', ('zoom_in',), 'groups with label consistency', check=_lc_on,
          type_doc=f'list of {" | ".join(LC_GROUPS)}'),
    Field('zoom_in_crop', 'str', 'grid', 'random: arbitrary PxP crops of the GT patch', choices=ZOOM_IN_CROPS),
    Field('zoom_out_resize', 'str', 'matlab', 'torch: batched device port of the MATLAB bicubic',
          choices=ZOOM_OUT_RESIZES),
), doc='DUKD method block (docs/dukd.md).', unknown_message='Unknown key(s) in {where}: {unknown}; valid keys: {valid}',
    sort_valid=False, field_prefix='dukd_opt')
DUKD_OPT_KEYS: tuple[str, ...] = tuple(DUKD_SCHEMA.keys)
"""Valid keys of ``train.dukd_opt``."""

NOISY_SCHEMA = Schema('train.noisy', (
    Field('prob', 'number', DEFAULT_NOISY_PROB, 'per-sample, per-op probability of each label-consistency op',
          min=0.0, max=1.0, message='{where} must be a number in [0, 1], got {value}'),
), doc='Label consistency of DUKD (block absent or ~: off).',
    unknown_message='Unknown key(s) in {where}: {unknown}; valid keys: {valid}', sort_valid=False)


def _weight(train_opt: Mapping[str, Any], key: str) -> float:
    block = train_opt.get(key)
    if not isinstance(block, Mapping):
        raise ValueError(f'DUKD requires train.{key} (an L1Loss block with loss_weight)')
    w = block.get('loss_weight', 1.0)
    if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0:
        raise ValueError(f'train.{key}.loss_weight must be a non-negative number, got {w!r}')
    return float(w)


@dataclass(frozen=True)
class DUKDOptions:
    """Validated DUKD settings.

    Attributes:
        n_gt_sub: Zoom-in tiles per image (n).
        zoom_out: Whether zoom-out samples are used.
        update_mode: ``'single_step'`` or ``'official_two_step'``.
        lc_inverse: ``'exact'`` or ``'official'``.
        lc_on: Groups with label consistency (subset of ``zoom_in, zoom_out, original``).
        zoom_in_crop: ``'grid'`` or ``'random'``.
        zoom_out_resize: ``'matlab'`` or ``'torch'``.
        noisy_prob: Per-sample, per-op probability p; ``None`` = label consistency off.
        w_pix: Weight of the GT / zoom-out→LR terms (``pixel_opt.loss_weight``), if known.
        w_kd: Weight of the KD terms (``kd_opt.loss_weight``), if known.
    """

    n_gt_sub: int = 1
    zoom_out: bool = False
    update_mode: str = 'single_step'
    lc_inverse: str = 'exact'
    lc_on: tuple[str, ...] = ('zoom_in',)
    zoom_in_crop: str = 'grid'
    zoom_out_resize: str = 'matlab'
    noisy_prob: float | None = None
    w_pix: float | None = None
    w_kd: float | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, noisy: Mapping[str, Any] | None = None) -> 'DUKDOptions':
        """Validate a ``train.dukd_opt`` block (and optionally a ``train.noisy`` block).

        Args:
            d: The ``dukd_opt`` mapping; ``None`` means all defaults.
            noisy: The ``noisy`` mapping; ``None`` = block absent (consistency off), ``{}`` =
                present without ``prob`` (p = 0.3).

        Raises:
            ValueError: Unknown keys (message lists the valid ones) or invalid values.
        """
        if d is not None and not isinstance(d, Mapping):
            raise OptionError(f'train.dukd_opt must be a mapping, got {type(d).__name__}')
        kwargs: dict[str, Any] = DUKD_SCHEMA.check(d, defaults=False)
        kwargs['noisy_prob'] = cls.parse_noisy(noisy)
        return cls(**kwargs)

    @staticmethod
    def parse_noisy(noisy: Mapping[str, Any] | None) -> float | None:
        """Probability from a ``train.noisy`` block (``None`` = absent → consistency off).

        Raises:
            ValueError: Unknown keys or ``prob`` outside [0, 1].
        """
        if noisy is None:
            return None
        if not isinstance(noisy, Mapping):
            raise OptionError(f'train.noisy must be a mapping, got {type(noisy).__name__}')
        return float(NOISY_SCHEMA.check(noisy)['prob'])

    @classmethod
    def from_train_opt(cls, train_opt: Mapping[str, Any]) -> 'DUKDOptions':
        """Validate everything DUKD reads from the ``train`` block.

        Reads ``dukd_opt``, ``noisy`` and the loss weights of ``pixel_opt`` / ``kd_opt`` (both
        required). ``teacher_train_mode`` belongs to ``KDModel`` and is not read here.

        Raises:
            ValueError: As ``from_dict``, or a missing ``pixel_opt`` / ``kd_opt``.
        """
        opts = cls.from_dict(train_opt.get('dukd_opt'), train_opt.get('noisy'))
        return cls(**{**asdict(opts), 'w_pix': _weight(train_opt, 'pixel_opt'), 'w_kd': _weight(train_opt, 'kd_opt')})

    @property
    def lc_enabled(self) -> bool:
        """Whether the label-consistency code path runs (``noisy`` block present, even p = 0)."""
        return self.noisy_prob is not None

    def lc_applies(self, group: str) -> bool:
        """Whether label consistency wraps the student forward of ``group``.

        Args:
            group: ``'zoom_in'``, ``'zoom_out'`` or ``'original'``.
        """
        if group not in LC_GROUPS:
            raise OptionError(f'Unknown group {group!r}; valid: {list(LC_GROUPS)}')
        return self.lc_enabled and group in self.lc_on

    def make_augmentation(self) -> InvertibleAugmentation | None:
        """The label-consistency augmentation, or ``None`` when the ``noisy`` block is absent."""
        if not self.lc_enabled:
            return None
        return InvertibleAugmentation(p=self.noisy_prob, inverse=self.lc_inverse)

    def notes(self) -> list[str]:
        """Human-readable warnings about settings that have no effect (for the model's logger)."""
        out = []
        if 'zoom_out' in self.lc_on and not self.zoom_out:
            out.append('dukd_opt.lc_on contains zoom_out but zoom_out is false: no effect')
        if self.lc_on != ('zoom_in',) and not self.lc_enabled:
            out.append('dukd_opt.lc_on is set but train.noisy is absent: label consistency is off')
        if self.lc_inverse == 'official' and self.lc_enabled:
            out.append('dukd_opt.lc_inverse: official reproduces the reference bug (180° rotation for the '
                       'subsets {h,t}, {v,t}, {i,h,t}, {i,v,t})')
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict view (e.g. for logging)."""
        d = asdict(self)
        d['lc_on'] = list(self.lc_on)
        return d
