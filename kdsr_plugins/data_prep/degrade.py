"""Bicubic degradation as in BasicSR's data-preparation scripts (MATLAB-style ``imresize``)."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from basicsr.utils.matlab_functions import imresize


@contextlib.contextmanager
def single_thread_torch() -> Iterator[None]:
    """Run torch on one intra-op thread inside the block.

    ``imresize`` loops over rows with tiny matrix-vector products; extra threads only add
    overhead (about 2.5x slower with 2 threads on a loaded 2-core machine).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom/right border so that height and width are multiples of ``scale``.

    Same as ``basicsr.data.transforms.mod_crop`` (top-left corner kept), which is also the crop
    ``PairedImageDataset`` applies to GT in the val phase.

    Args:
        img: HWC or HW image.
        scale: Scale factor.

    Returns:
        A contiguous copy of the cropped image.
    """
    if img.ndim not in (2, 3):
        raise ValueError(f'expected an HW or HWC image, got shape {img.shape}')
    h, w = img.shape[:2]
    return np.ascontiguousarray(img[:h - h % scale, :w - w % scale, ...])


def bicubic_downsample(img: np.ndarray, scale: int) -> np.ndarray:
    """Bicubic LR image: ``imresize(img / 255., 1 / scale)``, rounded and clipped to uint8.

    This is BasicSR's MATLAB-compatible bicubic kernel with antialiasing, the degradation of
    the DIV2K ``*_LR_bicubic`` sets and of the benchmark LR images. Channel order is kept.

    Args:
        img: uint8 HWC (any channel order) or HW image whose height and width are multiples of
            ``scale`` (apply :func:`modcrop` first).
        scale: Integer scale factor.

    Returns:
        uint8 image of size ``(h // scale, w // scale)``.

    Raises:
        ValueError: non-uint8 input or a size that is not a multiple of ``scale``.
    """
    if img.dtype != np.uint8:
        raise ValueError(f'bicubic_downsample expects uint8, got {img.dtype}')
    h, w = img.shape[:2]
    if h % scale or w % scale:
        raise ValueError(f'image size {h}x{w} is not a multiple of scale {scale}; modcrop it first')
    with single_thread_torch():
        lr = imresize(img.astype(np.float64) / 255., 1 / scale)
    return np.clip(np.round(lr * 255), 0, 255).astype(np.uint8)
