"""DIV2K training data in BasicSR's recipe: sub-images, then LMDBs (platform spec §7).

Re-implements BasicSR's ``scripts/data_preparation/extract_subimages.py`` and
``create_lmdb.py::create_lmdb_for_div2k`` (not shipped in the pip package).

Input layout (``input_dir``)::

    DIV2K_train_HR/0001.png ...
    DIV2K_train_LR_bicubic/X2/0001x2.png ...   (also accepted: X2/0001.png)

HR-only input: when ``DIV2K_train_LR_bicubic`` does not exist (or with ``make_lr=True`` /
``--make-lr``) the bicubic LR is made here. Each HR image is read as 8-bit BGR (any format in
``IMG_EXTS``), mod-cropped to the least common multiple of the scales (bottom/right border), and
``LR_s = bicubic_downsample(HR, s)`` is computed on the **whole** image; LR sub-images are then
cut from ``LR_s`` at ``(y/s, x/s)`` exactly as from a DIV2K ``X{s}`` file. This is BasicSR's recipe
(DIV2K's LR sets are bicubic downscalings of the whole mod-cropped image, and
``extract_subimages.py`` cuts both afterwards); it is not the same as downscaling each HR
sub-image on its own, which would differ near every sub-image border (the x4 kernel reaches 8 HR
pixels beyond the patch edge) and does not match what the network sees at test time.
All sub-images, HR and LR, are written as PNG whatever the input format.

Output layout (``output_dir``, may equal ``input_dir``)::

    DIV2K_train_HR_sub/0001_s001.png ...
    DIV2K_train_LR_bicubic/X2_sub/0001_s001.png ...
    DIV2K_train_HR_sub.lmdb   DIV2K_train_LR_bicubic_X2_sub.lmdb   (keys 0001_s001, ...)

HR sub-images are ``crop_size`` squares every ``step`` pixels plus a last one flush with the
border when more than ``thresh_size`` pixels remain; LR sub-images are the same regions divided
by the scale (``crop_size / s``, ``step / s``), so GT and LQ keys and contents match.
"""
from __future__ import annotations

import math
import os
import os.path as osp
from collections.abc import Sequence
from functools import reduce
from multiprocessing import Pool

import cv2
from tqdm import tqdm

from kdsr_plugins.core.image_files import IMG_EXTS, image_shape, preview
from kdsr_plugins.data_prep.degrade import bicubic_downsample, modcrop
from kdsr_plugins.data_prep.files import guard_outputs, list_images, read_image, write_png
from kdsr_plugins.data_prep.lmdb_tools import write_lmdb

HR_DIRNAME = 'DIV2K_train_HR'
LR_DIRNAME = 'DIV2K_train_LR_bicubic'


def subimage_positions(length: int, crop_size: int, step: int, thresh_size: int = 0) -> list[int]:
    """Start offsets along one axis: ``range(0, length - crop_size + 1, step)`` plus a last one.

    The last offset ``length - crop_size`` is added when more than ``thresh_size`` pixels would
    otherwise be left uncovered (BasicSR's rule).

    Raises:
        ValueError: ``length < crop_size`` or non-positive ``crop_size``/``step``.
    """
    if crop_size <= 0 or step <= 0:
        raise ValueError(f'crop_size and step must be positive, got {crop_size}, {step}')
    if length < crop_size:
        raise ValueError(f'image side {length} is smaller than crop_size {crop_size}')
    positions = list(range(0, length - crop_size + 1, step))
    if length - (positions[-1] + crop_size) > thresh_size:
        positions.append(length - crop_size)
    return positions


def subimage_grid(h: int, w: int, crop_size: int, step: int, thresh_size: int = 0) -> list[tuple[int, int]]:
    """Top-left corners ``(y, x)`` of all sub-images, row-major (the ``_s001``, ``_s002`` ... order)."""
    return [(y, x) for y in subimage_positions(h, crop_size, step, thresh_size)
            for x in subimage_positions(w, crop_size, step, thresh_size)]


def subimage_name(stem: str, index: int) -> str:
    """File name of the ``index``-th (1-based) sub-image of ``stem``, e.g. ``0001_s001.png``."""
    return f'{stem}_s{index:03d}.png'


