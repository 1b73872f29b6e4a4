"""Benchmark test sets (Set5, Set14, B100, Urban100, Manga109): layout checks, LR generation, options.

Layout under ``root``::

    <Set>/HR/<stem>.png
    <Set>/LR_bicubic/X{s}/<stem>x{s}.png     (EDSR naming, filename_tmpl '{}x{s}')
                    or  /<stem>.png          (same names, filename_tmpl '{}')

Both LR namings are supported: the one found on disk is detected and returned as BasicSR's
``filename_tmpl`` (the template maps an HR stem to the LR stem). LR images we generate use the
EDSR naming and are always lossless PNG, whatever the HR format. BasicSR's disk backend pairs
``<tmpl(stem)><ext of the GT file>``, so a set whose HR folder holds other formats (JPEG, ...)
gets a lossless copy ``<Set>/HR_png/<stem>.png`` (the pixels ``cv2.IMREAD_COLOR`` decodes, which
is what BasicSR reads) when its LR is generated; that folder is then the set's ``dataroot_gt``.
HR images need not be mod-cropped: LR is made from the mod-cropped HR, and
``PairedImageDataset`` crops GT to ``LQ size x scale`` (top-left, same as mod-crop) in the
val/test phase, so the plain ``HR`` folder serves every scale.
"""
from __future__ import annotations

import os
import os.path as osp
from collections.abc import Sequence

import cv2
from tqdm import tqdm

from kdsr_plugins.core.image_files import image_shape, preview
from kdsr_plugins.data_prep.degrade import bicubic_downsample, modcrop
from kdsr_plugins.data_prep.files import guard_outputs, list_images, non_image_files, read_image, write_png

BENCHMARK_SETS = ('Set5', 'Set14', 'B100', 'Urban100', 'Manga109')


def hr_folder(root: str, set_name: str) -> str:
    """``<root>/<set_name>/HR``."""
    return osp.join(root, set_name, 'HR')


def hr_png_folder(root: str, set_name: str) -> str:
    """``<root>/<set_name>/HR_png``: lossless copy of an HR folder holding non-PNG images."""
    return osp.join(root, set_name, 'HR_png')


def _has_non_png(hr_dir: str) -> bool:
    return any(osp.splitext(n)[1].lower() != '.png' for n in list_images(hr_dir))


def gt_folder(root: str, set_name: str) -> str:
    """The set's GT folder for BasicSR: ``HR_png`` if ``HR`` holds non-PNG images and the copy exists, else ``HR``."""
    hr_dir, png_dir = hr_folder(root, set_name), hr_png_folder(root, set_name)
    if osp.isdir(hr_dir) and osp.isdir(png_dir) and _has_non_png(hr_dir):
        return png_dir
    return hr_dir


def write_hr_png(hr_dir: str, png_dir: str, overwrite: bool = False, progress: bool = True) -> list[str]:
    """Lossless PNG copy of every image of ``hr_dir`` (decoded with ``cv2.IMREAD_COLOR``) in ``png_dir``.

    Raises:
        ValueError: two HR files share a stem (``a.png`` and ``a.jpg``), or stray files.
    """
    names = _check_only_images(hr_dir)
    stems = [osp.splitext(n)[0] for n in names]
    dup = sorted({t for t in stems if stems.count(t) > 1})
    if dup:
        raise ValueError(f'several HR images share a stem in {hr_dir}: {preview(dup)}')
    guard_outputs([png_dir], overwrite, hint='use overwrite=True / --overwrite')
    os.makedirs(png_dir)
    for name in tqdm(names, desc=f'HR png {osp.basename(osp.dirname(hr_dir))}', unit='img', disable=not progress,
                     leave=False):
        write_png(osp.join(png_dir, osp.splitext(name)[0] + '.png'), read_image(osp.join(hr_dir, name),
                                                                                cv2.IMREAD_COLOR))
    return [s + '.png' for s in stems]


def lr_folder(root: str, set_name: str, scale: int) -> str:
    """``<root>/<set_name>/LR_bicubic/X{scale}``."""
    return osp.join(root, set_name, 'LR_bicubic', f'X{scale}')


def _check_only_images(folder: str) -> list[str]:
    """Image names of a folder; refuses stray files, which BasicSR's disk backend would pair too."""
    extra = non_image_files(folder)
    if extra:
        raise ValueError(f'non-image entries in {folder} (BasicSR reads every file): {preview(extra)}')
    return list_images(folder)


