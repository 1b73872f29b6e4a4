"""Write and validate LMDB image datasets in BasicSR's format (``datasets/README.md``).

Format (``basicsr.utils.lmdb_util.make_lmdb_from_imgs``): a folder ``<name>.lmdb`` with
``data.mdb``/``lock.mdb`` whose values are ``cv2.imencode('.png', img)`` bytes under ASCII keys
(file stems), and ``meta_info.txt`` with one line ``<key>.png (h,w,c) <compress_level>`` per image.
``PairedImageDataset`` reads keys back with ``line.split('.')[0]``, so keys may not contain dots.
Reading ``meta_info.txt`` and writing values go through :mod:`kdsr_plugins.core.lmdb_io`.
"""
from __future__ import annotations

import os
import os.path as osp
from collections.abc import Sequence

import cv2
import lmdb
import numpy as np
from tqdm import tqdm

from kdsr_plugins.core.lmdb_io import LmdbCheckError, LmdbWriter, estimate_map_size, is_valid_key, meta_info_shapes
from kdsr_plugins.data_prep.files import guard_outputs, image_nbytes, list_images, preview, read_image


def validate_keys(keys: Sequence[str]) -> None:
    """Check that keys are usable as BasicSR LMDB keys.

    Raises:
        ValueError: empty, duplicate, non-ASCII keys, or keys with dots or whitespace.
    """
    bad = [k for k in keys if not is_valid_key(k)]
    if bad:
        raise ValueError(f'invalid LMDB keys (need non-empty ASCII without dots or spaces): {preview(bad)}')
    seen: set[str] = set()
    dups: set[str] = set()
    for k in keys:
        (dups if k in seen else seen).add(k)
    if dups:
        raise ValueError(f'duplicate LMDB keys: {preview(sorted(dups))}')


def _resolve_inputs(folder_or_paths: str | os.PathLike | Sequence[str | os.PathLike],
                    keys: Sequence[str] | None) -> tuple[list[str], list[str]]:
    if isinstance(folder_or_paths, (str, os.PathLike)):
        folder = os.fspath(folder_or_paths)
        if not osp.isdir(folder):
            raise FileNotFoundError(f'image folder not found: {folder}')
        paths = [osp.join(folder, f) for f in list_images(folder)]
        if not paths:
            raise ValueError(f'no images found in {folder}')
    else:
        paths = [os.fspath(p) for p in folder_or_paths]
        if not paths:
            raise ValueError('no images given')
        missing = [p for p in paths if not osp.isfile(p)]
        if missing:
            raise FileNotFoundError(f'image files not found: {preview(missing)}')
    if keys is None:
        keys = [osp.splitext(osp.basename(p))[0] for p in paths]
    keys = list(keys)
    if len(keys) != len(paths):
        raise ValueError(f'{len(paths)} images but {len(keys)} keys')
    validate_keys(keys)
    return paths, keys


