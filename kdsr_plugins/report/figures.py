"""The report's pictures: validation curves per method and a crop grid of LR, SR outputs and HR."""
from __future__ import annotations

import glob
import math
import os
import os.path as osp
import re
import textwrap
from dataclasses import dataclass

import cv2
import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt
import numpy as np

from kdsr_plugins.report.summary import Group, final_values, mean_curve

IMAGE_EXTS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')


def plot_curves(groups: list[Group], dataset: str, path: str, metric: str = 'psnr', title: str | None = None,
                teacher_dataset: str | None = None) -> bool:
    """Mean validation curve per method with a ±1 sample-std band; teachers' test values as dashed lines.

    Args:
        groups: Groups in display order (teachers are drawn as horizontal lines only).
        dataset: Validation dataset of the curves.
        path: Output PNG.
        metric: Metric to plot.
        title: Figure title.
        teacher_dataset: Test dataset of the teacher lines (default: ``dataset``).

    Returns:
        Whether a figure was written (``False`` when no run has a curve).
    """
    fig, ax = plt.subplots(figsize=(7.5, 4.6))  # legend outside, right
    drawn = False
    for i, group in enumerate(g for g in groups if not g.teacher):
        iters, means, stds, n = mean_curve(group, dataset, metric)
        if not iters:
            continue
        color = plt.get_cmap('tab10')(i % 10)
        label = textwrap.shorten(group.label, 48, placeholder='…')
        ax.plot(iters, means, marker='o', ms=3, lw=1.5, color=color, label=f'{label} (n={n})')
        if any(s is not None for s in stds):
            spread = np.array([s if s is not None else 0.0 for s in stds])
            ax.fill_between(iters, np.array(means) - spread, np.array(means) + spread, color=color, alpha=0.18, lw=0)
        drawn = True
    if not drawn:
        plt.close(fig)
        return False
    for j, group in enumerate(g for g in groups if g.teacher):
        values = final_values(group, teacher_dataset or dataset, metric)
        if values:
            ax.axhline(float(np.mean(list(values.values()))), ls='--', lw=1, color=plt.get_cmap('Greys')(0.5 + 0.2 * j),
                       label=f'{group.label} (test)')
    ax.set_xlabel('iteration')
    ax.set_ylabel(f'{metric.upper()} (Y)' + (' [dB]' if metric == 'psnr' else ''))
    ax.set_title(title or f'{dataset}: validation {metric.upper()} vs iteration (mean ± sample std over seeds)',
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches='tight')
    plt.close(fig)
    return True


# ---------------------------------------------------------------------------------------------- grid
def _shortest(paths: list[str]) -> str | None:
    return min(paths, key=lambda p: (len(osp.basename(p)), p)) if paths else None


_SCALE_SUFFIX = re.compile(r'x\d+$')


def image_key(stem: str) -> str:
    """An image stem without the ``x<scale>`` suffix of EDSR/BasicSR LR names (``babyx4`` -> ``baby``)."""
    return _SCALE_SUFFIX.sub('', stem) or stem


def same_image(stem: str, image: str) -> bool:
    """Whether ``stem`` names ``image``: equal, or equal once an ``x<scale>`` suffix is removed from either."""
    return stem == image or image_key(stem) == image_key(image)


def sr_image_path(folder: str, test_name: str | None, image: str, dataset: str | None = None) -> str | None:
    """``<folder>/visualization/<dataset>/<image>_<suffix>.png`` (BasicSR's suffix defaults to the test name).

    The exact ``<image>_<test_name>.png`` is preferred; otherwise the shortest ``<image>_*.png``;
    otherwise the same with ``<image>`` matched up to an ``x<scale>`` suffix (BasicSR names outputs
    after the LR file, ``babyx4_<suffix>.png``, which ``--grid-image baby`` must find).
    """
    vis = osp.join(folder, 'visualization')
    datasets = [dataset] if dataset else sorted(d for d in os.listdir(vis) if osp.isdir(osp.join(vis, d))) \
        if osp.isdir(vis) else []
    for ds in datasets:
        if test_name and osp.isfile(exact := osp.join(vis, ds, f'{image}_{test_name}.png')):
            return exact
        found = _shortest(glob.glob(osp.join(vis, glob.escape(ds), glob.escape(image) + '_*.png')))
        if found:
            return found
    for ds in datasets:
        candidates = []
        for path in glob.glob(osp.join(vis, glob.escape(ds), '*_*.png')):
            stem = osp.splitext(osp.basename(path))[0]
            if test_name and stem.endswith(f'_{test_name}'):
                name = stem[:-len(test_name) - 1]
            else:
                name = stem.rsplit('_', 1)[0]
            if same_image(name, image):
                candidates.append((not (test_name and stem.endswith(f'_{test_name}')), len(stem), path))
        if candidates:
            return min(candidates)[2]
    return None