def _lcm(values: Sequence[int]) -> int:
    return reduce(lambda a, b: a * b // math.gcd(a, b), values, 1)


def _extract_one(job: tuple) -> int:
    """Worker: cut one HR image and its LR images into sub-images; returns the count.

    ``make_lr_scales`` (last job item) lists the scales whose LR is made from the HR image here
    (HR read as 8-bit BGR and mod-cropped to the lcm of all scales first).
    """
    stem, sources, hr_out, lr_outs, crop_size, step, thresh_size, compress_level, make_lr_scales = job
    if make_lr_scales:
        hr = modcrop(read_image(sources[1], cv2.IMREAD_COLOR), _lcm(list(lr_outs)))
    else:
        hr = read_image(sources[1])
    grid = subimage_grid(hr.shape[0], hr.shape[1], crop_size, step, thresh_size)
    images = {s: (hr if s == 1 else read_image(p)) for s, p in sources.items()}
    for s in make_lr_scales:
        images[s] = bicubic_downsample(hr, s)
    for s, img in images.items():
        out_dir = hr_out if s == 1 else lr_outs[s]
        size = crop_size // s
        for idx, (y, x) in enumerate(grid, 1):
            patch = img[y // s:y // s + size, x // s:x // s + size, ...]
            write_png(osp.join(out_dir, subimage_name(stem, idx)), patch, compress_level)
    return len(grid)


def _lr_file(lr_dir: str, stem: str, scale: int, names: set[str]) -> str | None:
    for name in (f'{stem}x{scale}.png', f'{stem}.png'):
        if name in names:
            return osp.join(lr_dir, name)
    return None


def find_div2k_pairs(input_dir: str, scales: Sequence[int], hr_dirname: str = HR_DIRNAME,
                     lr_dirname: str = LR_DIRNAME, hr_only: bool = False) -> dict[str, dict[int, str]]:
    """Locate HR images and their LR counterparts; validate the layout and the sizes.

    Args:
        input_dir: Folder holding ``DIV2K_train_HR`` and ``DIV2K_train_LR_bicubic``.
        scales: Scales whose ``X{s}`` LR folders are needed.
        hr_dirname: HR folder name.
        lr_dirname: LR folder name.
        hr_only: Only locate the HR images (any format in ``IMG_EXTS``; the LR is generated).

    Returns:
        ``{stem: {1: hr_path, s: lr_path, ...}}`` sorted by stem (only ``{1: hr_path}`` when
        ``hr_only``).

    Raises:
        FileNotFoundError: a folder or LR file is missing (the message lists what was expected).
        ValueError: an LR image is not exactly ``1/s`` of its HR image.
    """
    expected = (f'expected {osp.join(input_dir, hr_dirname)}/0001.png ... and '
                + ', '.join(f'{osp.join(input_dir, lr_dirname, f"X{s}")}/0001x{s}.png ...' for s in scales))
    hr_dir = osp.join(input_dir, hr_dirname)
    if not osp.isdir(input_dir):
        raise FileNotFoundError(f'DIV2K input folder not found: {input_dir} ({expected})')
    if not osp.isdir(hr_dir):
        raise FileNotFoundError(f'missing HR folder {hr_dir} ({expected})')
    hr_names = list_images(hr_dir, IMG_EXTS if hr_only else ('.png',))
    if not hr_names:
        raise FileNotFoundError(f'no {"" if hr_only else "PNG "}images in {hr_dir} ({expected})')
    stems = [osp.splitext(n)[0] for n in hr_names]
    dup = sorted({t for t in stems if stems.count(t) > 1})
    if dup:
        raise ValueError(f'several HR images share a stem in {hr_dir}: {preview(dup)}')
    pairs = {osp.splitext(n)[0]: {1: osp.join(hr_dir, n)} for n in hr_names}
    if hr_only:
        return dict(sorted(pairs.items()))
    for s in scales:
        lr_dir = osp.join(input_dir, lr_dirname, f'X{s}')
        if not osp.isdir(lr_dir):
            raise FileNotFoundError(f'missing LR folder {lr_dir} ({expected}; to generate bicubic LR from HR '
                                    f'instead, remove {osp.join(input_dir, lr_dirname)} or pass make_lr=True / '
                                    f'--make-lr)')
        names = set(list_images(lr_dir, ('.png',)))
        missing = []
        for stem, entry in pairs.items():
            path = _lr_file(lr_dir, stem, s, names)
            if path is None:
                missing.append(f'{stem}x{s}.png')
            else:
                entry[s] = path
        if missing:
            raise FileNotFoundError(f'LR images missing in {lr_dir}: {preview(missing)}')
    bad = []
    for stem, entry in pairs.items():
        h, w, _ = image_shape(entry[1])
        for s in scales:
            lh, lw, _ = image_shape(entry[s])
            if (lh * s, lw * s) != (h, w):
                bad.append(f'{osp.basename(entry[s])} {lh}x{lw} vs HR {h}x{w}')
    if bad:
        raise ValueError(f'LR size is not HR size / scale (HR must be mod-cropped): {preview(bad, 3)}')
    return dict(sorted(pairs.items()))


def div2k_output_paths(output_dir: str, scales: Sequence[int]) -> dict:
    """Paths ``prepare_div2k`` writes: ``hr_sub``, ``hr_lmdb``, ``lr_sub[s]``, ``lr_lmdb[s]``."""
    return {
        'hr_sub': osp.join(output_dir, f'{HR_DIRNAME}_sub'),
        'hr_lmdb': osp.join(output_dir, f'{HR_DIRNAME}_sub.lmdb'),
        'lr_sub': {s: osp.join(output_dir, LR_DIRNAME, f'X{s}_sub') for s in scales},
        'lr_lmdb': {s: osp.join(output_dir, f'{LR_DIRNAME}_X{s}_sub.lmdb') for s in scales},
    }


def prepare_div2k(input_dir: str | os.PathLike,
                  output_dir: str | os.PathLike,
                  scales: Sequence[int] = (2, 3, 4),
                  crop_size: int = 480,
                  step: int = 240,
                  thresh_size: int = 0,
                  n_thread: int = 1,
                  overwrite: bool = False,
                  make_lmdb: bool = True,
                  compress_level: int = 3,
                  progress: bool = True,
                  make_lr: bool | None = None) -> dict:
    """Extract DIV2K HR/LR sub-images and build their LMDBs (BasicSR's recipe).

    Args:
        input_dir: Folder with ``DIV2K_train_HR`` and ``DIV2K_train_LR_bicubic/X{s}`` (the LR
            folder may be absent: see ``make_lr``).
        output_dir: Where sub-image folders and LMDBs go (may be ``input_dir``).
        scales: LR scales to process.
        crop_size: HR sub-image size (LR: ``crop_size // s``); a multiple of every scale.
        step: HR stride; a multiple of every scale.
        thresh_size: Add a border-flush last crop when more than this many pixels remain.
        n_thread: Worker processes for extraction (1 = in this process).
        overwrite: Replace existing output folders/LMDBs instead of refusing.
        make_lmdb: Also build the LMDBs (keys = sub-image stems).
        compress_level: PNG compression of the sub-image files (BasicSR's script uses 3).
        progress: Show tqdm progress bars.
        make_lr: Generate the bicubic LR from HR (module docstring) instead of reading
            ``X{s}`` files. ``None`` (default): generate iff ``DIV2K_train_LR_bicubic`` does not
            exist in ``input_dir``.

    Returns:
        ``div2k_output_paths(output_dir, scales)`` plus ``num_images``, ``num_subimages`` and
        ``lr_generated`` (bool).

    Raises:
        FileNotFoundError: missing input folder/files.
        FileExistsError: outputs exist and ``overwrite`` is False.
        ValueError: bad crop/step/scales or inconsistent image sizes.
    """
    input_dir, output_dir = os.fspath(input_dir), os.fspath(output_dir)
    scales = sorted(set(int(s) for s in scales))
    if not scales or min(scales) < 1:
        raise ValueError(f'invalid scales: {scales}')
    for s in scales:
        if crop_size % s or step % s or thresh_size % s:
            raise ValueError(f'crop_size {crop_size}, step {step} and thresh_size {thresh_size} must be '
                             f'multiples of scale {s}')
    if make_lr is None:
        make_lr = osp.isdir(input_dir) and not osp.exists(osp.join(input_dir, LR_DIRNAME))
    pairs = find_div2k_pairs(input_dir, scales, hr_only=make_lr)
    lcm = _lcm(scales) if make_lr else 1
    small = [stem for stem, e in pairs.items()
             if min(d - d % lcm for d in image_shape(e[1])[:2]) < crop_size]
    if small:
        raise ValueError(f'HR images smaller than crop_size {crop_size}: {preview(small)}')

    paths = div2k_output_paths(output_dir, scales)
    targets = [paths['hr_sub'], *paths['lr_sub'].values()]
    if make_lmdb:
        targets += [paths['hr_lmdb'], *paths['lr_lmdb'].values()]
    guard_outputs(targets, overwrite, hint='use overwrite=True / --overwrite')
    for folder in [paths['hr_sub'], *paths['lr_sub'].values()]:
        os.makedirs(folder)

    make_lr_scales = tuple(scales) if make_lr else ()
    jobs = [(stem, entry, paths['hr_sub'], paths['lr_sub'], crop_size, step, thresh_size, compress_level,
             make_lr_scales) for stem, entry in pairs.items()]
    bar = tqdm(total=len(jobs), desc='DIV2K sub-images', unit='img', disable=not progress)
    total = 0
    if n_thread > 1:
        with Pool(min(n_thread, len(jobs))) as pool:
            for count in pool.imap_unordered(_extract_one, jobs):
                total += count
                bar.update(1)
    else:
        for job in jobs:
            total += _extract_one(job)
            bar.update(1)
    bar.close()

    if make_lmdb:
        write_lmdb(paths['hr_sub'], paths['hr_lmdb'], progress=progress)
        for s in scales:
            write_lmdb(paths['lr_sub'][s], paths['lr_lmdb'][s], progress=progress)
    return {**paths, 'num_images': len(pairs), 'num_subimages': total, 'lr_generated': bool(make_lr)}