def write_lmdb(folder_or_paths: str | os.PathLike | Sequence[str | os.PathLike],
               lmdb_path: str | os.PathLike,
               keys: Sequence[str] | None = None,
               map_size: int | None = None,
               overwrite: bool = False,
               compress_level: int = 1,
               batch: int = 5000,
               progress: bool = True) -> str:
    """Write images to a BasicSR-format LMDB.

    Same output as ``make_lmdb_from_imgs`` (values re-encoded with ``cv2.imencode('.png')`` at
    ``compress_level``), but with an explicit ``map_size`` estimated from the decoded image sizes,
    an exception instead of ``sys.exit(1)`` when the target exists, and no half-written LMDB
    left behind on failure.

    Args:
        folder_or_paths: A folder (its images, sorted by name) or a list of image paths.
        lmdb_path: Target folder; must end in ``.lmdb``.
        keys: One key per image; default the file stems.
        map_size: LMDB map size in bytes; default :func:`estimate_map_size` of the images.
        overwrite: Remove an existing ``lmdb_path`` and rebuild it.
        compress_level: PNG compression level of the stored values (BasicSR uses 1).
        batch: Commit every ``batch`` images.
        progress: Show a tqdm progress bar.

    Returns:
        ``lmdb_path`` as a string.

    Raises:
        FileExistsError: ``lmdb_path`` exists and ``overwrite`` is False.
        FileNotFoundError: the folder or an image file is missing.
        ValueError: bad ``lmdb_path`` name, no images, bad keys or an unreadable image.
    """
    lmdb_path = os.fspath(lmdb_path)
    if not lmdb_path.endswith('.lmdb'):
        raise ValueError(f"LMDB path must end with '.lmdb': {lmdb_path}")
    paths, keys = _resolve_inputs(folder_or_paths, keys)
    guard_outputs([lmdb_path], overwrite, hint='use overwrite=True / --overwrite')
    if map_size is None:
        map_size = estimate_map_size(sum(image_nbytes(p) for p in paths), len(paths))

    os.makedirs(osp.dirname(osp.abspath(lmdb_path)), exist_ok=True)
    with LmdbWriter(lmdb_path, map_size, batch) as writer:
        for path, key in tqdm(list(zip(paths, keys)), desc=f'LMDB {osp.basename(lmdb_path)}', unit='img',
                              disable=not progress, leave=False):
            img = read_image(path)
            ok, buf = cv2.imencode('.png', img, [cv2.IMWRITE_PNG_COMPRESSION, compress_level])
            if not ok:
                raise ValueError(f'cannot PNG-encode {path}')
            writer.put(key, buf.tobytes(), img.shape, 'png', compress_level)
    return lmdb_path


def read_meta_info(lmdb_path: str) -> dict[str, tuple[int, int, int]]:
    """Keys and (h, w, c) shapes listed in ``<lmdb_path>/meta_info.txt``, in file order.

    Raises:
        LmdbCheckError: the file is missing, empty, malformed or lists a key twice.
    """
    return meta_info_shapes(lmdb_path)


def _open_checked(lmdb_path: str) -> lmdb.Environment:
    """Open read-only, verifying first that data.mdb is not truncated (a read past its end is SIGBUS)."""
    data_path = osp.join(lmdb_path, 'data.mdb')
    try:
        env = lmdb.open(lmdb_path, readonly=True, lock=False, readahead=False, meminit=False)
    except lmdb.Error as e:
        raise LmdbCheckError(f'corrupt LMDB {lmdb_path}: {e}') from e
    needed = (env.info()['last_pgno'] + 1) * env.stat()['psize']
    size = osp.getsize(data_path)
    if size < needed:
        env.close()
        raise LmdbCheckError(f'corrupt LMDB {lmdb_path}: data.mdb is truncated ({size} bytes, needs {needed})')
    return env