def detect_filename_tmpl(hr_dir: str, lr_dir: str, scale: int) -> str:
    """BasicSR ``filename_tmpl`` matching the LR names of a set: ``'{}x{s}'`` or ``'{}'``.

    Raises:
        FileNotFoundError: a folder is missing, or LR files are missing under both namings.
    """
    hr_names = _check_only_images(hr_dir)
    if not hr_names:
        raise FileNotFoundError(f'no images in {hr_dir}')
    lr_names = set(_check_only_images(lr_dir))
    missing_by_tmpl = {}
    for tmpl in (f'{{}}x{scale}', '{}'):
        wanted = [tmpl.format(osp.splitext(n)[0]) + osp.splitext(n)[1] for n in hr_names]
        missing = [n for n in wanted if n not in lr_names]
        if not missing and len(lr_names) == len(hr_names):
            return tmpl
        missing_by_tmpl[tmpl] = missing
    best = min(missing_by_tmpl.values(), key=len)
    extra = f'; {len(lr_names)} LR vs {len(hr_names)} HR files' if len(lr_names) != len(hr_names) else ''
    raise FileNotFoundError(f'LR images in {lr_dir} do not match {hr_dir} (expected <stem>x{scale}.png or '
                            f'<stem>.png); missing: {preview(best) or "none"}{extra}')


