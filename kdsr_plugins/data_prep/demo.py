"""Offline demo SR dataset from the images bundled with scikit-image (datasets/README.md, "Demo set").

Train: 240x240 HR sub-images, stride 120, from astronaut, chelsea, hubble_deep_field,
immunohistochemistry, retina (area-resized to 704x704 first), colorwheel and the left view of
stereo_motorcycle (97 sub-images). Val: coffee and rocket, cropped to a multiple of 12 so one
HR folder serves x2, x3 and x4. LR = :func:`bicubic_downsample` of each HR image.

Layout under ``out_dir``::

    train_HR_sub/  train_LR_X{s}_sub/  val_HR/  val_LR_X{s}/        (PNG, BGR, same names)
    train_HR_sub.lmdb  train_LR_X{s}_sub.lmdb  val_HR.lmdb  val_LR_X{s}.lmdb   (keys = stems)
    .demo_complete.json                                              (written last)

Building is idempotent: a complete dataset (marker present, same options) is returned as is.
"""
from __future__ import annotations

import contextlib
import json
import os
import os.path as osp
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence

import cv2
import numpy as np

from kdsr_plugins.data_prep.degrade import bicubic_downsample
from kdsr_plugins.data_prep.files import remove_path, write_png
from kdsr_plugins.data_prep.lmdb_tools import write_lmdb

TRAIN_SOURCES = ('astronaut', 'chelsea', 'hubble_deep_field', 'immunohistochemistry', 'retina', 'colorwheel',
                 'motorcycle_left')
VAL_SOURCES = ('coffee', 'rocket')
PATCH_SIZE = 240
PATCH_STRIDE = 120
RETINA_SIZE = 704
VAL_MULTIPLE = 12
MARKER = '.demo_complete.json'
_FORMAT_VERSION = 1
# Entries this module owns inside out_dir (removed by overwrite=True); nothing else is touched.
_OWNED = re.compile(r'^(train_HR_sub|val_HR|train_LR_X\d+_sub|val_LR_X\d+)(\.lmdb)?$')