def check_lmdb(lmdb_path: str | os.PathLike, decode: bool = True,
               sample: int | None = None) -> dict[str, tuple[int, int, int]]:
    """Validate a BasicSR-format LMDB.

    Checks: the folder name ends in ``.lmdb``; ``data.mdb`` and ``meta_info.txt`` exist; the
    database opens and is not truncated; every meta key is stored; with ``decode``, every value
    decodes as an image of the shape listed in ``meta_info.txt``.

    Args:
        lmdb_path: The ``.lmdb`` folder.
        decode: Also decode every value (slower; otherwise only presence is checked).
        sample: With ``decode``, decode only this many values, evenly spread over the keys (first
            and last included); every key's presence is still checked.

    Returns:
        ``{key: (h, w, c)}`` from ``meta_info.txt``.

    Raises:
        LmdbCheckError: (a ``ValueError``) naming the first problem found.
    """
    lmdb_path = os.fspath(lmdb_path).rstrip('/\\')
    if not lmdb_path.endswith('.lmdb'):
        raise LmdbCheckError(f"not an LMDB folder (name must end in '.lmdb'): {lmdb_path}")
    if not osp.isdir(lmdb_path):
        raise LmdbCheckError(f'LMDB folder not found: {lmdb_path}')
    if not osp.isfile(osp.join(lmdb_path, 'data.mdb')):
        raise LmdbCheckError(f'missing data.mdb in {lmdb_path}')
    shapes = read_meta_info(lmdb_path)
    env = _open_checked(lmdb_path)
    try:
        missing, bad_decode, bad_shape = [], [], []
        keys = list(shapes)
        if decode and sample is not None and len(keys) > sample:
            step = (len(keys) - 1) / max(1, sample - 1)
            to_decode = {keys[round(i * step)] for i in range(sample)}
        else:
            to_decode = set(keys) if decode else set()
        with env.begin(write=False) as txn:
            for key, shape in shapes.items():
                value = txn.get(key.encode('ascii'))
                if value is None:
                    missing.append(key)
                    continue
                if key in to_decode:
                    img = cv2.imdecode(np.frombuffer(value, np.uint8), cv2.IMREAD_UNCHANGED)
                    if img is None:
                        bad_decode.append(key)
                        continue
                    got = (img.shape[0], img.shape[1], 1 if img.ndim == 2 else img.shape[2])
                    if got != shape:
                        bad_shape.append(f'{key} {got} vs meta {shape}')
    except lmdb.Error as e:
        raise LmdbCheckError(f'corrupt LMDB {lmdb_path}: {e}') from e
    finally:
        env.close()
    if missing:
        raise LmdbCheckError(f'meta_info.txt keys missing from the LMDB {lmdb_path}: {preview(missing)}')
    if bad_decode:
        raise LmdbCheckError(f'corrupt LMDB {lmdb_path}: values do not decode as images: {preview(bad_decode)}')
    if bad_shape:
        raise LmdbCheckError(f'image shapes differ from meta_info.txt in {lmdb_path}: {preview(bad_shape, 3)}')
    return shapes


def check_paired_lmdb(gt_path: str | os.PathLike,
                      lq_path: str | os.PathLike,
                      scale: int,
                      decode: bool = True,
                      allow_gt_remainder: bool = False) -> list[str]:
    """Validate a GT/LQ LMDB pair for ``PairedImageDataset``.

    Both LMDBs must pass :func:`check_lmdb`, hold the same keys, and every GT image must be
    ``scale`` times its LQ image (same channel count).

    Args:
        gt_path: GT (HR) ``.lmdb`` folder.
        lq_path: LQ (LR) ``.lmdb`` folder.
        scale: SR scale factor.
        decode: Decode every value (see :func:`check_lmdb`).
        allow_gt_remainder: Accept GT sizes up to ``scale - 1`` pixels larger than
            ``scale * LQ`` (non-modcropped GT; BasicSR crops it in the val phase only).

    Returns:
        The sorted common keys.

    Raises:
        LmdbCheckError: naming the first mismatching keys.
    """
    gt = check_lmdb(gt_path, decode)
    lq = check_lmdb(lq_path, decode)
    only_gt = sorted(set(gt) - set(lq))
    only_lq = sorted(set(lq) - set(gt))
    if only_gt or only_lq:
        parts = []
        if only_gt:
            parts.append(f'only in GT: {preview(only_gt)}')
        if only_lq:
            parts.append(f'only in LQ: {preview(only_lq)}')
        raise LmdbCheckError(f'GT {os.fspath(gt_path)} and LQ {os.fspath(lq_path)} have different keys; '
                             + '; '.join(parts))
    bad = []
    for key in sorted(gt):
        (gh, gw, gc), (lh, lw, lc) = gt[key], lq[key]
        slack = scale - 1 if allow_gt_remainder else 0
        if gc != lc or not (0 <= gh - lh * scale <= slack and 0 <= gw - lw * scale <= slack):
            bad.append(f'{key} GT {gt[key]} LQ {lq[key]}')
    if bad:
        raise LmdbCheckError(f'GT shape is not {scale} x LQ shape for keys: {preview(bad, 3)}')
    return sorted(gt)
