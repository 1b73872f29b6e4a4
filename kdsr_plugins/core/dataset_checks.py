"""Start-up checks of dataset blocks, run before BasicSR builds them (``compat`` patch), and decode errors.

BasicSR 1.4.2 reports a missing ``meta_info.txt`` as a bare ``FileNotFoundError``, different
GT/LQ keys as ``Keys in lq_folder and gt_folder are different.`` (no paths, no keys), a key that
``meta_info.txt`` lists but the database lacks as a decoding crash, a GT image smaller than
``gt_size`` only when a worker happens to draw it, possibly hours into training, an empty
validation folder as an ``UnboundLocalError`` at the first validation, a stray file in a folder
as "different number of images" (naming no file), data of another scale not at all (outside
training it crops GT to ``scale`` x LQ and scores a corner), and an undecodable value as
``'NoneType' object has no attribute 'astype'`` from a worker. These checks read the key index
or the folder listing, image headers and a small sample of decoded values, and name the dataset,
the folders and the offending keys or files (docs/guarantees.md, "Data checks before training").
"""
from __future__ import annotations

import json
import os
import os.path as osp
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from basicsr.utils import get_root_logger

from kdsr_plugins.core.image_files import IMG_EXTS, image_shape, preview
from kdsr_plugins.core.lmdb_io import LmdbCheckError, check_lmdb

#: Dataset types reading a GT/LQ pair (BasicSR LMDBs with identical keys, or two folders).
PAIRED_LMDB_TYPES = ('PairedImageDataset', 'KDCachedTargetDataset')
#: Dataset types reading one LQ folder or LMDB.
SINGLE_TYPES = ('SingleImageDataset',)
#: Values decoded per LMDB at start-up (evenly spread over its keys, first and last included).
LMDB_DECODE_SAMPLE = 8
#: Image headers read per folder at start-up for the shape checks (evenly spread).
FOLDER_SHAPE_SAMPLE = 64

_CHECKED: set[str] = set()


class DatasetOptionError(ValueError):
    """A dataset block points at data that cannot work with its options."""


class ImageDecodeError(ValueError):
    """A stored image (LMDB value or file) that does not decode, found while reading data."""


def _memo_key(dataset_opt: Mapping[str, Any]) -> str:
    """The block and the modification times of its data (a changed folder or LMDB is checked again)."""
    stamps = []
    for key in ('dataroot_gt', 'dataroot_lq'):
        root = dataset_opt.get(key)
        paths = (str(root), osp.join(str(root), 'data.mdb'), osp.join(str(root), 'meta_info.txt')) if root else ()
        for path in paths:
            try:
                stamps.append(os.stat(path).st_mtime_ns)
            except OSError:
                stamps.append(None)
    return json.dumps([dataset_opt, stamps], sort_keys=True, default=str)


def check_dataset_opt(dataset_opt: Mapping[str, Any]) -> None:
    """Validate a dataset block once per process (pre-flight and ``build_dataset`` both call this).

    Paired blocks (``PairedImageDataset``, ``KDCachedTargetDataset``) on LMDB: ``check_paired_lmdb_opt``;
    on folders: ``check_paired_folder_opt``. ``SingleImageDataset``: the LQ folder or LMDB.

    Raises:
        DatasetOptionError: Naming the dataset block, the folders and the first offending keys or files.
    """
    key = _memo_key(dataset_opt)
    if key in _CHECKED:
        return
    kind = dataset_opt.get('type')
    backend = (dataset_opt.get('io_backend') or {}).get('type')
    if kind in PAIRED_LMDB_TYPES and dataset_opt.get('dataroot_gt') and dataset_opt.get('dataroot_lq'):
        if backend == 'lmdb':
            check_paired_lmdb_opt(dataset_opt)
        elif backend == 'disk' and 'meta_info_file' not in dataset_opt:
            check_paired_folder_opt(dataset_opt)
    elif kind in SINGLE_TYPES and dataset_opt.get('dataroot_lq'):
        if backend == 'lmdb':
            _check_single_lmdb(dataset_opt)
        elif backend == 'disk' and 'meta_info_file' not in dataset_opt:
            _check_folder_images(_where(dataset_opt), 'dataroot_lq', dataset_opt['dataroot_lq'])
    _CHECKED.add(key)


