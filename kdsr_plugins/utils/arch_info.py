"""Facts about the stock BasicSR archs used as students and teachers, read from option dicts.

(Facts read from built networks — body units, widths — live with the stage runners.)
"""
from __future__ import annotations


def pad_multiple(net_opt: dict) -> int:
    """Spatial multiple an input must have (SwinIR: ``window_size``; others: 1)."""
    if net_opt.get('type') == 'SwinIR':
        return int(net_opt.get('window_size', 7))
    return 1