def list_sr_images(folder: str, test_name: str | None, dataset: str | None = None) -> list[str]:
    """Image stems saved in a test run's visualization folder (suffix ``_<test_name>`` removed)."""
    vis = osp.join(folder, 'visualization')
    if not osp.isdir(vis):
        return []
    datasets = [dataset] if dataset else sorted(os.listdir(vis))
    stems = set()
    for ds in datasets:
        for path in glob.glob(osp.join(vis, glob.escape(ds), '*.png')):
            stem = osp.splitext(osp.basename(path))[0]
            if test_name and stem.endswith(f'_{test_name}'):
                stems.add(stem[:-len(test_name) - 1])
            elif '_' in stem:
                stems.add(stem.rsplit('_', 1)[0])
    return sorted(stems)


def find_image(source: str | None, image: str) -> str | None:
    """A file itself, or ``<folder>/<image>.<ext>``, else the image of the same name up to an
    ``x<scale>`` suffix (``baby`` finds ``babyx4.png`` in an LR folder, ``babyx4`` finds ``baby.png``
    in an HR folder); ``babyface.png`` is not ``baby``."""
    if not source:
        return None
    if osp.isfile(source):
        return source
    for ext in IMAGE_EXTS:
        if osp.isfile(path := osp.join(source, image + ext)):
            return path
    if not osp.isdir(source):
        return None
    return _shortest([osp.join(source, f) for f in sorted(os.listdir(source))
                      if f.lower().endswith(IMAGE_EXTS) and same_image(osp.splitext(f)[0], image)])


def read_bgr(path: str) -> np.ndarray:
    """An image as 3-channel BGR uint8 (as BasicSR writes and scores it)."""
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f'Cannot read image {path}')
    return img


def textured_crop(img: np.ndarray, size: int, align: int = 1) -> tuple[int, int]:
    """Top-left ``(y, x)`` of the ``size`` x ``size`` window with the largest Sobel gradient energy.

    Args:
        img: BGR or grey image.
        size: Window side (clipped to the image).
        align: Positions are multiples of this (the scale, so the LR crop is exact).
    """
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.ndim == 3 else img
    gray = gray.astype(np.float64)
    energy = cv2.Sobel(gray, cv2.CV_64F, 1, 0, ksize=3) ** 2 + cv2.Sobel(gray, cv2.CV_64F, 0, 1, ksize=3) ** 2
    energy[:align, :] = energy[-align:, :] = 0  # ignore the border rows/columns (Sobel padding)
    energy[:, :align] = energy[:, -align:] = 0
    integral = cv2.integral(energy)
    h, w = gray.shape
    ys = np.arange(0, h - size + 1, align)[:, None]
    xs = np.arange(0, w - size + 1, align)[None, :]
    sums = integral[ys + size, xs + size] - integral[ys, xs + size] - integral[ys + size, xs] + integral[ys, xs]
    iy, ix = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(ys[iy, 0]), int(xs[0, ix])


def y_psnr(img: np.ndarray, ref: np.ndarray, crop_border: int) -> float:
    """BasicSR's ``calculate_psnr`` on the Y channel (both images cut to their common size)."""
    from basicsr.metrics.psnr_ssim import calculate_psnr

    h, w = min(img.shape[0], ref.shape[0]), min(img.shape[1], ref.shape[1])
    return float(calculate_psnr(img[:h, :w], ref[:h, :w], crop_border, input_order='HWC', test_y_channel=True))


@dataclass
class Tile:
    """One picture of the grid.

    Attributes:
        label: Text above the tile.
        image: BGR uint8 image (full size; cropped when drawn unless ``whole``).
        whole: Draw the whole image (with the crop box) instead of the crop.
        lr: The image is the LR input (cropped at the LR scale, nearest-upscaled).
    """

    label: str
    image: np.ndarray
    whole: bool = False
    lr: bool = False


def crop_tile(tile: Tile, y: int, x: int, size: int, scale: int) -> np.ndarray:
    """The crop of a tile as RGB (LR: the matching LR area, nearest-upscaled to ``size``)."""
    img = tile.image
    if tile.whole:
        img = img.copy()
        thick = max(2, round(max(img.shape[:2]) / 200))
        cv2.rectangle(img, (x, y), (x + size - 1, y + size - 1), (0, 0, 255), thick)
    elif tile.lr:
        s = size // scale
        img = img[y // scale:y // scale + s, x // scale:x // scale + s]
        img = cv2.resize(img, (img.shape[1] * scale, img.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
    else:
        img = img[y:y + size, x:x + size]
    return np.ascontiguousarray(img[..., ::-1])


def draw_grid(tiles: list[Tile], crop: tuple[int, int, int], scale: int, path: str, title: str | None = None,
              cols: int | None = None) -> None:
    """Write the tiles in a grid, each with its label above.

    Args:
        tiles: Tiles in order.
        crop: ``(y, x, size)`` in HR pixels.
        scale: SR scale (LR tiles).
        path: Output PNG.
        title: Figure title.
        cols: Tiles per row (default: up to 7).
    """
    y, x, size = crop
    cols = cols or min(len(tiles), 7)
    rows = math.ceil(len(tiles) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 2.6 * rows + (0.4 if title else 0)), squeeze=False)
    for ax in axes.flat:
        ax.axis('off')
    for ax, tile in zip(axes.flat, tiles):
        ax.imshow(crop_tile(tile, y, x, size, scale), interpolation='nearest')
        ax.set_title('\n'.join(textwrap.fill(line, 28) for line in tile.label.split('\n')), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
