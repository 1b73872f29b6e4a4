"""Write and validate LMDB image datasets in BasicSR's format (``datasets/README.md``).

Format (``basicsr.utils.lmdb_util.make_lmdb_from_imgs``): a folder ``<name>.lmdb`` with
``data.mdb``/``lock.mdb`` whose values are ``cv2.imencode('.png', img)`` bytes under ASCII keys
(file stems), and ``meta_info.txt`` with one line ``<key>.png (h,w,c) <compress_level>`` per image.
``PairedImageDataset`` reads keys back with ``line.split('.')[0]``, so keys may not contain dots.
Reading ``meta_info.txt``, writing values and checking an LMDB (``check_lmdb``) go through
:mod:`kdsr_plugins.core.lmdb_io`.
"""
from __future__ import annotations

import os
import os.path as osp
from collections.abc import Sequence

import cv2
from tqdm import tqdm

from kdsr_plugins.core.image_files import preview
from kdsr_plugins.core.lmdb_io import LmdbCheckError, LmdbWriter, check_lmdb, estimate_map_size, is_valid_key
from kdsr_plugins.data_prep.files import guard_outputs, image_nbytes, list_images, read_image


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
