"""File helpers of the data-preparation modules: image listing, reading and writing, overwrite guard.

Image extensions, header shapes and the error-message preview live in :mod:`kdsr_plugins.core.image_files`
(the start-up data checks use them too).
"""
from __future__ import annotations

import os
import os.path as osp
import shutil
from collections.abc import Iterable, Sequence

import cv2
import numpy as np

from kdsr_plugins.core.image_files import IMG_EXTS, PNG_SIGNATURE, image_shape


def list_images(folder: str, exts: Sequence[str] = IMG_EXTS) -> list[str]:
    """Sorted file names (not paths) of the images directly inside ``folder``.

    Args:
        folder: Folder to scan (not recursive).
        exts: Accepted lower-case extensions.

    Raises:
        FileNotFoundError: ``folder`` does not exist or is not a folder.
    """
    if not osp.isdir(folder):
        raise FileNotFoundError(f'folder not found: {folder}')
    return sorted(f for f in os.listdir(folder)
                  if osp.splitext(f)[1].lower() in exts and osp.isfile(osp.join(folder, f)))


def non_image_files(folder: str, exts: Sequence[str] = IMG_EXTS) -> list[str]:
    """Sorted names of entries of ``folder`` that are not images (BasicSR's disk backend would read them)."""
    return sorted(f for f in os.listdir(folder) if osp.splitext(f)[1].lower() not in exts)


def image_nbytes(path: str) -> int:
    """Raw (decoded) size in bytes of an image file, 8-bit assumed for non-PNG files."""
    h, w, c = image_shape(path)
    with open(path, 'rb') as f:
        head = f.read(26)
    depth_bytes = 2 if head[:8] == PNG_SIGNATURE and head[24] == 16 else 1
    return h * w * c * depth_bytes


def read_image(path: str, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    """``cv2.imread`` that raises instead of returning None.

    Raises:
        ValueError: the file is missing or cannot be decoded.
    """
    img = cv2.imread(path, flags)
    if img is None:
        raise ValueError(f'cannot read image: {path}')
    return img


def write_png(path: str, img: np.ndarray, compress_level: int = 1) -> None:
    """Write a BGR (or grey) uint8 image as PNG.

    Raises:
        OSError: OpenCV could not write the file.
    """
    if not cv2.imwrite(path, img, [cv2.IMWRITE_PNG_COMPRESSION, compress_level]):
        raise OSError(f'could not write image: {path}')


def remove_path(path: str) -> None:
    """Remove a file, a symlink or a folder tree; nothing if absent."""
    if osp.islink(path) or osp.isfile(path):
        os.remove(path)
    elif osp.isdir(path):
        shutil.rmtree(path)


def guard_outputs(paths: Iterable[str], overwrite: bool, hint: str = 'pass overwrite=True') -> None:
    """Refuse to replace existing outputs, or remove them when ``overwrite`` is set.

    Args:
        paths: Output files or folders that are about to be created.
        overwrite: Remove existing ones instead of refusing.
        hint: How the caller enables overwriting (shown in the error message).

    Raises:
        FileExistsError: some outputs exist and ``overwrite`` is False.
    """
    existing = [p for p in paths if osp.lexists(p)]
    if not existing:
        return
    if not overwrite:
        raise FileExistsError(f'output already exists: {", ".join(existing)} ({hint} to rebuild)')
    for p in existing:
        remove_path(p)