def _where(dataset_opt: Mapping[str, Any]) -> str:
    return f'datasets.{dataset_opt.get("phase", "?")} ({dataset_opt.get("name", "?")}, {dataset_opt.get("type")})'


def _check_scale_ratio(where: str, pairs: Sequence[tuple[str, tuple[int, ...], tuple[int, ...]]], scale: int,
                       training: bool, hint: str) -> None:
    """GT = ``scale`` x LQ (training) or GT in [scale x LQ, (scale + 1) x LQ) (outside training, where
    BasicSR crops GT to ``scale`` x LQ: a GT of another scale would be scored by its corner)."""
    bad, other = [], set()
    for key, (gh, gw, gc), (lh, lw, lc) in pairs:
        if training:
            fits = (gh, gw) == (lh * scale, lw * scale)
        else:
            fits = lh * scale <= gh < lh * (scale + 1) and lw * scale <= gw < lw * (scale + 1)
        if gc != lc or not fits:
            bad.append(f'{key} GT {gh}x{gw}x{gc} LQ {lh}x{lw}x{lc}')
            if lh and lw and gh // lh == gw // lw and gh // lh != scale:
                other.add(gh // lh)
    if not bad:
        return

    if training:
        relation = 'is not'
    elif other and min(other) > scale:
        relation = 'is larger than'
    else:
        relation = 'is smaller than'
    found = f'the data look x{min(other)}: ' if len(other) == 1 else ''
    raise DatasetOptionError(f'{where}: GT {relation} {scale} x LQ for {len(bad)} key(s): {preview(bad, 3)} '
                             f'({found}wrong LQ folder or scale?). Check the pair with: {hint}')


def check_paired_lmdb_opt(dataset_opt: Mapping[str, Any]) -> None:
    """Checks both ``.lmdb`` folders (``data.mdb`` and ``meta_info.txt`` present, every listed key
    stored, a sample of values decoding as images of the listed shape), identical GT/LQ keys,
    GT = ``scale`` x LQ shapes (outside training GT may be larger by less than one LQ pixel per
    pixel: BasicSR crops it), and in the train phase that every GT image is at least ``gt_size``
    in both dimensions.

    Raises:
        DatasetOptionError: Naming the dataset block, the folders and the first offending keys.
    """
    gt, lq = dataset_opt.get('dataroot_gt'), dataset_opt.get('dataroot_lq')

    phase = str(dataset_opt.get('phase', '?'))
    where = _where(dataset_opt)
    scale = int(dataset_opt.get('scale') or 0)
    hint = f'python -m kdsr_plugins.data_prep check-lmdb {gt} --lq {lq}' + (f' --scale {scale}' if scale else '')
    training = phase == 'train'
    try:
        gt_shapes = check_lmdb(gt, decode=True, sample=LMDB_DECODE_SAMPLE)
        lq_shapes = check_lmdb(lq, decode=True, sample=LMDB_DECODE_SAMPLE)
    except LmdbCheckError as err:
        why = (' (BasicSR lists the keys of an LMDB from its meta_info.txt, which python -m kdsr_plugins.data_prep '
               'and BasicSR\'s create_lmdb.py write)' if 'meta_info' in str(err) else '')
        raise DatasetOptionError(f'{where}: {err}{why}. Check the pair with: {hint}') from err
    if set(gt_shapes) != set(lq_shapes):
        raise DatasetOptionError(f'{where}: GT {gt} and LQ {lq} have different keys (BasicSR pairs them by key); '
                                 f'only in GT: {preview(sorted(set(gt_shapes) - set(lq_shapes)))}; only in LQ: '
                                 f'{preview(sorted(set(lq_shapes) - set(gt_shapes)))}. Check the pair with: {hint}')
    if scale:
        _check_scale_ratio(where, [(k, gt_shapes[k], lq_shapes[k]) for k in gt_shapes], scale, training, hint)
    if training:
        _check_gt_size(dataset_opt, where, gt, gt_shapes, len(gt_shapes))


def _check_gt_size(dataset_opt: Mapping[str, Any], where: str, gt: str, gt_shapes: Mapping[str, tuple[int, ...]],
                   total: int) -> None:
    """Every (checked) GT image is at least ``gt_size``; warn when ``gt_size`` is not a multiple of ``scale``."""

    gt_size, scale = dataset_opt.get('gt_size'), int(dataset_opt.get('scale') or 0)
    if not gt_size:
        return
    gt_size = int(gt_size)
    small = [f'{key} ({shape[0]}x{shape[1]})' for key, shape in gt_shapes.items()
             if shape[0] < gt_size or shape[1] < gt_size]
    if small:
        of = f'{len(small)} of {total}' if len(gt_shapes) == total else f'{len(small)} of {len(gt_shapes)} checked'
        raise DatasetOptionError(f'{where}: {of} GT images in {gt} are smaller than '
                                 f'gt_size {gt_size}: {preview(small)}. Lower gt_size or remove those images '
                                 '(BasicSR would stop on them mid-training, whenever one is drawn).')
    if scale and gt_size % int(scale):
        get_root_logger().warning(f'{where}: gt_size {gt_size} is not divisible by scale {scale}; BasicSR crops '
                                  f'{gt_size // int(scale) * int(scale)}-pixel GT patches.')


def _spread(items: Sequence[Any], n: int) -> list[Any]:
    """Up to ``n`` items evenly spread over ``items`` (first and last included)."""
    if len(items) <= n:
        return list(items)
    step = (len(items) - 1) / (n - 1)
    return [items[round(i * step)] for i in range(n)]


def _check_folder_images(where: str, key: str, folder: str) -> list[str]:
    """The image files BasicSR's disk backend reads from ``folder``; refuse a missing or empty folder
    and non-image files (which BasicSR would read as images).

    Returns:
        Sorted file names (BasicSR's ``scandir``: files directly inside, hidden ones skipped).
    """

    if not osp.isdir(folder):
        raise DatasetOptionError(f'{where}: {key} {folder!r} is not a folder (relative paths are resolved from the '
                                 f'current directory {os.getcwd()!r}).')
    files = sorted(e.name for e in os.scandir(folder) if not e.name.startswith('.') and e.is_file())
    stray = [f for f in files if osp.splitext(f)[1].lower() not in IMG_EXTS]
    if stray:
        raise DatasetOptionError(f'{where}: {key} {folder} holds {len(stray)} file(s) that are not images: '
                                 f'{preview(stray)}; BasicSR reads every file of the folder as an image. Move them '
                                 'out of the folder.')
    if not files:
        raise DatasetOptionError(f'{where}: {key} {folder} holds no image (BasicSR would build an empty dataset'
                                 f'{", and validation would crash at its first run" if "val" in where else ""}). '
                                 'Point it at the image folder, or remove the dataset block.')
    return files


def _image_shape(path: str) -> tuple[int, int, int]:

    try:
        return image_shape(path)
    except ValueError as err:
        raise DatasetOptionError(f'cannot read {path} as an image (corrupt or not an image): remove or replace it '
                                 f'({err}).') from err


def check_paired_folder_opt(dataset_opt: Mapping[str, Any]) -> None:
    """A GT/LQ folder pair (``io_backend: disk``): both folders exist and hold only images, none is
    empty, every GT file has its LQ partner (``filename_tmpl``) and vice versa (the differing
    files named), and a sample of image headers fits ``scale`` and ``gt_size``.

    Raises:
        DatasetOptionError: Naming the dataset block, the folders and the offending files.
    """

    where = _where(dataset_opt)
    gt, lq = str(dataset_opt['dataroot_gt']), str(dataset_opt['dataroot_lq'])
    gt_files = _check_folder_images(where, 'dataroot_gt', gt)
    lq_files = _check_folder_images(where, 'dataroot_lq', lq)
    tmpl = str(dataset_opt.get('filename_tmpl', '{}'))
    partner = {}
    for name in gt_files:
        stem, ext = osp.splitext(name)
        partner[name] = f'{tmpl.format(stem)}{ext}'
    lq_set = set(lq_files)
    no_lq = [f'{g} (expects {partner[g]})' for g in gt_files if partner[g] not in lq_set]
    no_gt = sorted(lq_set - set(partner.values()))
    if no_lq or no_gt:
        raise DatasetOptionError(f'{where}: GT {gt} and LQ {lq} do not pair up (filename_tmpl {tmpl!r}: GT '
                                 f'<name>.<ext> pairs with LQ {tmpl.format("<name>")}.<ext>); GT without LQ: '
                                 f'{preview(no_lq) or "-"}; LQ without GT: {preview(no_gt) or "-"}.')
    scale = int(dataset_opt.get('scale') or 0)
    training = str(dataset_opt.get('phase', '?')) == 'train'
    sample = _spread(gt_files, FOLDER_SHAPE_SAMPLE)
    shapes = {g: (_image_shape(osp.join(gt, g)), _image_shape(osp.join(lq, partner[g]))) for g in sample}
    if scale:
        _check_scale_ratio(where, [(g, s[0], s[1]) for g, s in shapes.items()], scale, training,
                           f'ls {gt} {lq}')
    if training:
        _check_gt_size(dataset_opt, where, gt, {g: s[0] for g, s in shapes.items()}, len(gt_files))


def _check_single_lmdb(dataset_opt: Mapping[str, Any]) -> None:

    lq = str(dataset_opt['dataroot_lq'])
    try:
        check_lmdb(lq, decode=True, sample=LMDB_DECODE_SAMPLE)
    except LmdbCheckError as err:
        raise DatasetOptionError(f'{_where(dataset_opt)}: {err}. Check it with: '
                                 f'python -m kdsr_plugins.data_prep check-lmdb {lq}') from err


# ---------------------------------------------------------------------------------------------- decode errors
#: The last value read through BasicSR's ``FileClient`` in this process (a data worker reads one at a time).
_LAST_READ: dict[str, Any] = {}


def describe_last_read() -> str:
    """Where the value that failed to decode came from: LMDB + key, or file, with the command that checks it."""
    path, client_key, ref = _LAST_READ.get('path'), _LAST_READ.get('client_key'), _LAST_READ.get('client')
    client = ref() if ref is not None else None
    envs = getattr(getattr(client, 'client', None), '_client', None)
    if isinstance(envs, Mapping) and client_key in envs:
        try:
            db = envs[client_key].path()
        except Exception:  # noqa: BLE001 - a closed env: name what is known
            db = f'<the {client_key} LMDB>'
        return (f'key {path!r} of the LMDB {db} ({client_key}) does not decode as an image (corrupt value?). '
                f'Check the database with: python -m kdsr_plugins.data_prep check-lmdb {db}')
    if path is not None:
        return f'image file {path!r} does not decode as an image (corrupt or not an image?): remove or replace it.'
    return 'an image does not decode (corrupt value or file?).'


def recording_file_client_get(get: Any) -> Any:
    """Wrap ``FileClient.get`` to remember what was read last (for ``describe_last_read``)."""
    if getattr(get, '_kdsr_recording', False):
        return get

    def wrapper(self: Any, filepath: Any, client_key: str = 'default') -> Any:
        _LAST_READ.update(path=str(filepath), client_key=client_key, client=weakref.ref(self))  # never keeps LMDBs open
        return get(self, filepath, client_key)
    wrapper._kdsr_recording = True  # type: ignore[attr-defined]
    wrapper.__doc__ = get.__doc__
    return wrapper


def imfrombytes(content: bytes, flag: str = 'color', float32: bool = False) -> Any:
    """BasicSR's ``imfrombytes`` raising ``ImageDecodeError`` (naming the LMDB key or file) instead of
    returning ``None`` for bytes that do not decode."""
    import cv2
    import numpy as np

    flags = {'color': cv2.IMREAD_COLOR, 'grayscale': cv2.IMREAD_GRAYSCALE, 'unchanged': cv2.IMREAD_UNCHANGED}
    img = cv2.imdecode(np.frombuffer(content, np.uint8), flags[flag]) if content else None
    if img is None:
        raise ImageDecodeError(describe_last_read())
    if float32:
        img = img.astype(np.float32) / 255.
    return img
