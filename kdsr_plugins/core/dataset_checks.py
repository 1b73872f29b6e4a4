"""Start-up checks of paired LMDB datasets, run before BasicSR builds them (``compat`` patch).

BasicSR 1.4.2 reports a missing ``meta_info.txt`` as a bare ``FileNotFoundError``, different
GT/LQ keys as ``Keys in lq_folder and gt_folder are different.`` (no paths, no keys), a key that
``meta_info.txt`` lists but the database lacks as a decoding crash, and a GT image smaller than
``gt_size`` only when a worker happens to draw it, possibly hours into training. These checks read
only ``meta_info.txt`` and the key index (no image is decoded) and name the dataset, the folders
and the offending keys.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from basicsr.utils import get_root_logger

#: Dataset types reading a GT/LQ pair of BasicSR LMDBs with identical keys.
PAIRED_LMDB_TYPES = ('PairedImageDataset', 'KDCachedTargetDataset')


class DatasetOptionError(ValueError):
    """A dataset block points at data that cannot work with its options."""


def check_dataset_opt(dataset_opt: Mapping[str, Any]) -> None:
    """Validate a paired LMDB dataset block (no-op for other types and backends).

    Checks both ``.lmdb`` folders (``data.mdb`` and ``meta_info.txt`` present, every listed key
    stored), identical GT/LQ keys, GT = ``scale`` x LQ shapes (outside training GT may be larger:
    BasicSR crops it), and in the train phase that every GT image is at least ``gt_size`` in both
    dimensions.

    Raises:
        DatasetOptionError: Naming the dataset block, the folders and the first offending keys.
    """
    if dataset_opt.get('type') not in PAIRED_LMDB_TYPES:
        return
    if (dataset_opt.get('io_backend') or {}).get('type') != 'lmdb':
        return
    gt, lq = dataset_opt.get('dataroot_gt'), dataset_opt.get('dataroot_lq')
    if not gt or not lq:
        return
    from kdsr_plugins.data_prep.files import preview
    from kdsr_plugins.data_prep.lmdb_tools import LmdbCheckError, check_lmdb

    phase = str(dataset_opt.get('phase', '?'))
    where = f'datasets.{phase} ({dataset_opt.get("name", "?")}, {dataset_opt["type"]})'
    scale = int(dataset_opt.get('scale') or 0)
    hint = f'python -m kdsr_plugins.data_prep check-lmdb {gt} --lq {lq}' + (f' --scale {scale}' if scale else '')
    training = phase == 'train'
    try:
        gt_shapes, lq_shapes = check_lmdb(gt, decode=False), check_lmdb(lq, decode=False)
    except LmdbCheckError as err:
        why = (' (BasicSR lists the keys of an LMDB from its meta_info.txt, which python -m kdsr_plugins.data_prep '
               'and BasicSR\'s create_lmdb.py write)' if 'meta_info' in str(err) else '')
        raise DatasetOptionError(f'{where}: {err}{why}. Check the pair with: {hint}') from err
    if set(gt_shapes) != set(lq_shapes):
        raise DatasetOptionError(f'{where}: GT {gt} and LQ {lq} have different keys (BasicSR pairs them by key); '
                                 f'only in GT: {preview(sorted(set(gt_shapes) - set(lq_shapes)))}; only in LQ: '
                                 f'{preview(sorted(set(lq_shapes) - set(gt_shapes)))}. Check the pair with: {hint}')
    if scale:  # training crops need GT = scale x LQ exactly; validation crops GT down to scale x LQ
        bad = []
        for key, (gh, gw, gc) in gt_shapes.items():
            lh, lw, lc = lq_shapes[key]
            fits = (gh, gw) == (lh * scale, lw * scale) if training else gh >= lh * scale and gw >= lw * scale
            if gc != lc or not fits:
                bad.append(f'{key} GT {gh}x{gw}x{gc} LQ {lh}x{lw}x{lc}')
        if bad:
            relation = 'is not' if training else 'is smaller than'
            raise DatasetOptionError(f'{where}: GT {relation} {scale} x LQ for {len(bad)} key(s): {preview(bad, 3)} '
                                     f'(wrong LQ folder or scale?). Check the pair with: {hint}')
    gt_size = dataset_opt.get('gt_size')
    if not training or not gt_size:
        return
    gt_size = int(gt_size)
    small = [f'{key} ({h}x{w})' for key, (h, w, _) in gt_shapes.items() if h < gt_size or w < gt_size]
    if small:
        raise DatasetOptionError(f'{where}: {len(small)} of {len(gt_shapes)} GT images in {gt} are smaller than '
                                 f'gt_size {gt_size}: {preview(small)}. Lower gt_size or remove those images '
                                 '(BasicSR would stop on them mid-training, whenever one is drawn).')
    if scale and gt_size % int(scale):
        get_root_logger().warning(f'{where}: gt_size {gt_size} is not divisible by scale {scale}; BasicSR crops '
                                  f'{gt_size // int(scale) * int(scale)}-pixel GT patches.')