def _to_bgr_uint8(img: np.ndarray) -> np.ndarray:
    """scikit-image RGB / RGBA / grey image -> contiguous 3-channel BGR uint8."""
    if img.dtype != np.uint8:
        img = np.clip(np.round(img.astype(np.float64) * (255 if img.max() <= 1 else 1)), 0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    img = img[..., :3]
    return np.ascontiguousarray(img[..., ::-1])


def load_source(name: str) -> np.ndarray:
    """One demo source image as BGR uint8 (retina resized, stereo pair reduced to its left view).

    Raises:
        ImportError: scikit-image is not installed.
    """
    try:
        from skimage import data as skdata
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError('the demo dataset needs scikit-image (pip install scikit-image)') from e
    if name == 'motorcycle_left':
        img = skdata.stereo_motorcycle()[0]
    else:
        img = getattr(skdata, name)()
    img = _to_bgr_uint8(img)
    if name == 'retina':
        img = cv2.resize(img, (RETINA_SIZE, RETINA_SIZE), interpolation=cv2.INTER_AREA)
    return img


def train_patches(max_train_images: int | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(stem, hr_patch)``; stems are ``<source>_s<y:04d>_<x:04d>`` (pixel offsets).

    With ``max_train_images`` the selection is spread evenly over all sub-images (deterministic).
    """
    sources = {name: load_source(name) for name in TRAIN_SOURCES}
    coords = [(name, y, x) for name, img in sources.items()
              for y in range(0, img.shape[0] - PATCH_SIZE + 1, PATCH_STRIDE)
              for x in range(0, img.shape[1] - PATCH_SIZE + 1, PATCH_STRIDE)]
    if max_train_images is not None:
        if max_train_images < 1:
            raise ValueError(f'max_train_images must be >= 1, got {max_train_images}')
        if max_train_images < len(coords):
            idx = np.unique(np.linspace(0, len(coords) - 1, max_train_images).round().astype(int))
            coords = [coords[i] for i in idx]
    for name, y, x in coords:
        patch = sources[name][y:y + PATCH_SIZE, x:x + PATCH_SIZE]
        yield f'{name}_s{y:04d}_{x:04d}', np.ascontiguousarray(patch)


def val_images() -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(stem, hr)`` for the val images, cropped (top-left) to a multiple of 12."""
    for name in VAL_SOURCES:
        img = load_source(name)
        h, w = img.shape[:2]
        yield name, np.ascontiguousarray(img[:h - h % VAL_MULTIPLE, :w - w % VAL_MULTIPLE])


def demo_paths(out_dir: str, scales: Sequence[int]) -> dict:
    """Paths of the demo dataset folders and LMDBs for ``scales`` (LQ entries keyed by scale)."""
    return {
        'root': out_dir,
        'train_gt': osp.join(out_dir, 'train_HR_sub'),
        'train_gt_lmdb': osp.join(out_dir, 'train_HR_sub.lmdb'),
        'val_gt': osp.join(out_dir, 'val_HR'),
        'val_gt_lmdb': osp.join(out_dir, 'val_HR.lmdb'),
        'train_lq': {s: osp.join(out_dir, f'train_LR_X{s}_sub') for s in scales},
        'train_lq_lmdb': {s: osp.join(out_dir, f'train_LR_X{s}_sub.lmdb') for s in scales},
        'val_lq': {s: osp.join(out_dir, f'val_LR_X{s}') for s in scales},
        'val_lq_lmdb': {s: osp.join(out_dir, f'val_LR_X{s}.lmdb') for s in scales},
    }


def _all_paths(paths: dict) -> list[str]:
    out = []
    for value in paths.values():
        if isinstance(value, dict):
            out += list(value.values())
        elif isinstance(value, str) and value != paths['root']:
            out.append(value)
    return out


def _read_marker(out_dir: str) -> dict | None:
    try:
        with open(osp.join(out_dir, MARKER)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def _dir_lock(out_dir: str) -> Iterator[None]:
    """Exclusive lock on ``out_dir`` (concurrent builders wait; no-op where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    with open(osp.join(out_dir, '.demo_build.lock'), 'w') as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _existing_result(out_dir: str, scales: list[int], max_train_images: int | None) -> dict | None:
    """The finished dataset's paths if it covers the request, None if nothing was built yet.

    Raises:
        FileExistsError: a different or incomplete demo dataset is in the way.
    """
    marker = _read_marker(out_dir)
    owned = sorted(e for e in os.listdir(out_dir) if _OWNED.match(e))
    if marker is None:
        if owned:
            raise FileExistsError(f'incomplete demo dataset in {out_dir} (no {MARKER}; found {", ".join(owned)}); '
                                  'pass overwrite=True / --overwrite to rebuild')
        return None
    paths = demo_paths(out_dir, scales)
    if (marker.get('version') != _FORMAT_VERSION or not set(scales) <= set(marker.get('scales', []))
            or marker.get('max_train_images') != max_train_images):
        raise FileExistsError(f'a different demo dataset exists in {out_dir} (scales {marker.get("scales")}, '
                              f'max_train_images {marker.get("max_train_images")}); '
                              'pass overwrite=True / --overwrite to rebuild')
    missing = [osp.basename(p) for p in _all_paths(paths) if not osp.exists(p)]
    if missing:
        raise FileExistsError(f'demo dataset in {out_dir} is incomplete (missing {", ".join(missing)}); '
                              'pass overwrite=True / --overwrite to rebuild')
    return {**paths, 'scales': scales, 'num_train': marker['num_train'], 'num_val': marker['num_val']}


def _write_split(tmp: str, gt_name: str, lq_names: dict[int, str], items: Iterator[tuple[str, np.ndarray]]) -> int:
    """Write HR PNGs to ``tmp/gt_name`` and their bicubic LR to ``tmp/lq_names[s]``; returns the count."""
    for folder in (gt_name, *lq_names.values()):
        os.makedirs(osp.join(tmp, folder))
    count = 0
    for stem, hr in items:
        write_png(osp.join(tmp, gt_name, f'{stem}.png'), hr)
        for s, lq_name in lq_names.items():
            write_png(osp.join(tmp, lq_name, f'{stem}.png'), bicubic_downsample(hr, s))
        count += 1
    for folder in (gt_name, *lq_names.values()):
        write_lmdb(osp.join(tmp, folder), osp.join(tmp, f'{folder}.lmdb'), map_size=1 << 30, progress=False)
    return count


def build_demo_dataset(out_dir: str | os.PathLike = 'datasets/demo',
                       scales: Sequence[int] = (2, 3, 4),
                       overwrite: bool = False,
                       max_train_images: int | None = None) -> dict:
    """Build (or return the already built) offline demo dataset.

    Args:
        out_dir: Output folder (created if needed; other content in it is left alone).
        scales: LR scales, each dividing 12 (2, 3, 4 or 6).
        overwrite: Rebuild even if a complete dataset exists (removes only the demo entries).
        max_train_images: Keep only this many train sub-images (evenly spread; all 97 if None).

    Returns:
        Paths: ``root``, ``train_gt``, ``train_gt_lmdb``, ``val_gt``, ``val_gt_lmdb`` and dicts
        ``train_lq``, ``train_lq_lmdb``, ``val_lq``, ``val_lq_lmdb`` keyed by scale; plus
        ``scales``, ``num_train`` and ``num_val``.

    Raises:
        FileExistsError: a different or incomplete demo dataset exists and ``overwrite`` is False.
        ValueError: a scale that does not divide 12, or ``max_train_images < 1``.
    """
    out_dir = os.fspath(out_dir)
    scales = sorted(set(int(s) for s in scales))
    bad = [s for s in scales if s < 1 or VAL_MULTIPLE % s]
    if not scales or bad:
        raise ValueError(f'demo scales must divide {VAL_MULTIPLE} (e.g. 2 3 4), got {scales}')
    if max_train_images is not None and max_train_images < 1:
        raise ValueError(f'max_train_images must be >= 1, got {max_train_images}')
    os.makedirs(out_dir, exist_ok=True)
    with _dir_lock(out_dir):
        if overwrite:
            for entry in os.listdir(out_dir):
                if _OWNED.match(entry) or entry == MARKER:
                    remove_path(osp.join(out_dir, entry))
        else:
            existing = _existing_result(out_dir, scales, max_train_images)
            if existing is not None:
                return existing

        for entry in os.listdir(out_dir):  # left by a killed build (we hold the lock)
            if entry.startswith('.demo_build_') and osp.isdir(osp.join(out_dir, entry)):
                shutil.rmtree(osp.join(out_dir, entry), ignore_errors=True)
        tmp = tempfile.mkdtemp(prefix='.demo_build_', dir=out_dir)
        try:
            num_train = _write_split(tmp, 'train_HR_sub', {s: f'train_LR_X{s}_sub' for s in scales},
                                     train_patches(max_train_images))
            num_val = _write_split(tmp, 'val_HR', {s: f'val_LR_X{s}' for s in scales}, val_images())
            for entry in sorted(os.listdir(tmp)):
                os.replace(osp.join(tmp, entry), osp.join(out_dir, entry))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        marker = {'version': _FORMAT_VERSION, 'scales': scales, 'max_train_images': max_train_images,
                  'num_train': num_train, 'num_val': num_val}
        with open(osp.join(out_dir, MARKER + '.tmp'), 'w') as f:
            json.dump(marker, f)
        os.replace(osp.join(out_dir, MARKER + '.tmp'), osp.join(out_dir, MARKER))
    return {**demo_paths(out_dir, scales), 'scales': scales, 'num_train': num_train, 'num_val': num_val}
