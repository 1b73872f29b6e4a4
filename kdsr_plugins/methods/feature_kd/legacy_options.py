"""Mapping of yun224/DUKD option names to ours (docs/feature_kd.md, "yun224/DUKD option names")."""
from __future__ import annotations

from typing import Any, Dict

__all__ = ['legacy_feature_loss_opt']

_LEGACY_FEATURE_LOSSES: Dict[str, Dict[str, Any]] = {
    'SA': {'type': 'KDAffinityLoss'},
    'AT': {'type': 'KDAttentionLoss', 'mode': 'sr_l1'},
    'Fitnet': {'type': 'KDFitNetLoss', 'mode': 'channel_mean', 'distance': 'l1'},
}
_UNSUPPORTED = ('FSP', 'CA', 'IA')


def legacy_feature_loss_opt(type_name: str, loss_weight: float) -> Dict[str, Any]:
    """Loss option dict for a yun224/DUKD ``train.feature_distillation.type``.

    ``SA`` -> ``KDAffinityLoss``, ``AT`` -> ``KDAttentionLoss(mode=sr_l1)``,
    ``Fitnet`` -> ``KDFitNetLoss(mode=channel_mean, distance=l1)`` (no regressor).

    Args:
        type_name: The legacy name (case sensitive, as in the DUKD configs).
        loss_weight: Weight of the feature term (the legacy ``feature_opt.loss_weight``).

    Returns:
        A fresh dict for ``basicsr.losses.build_loss``.

    Raises:
        NotImplementedError: For ``FSP``, ``CA``, ``IA``.
        ValueError: For any other unknown name.
    """
    if type_name in _UNSUPPORTED:
        raise NotImplementedError(
            f'feature_distillation.type {type_name!r} (yun224/DUKD) is not supported by kdsr_plugins; '
            f'supported legacy types: {", ".join(_LEGACY_FEATURE_LOSSES)} '
            '(or use train.feature_opt with KDFitNetLoss / KDAttentionLoss / KDAffinityLoss / KDRelationLoss)')
    if type_name not in _LEGACY_FEATURE_LOSSES:
        raise ValueError(f'unknown feature_distillation.type {type_name!r}; supported legacy types: '
                         f'{", ".join(_LEGACY_FEATURE_LOSSES)} (unsupported: {", ".join(_UNSUPPORTED)})')
    opt = dict(_LEGACY_FEATURE_LOSSES[type_name])
    opt['loss_weight'] = float(loss_weight)
    return opt