def validate_benchmark_set(root: str, set_name: str, scale: int) -> str:
    """Check that a set's HR and ``X{scale}`` LR folders pair up and sizes agree.

    Every LR image must be ``HR size // scale`` (the HR image may carry a mod-crop remainder).

    Returns:
        The detected ``filename_tmpl``.

    Raises:
        FileNotFoundError: missing folders or files.
        ValueError: size mismatches or stray files.
    """
    hr_dir, lr_dir = gt_folder(root, set_name), lr_folder(root, set_name, scale)
    for folder in (hr_dir, lr_dir):
        if not osp.isdir(folder):
            raise FileNotFoundError(f'missing folder {folder} (expected {root}/<Set>/HR/*.png and '
                                    f'{root}/<Set>/LR_bicubic/X{scale}/*.png)')
    tmpl = detect_filename_tmpl(hr_dir, lr_dir, scale)
    bad = []
    for name in list_images(hr_dir):
        stem, ext = osp.splitext(name)
        h, w, _ = image_shape(osp.join(hr_dir, name))
        lr_name = tmpl.format(stem) + ext
        lh, lw, _ = image_shape(osp.join(lr_dir, lr_name))
        if (lh, lw) != (h // scale, w // scale):
            bad.append(f'{lr_name} {lh}x{lw} vs HR {h}x{w}')
    if bad:
        raise ValueError(f'LR sizes are not HR size // {scale} in {lr_dir}: {preview(bad, 3)}')
    return tmpl


def generate_lr(hr_dir: str, lr_dir: str, scale: int, filename_tmpl: str | None = None,
                overwrite: bool = False, progress: bool = True) -> list[str]:
    """Write bicubic LR images (mod-crop, then :func:`bicubic_downsample`) for every HR image, as PNG.

    The LR file is ``<tmpl(stem)>.png`` whatever the HR format (a JPEG LR would add compression
    artefacts to the degradation); pair non-PNG HR through :func:`write_hr_png`.

    Args:
        hr_dir: HR folder.
        lr_dir: LR folder to create.
        scale: Scale factor.
        filename_tmpl: LR stem template; default ``'{}x{scale}'`` (EDSR naming).
        overwrite: Replace an existing ``lr_dir``.
        progress: Show a tqdm progress bar.

    Returns:
        The written LR file names.
    """
    tmpl = filename_tmpl if filename_tmpl is not None else f'{{}}x{scale}'
    names = _check_only_images(hr_dir)
    if not names:
        raise FileNotFoundError(f'no images in {hr_dir}')
    guard_outputs([lr_dir], overwrite, hint='use overwrite=True / --overwrite')
    os.makedirs(lr_dir)
    written = []
    for name in tqdm(names, desc=f'LR x{scale} {osp.basename(osp.dirname(hr_dir))}', unit='img',
                     disable=not progress, leave=False):
        stem = osp.splitext(name)[0]
        hr = read_image(osp.join(hr_dir, name), cv2.IMREAD_COLOR)
        lr = bicubic_downsample(modcrop(hr, scale), scale)
        out = tmpl.format(stem) + '.png'
        if out in written:
            raise ValueError(f'several HR images share the stem {stem!r} in {hr_dir}')
        write_png(osp.join(lr_dir, out), lr)
        written.append(out)
    return written


def benchmark_dataset_opt(root: str | os.PathLike, set_name: str, scale: int,
                          filename_tmpl: str | None = None) -> dict:
    """BasicSR ``PairedImageDataset`` options (disk backend) for one benchmark set and scale.

    Args:
        root: Benchmark root (kept as given: BasicSR resolves dataroots against the CWD).
        set_name: Set folder name, e.g. ``Set5``.
        scale: Scale factor.
        filename_tmpl: LR template; default detected from the files on disk, ``'{}x{s}'`` if the
            LR folder cannot be read.

    Returns:
        Dict with ``name``, ``type``, ``dataroot_gt``, ``dataroot_lq``, ``filename_tmpl``,
        ``io_backend`` — ready to put under ``datasets.val`` / ``datasets.test_<n>``.
    """
    root = os.fspath(root)
    hr_dir, lr_dir = gt_folder(root, set_name), lr_folder(root, set_name, scale)
    if filename_tmpl is None:
        try:
            filename_tmpl = detect_filename_tmpl(hr_dir, lr_dir, scale)
        except (FileNotFoundError, ValueError):
            filename_tmpl = f'{{}}x{scale}'
    return {
        'name': set_name,
        'type': 'PairedImageDataset',
        'dataroot_gt': hr_dir.replace(os.sep, '/'),
        'dataroot_lq': lr_dir.replace(os.sep, '/'),
        'filename_tmpl': filename_tmpl,
        'io_backend': {'type': 'disk'},
    }


def prepare_benchmark(root: str | os.PathLike, sets: Sequence[str] = BENCHMARK_SETS,
                      scales: Sequence[int] = (4,), overwrite: bool = False,
                      progress: bool = True) -> dict[str, dict[int, dict]]:
    """Validate benchmark sets and generate missing bicubic LR folders.

    For each set and scale: an existing ``LR_bicubic/X{s}`` folder is validated (and
    regenerated only with ``overwrite``); a missing one is generated from ``HR`` as PNG. When LR
    is generated for a set whose ``HR`` holds non-PNG images, the lossless ``HR_png`` copy is
    written first (module docstring) and becomes the set's GT folder.

    Args:
        root: Benchmark root holding ``<Set>/HR``.
        sets: Set folder names.
        scales: Scale factors.
        overwrite: Regenerate existing LR folders.
        progress: Show tqdm progress bars.

    Returns:
        ``{set: {scale: benchmark_dataset_opt(...)}}``.

    Raises:
        FileNotFoundError: missing root/HR folder, or an LR folder that does not match HR.
        ValueError: size mismatches or stray files.
    """
    root = os.fspath(root)
    if not osp.isdir(root):
        raise FileNotFoundError(f'benchmark root not found: {root} (expected {root}/<Set>/HR/*.png)')
    missing = [s for s in sets if not osp.isdir(hr_folder(root, s))]
    if missing:
        raise FileNotFoundError('missing HR folders: ' + ', '.join(hr_folder(root, s) for s in missing)
                                + f' (expected {root}/<Set>/HR/*.png)')
    result: dict[str, dict[int, dict]] = {}
    for set_name in sets:
        result[set_name] = {}
        hr_dir, png_dir = hr_folder(root, set_name), hr_png_folder(root, set_name)
        generate = [s for s in scales if overwrite or not osp.exists(lr_folder(root, set_name, s))]
        if generate and _has_non_png(hr_dir) and (overwrite or not osp.isdir(png_dir)):
            write_hr_png(hr_dir, png_dir, overwrite=overwrite, progress=progress)
        for scale in scales:
            lr_dir = lr_folder(root, set_name, scale)
            if scale in generate:
                generate_lr(gt_folder(root, set_name), lr_dir, scale, overwrite=overwrite, progress=progress)
            tmpl = validate_benchmark_set(root, set_name, scale)
            result[set_name][scale] = benchmark_dataset_opt(root, set_name, scale, tmpl)
    return result
