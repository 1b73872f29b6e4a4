"""Image-file facts the start-up data checks and the data preparation share: extensions, header shapes, previews."""
from __future__ import annotations

import struct
from collections.abc import Sequence

import cv2

#: Image extensions accepted in input folders (BasicSR's disk backend reads any of them).
IMG_EXTS = ('.png', '.bmp', '.jpg', '.jpeg', '.tif', '.tiff', '.webp', '.ppm', '.pgm')

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
# PNG colour type -> channels as cv2.IMREAD_UNCHANGED returns them (palette images become BGR).
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}


def png_header_shape(path: str) -> tuple[int, int, int] | None:
    """(h, w, c) of a PNG read from its IHDR chunk, without decoding; None if not a PNG.

    ``c`` is the channel count ``cv2.imread(path, cv2.IMREAD_UNCHANGED)`` returns.
    """
    with open(path, 'rb') as f:
        head = f.read(26)
    if len(head) < 26 or head[:8] != PNG_SIGNATURE or head[12:16] != b'IHDR':
        return None
    width, height = struct.unpack('>II', head[16:24])
    return height, width, _PNG_CHANNELS.get(head[25], 4)


def image_shape(path: str) -> tuple[int, int, int]:
    """(h, w, c) of an image file: PNG header if possible, otherwise a full decode.

    Raises:
        ValueError: the file cannot be read as an image.
    """
    shape = png_header_shape(path)
    if shape is not None:
        return shape
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f'cannot read image: {path}')
    return (img.shape[0], img.shape[1], 1 if img.ndim == 2 else img.shape[2])


def preview(items: Sequence[str], n: int = 5) -> str:
    """Comma-joined first ``n`` items plus a count of the rest, for error messages."""
    items = list(items)
    text = ', '.join(str(i) for i in items[:n])
    if len(items) > n:
        text += f', ... ({len(items)} in total)'
    return text
