"""Real-photo SR set built offline from a checksummed manifest of natural photographs.

The manifest (JSON, committed in the repository: ``scripts/photo_manifest.json``) lists every
source file and what is done with it::

    {"format": 1, "max_pixels": 2000000, "mod": 12, "scales": [4], "crop_size": 480, "step": 240,
     "photos": [{"name": "lomiri_Bridge", "split": "train",
                 "source": {"kind": "deb", "package": "lomiri-wallpapers-16.04",
                            "version": "20.04.0-2", "path": "/usr/share/backgrounds/Bridge.jpg"},
                 "sha256": "<hex of the source file>", "source_size": [w, h],
                 "resize_to": [w2, h2] or null, "out_size": [w3, h3],
                 "out_sha256": "<hex of the written HR PNG>"}, ...]}

``source.kind`` is ``deb`` (a file of an installed Debian package; ``--root`` may point at a
folder where the ``.deb`` files were unpacked with ``dpkg-deb -x`` instead) or ``skimage`` (a
file of ``skimage/data``). Every source is checked against its SHA-256 before anything is
written; a missing or different file stops the build with the list of offenders.

Processing of each photo: decode as 8-bit BGR (``cv2.IMREAD_COLOR |
cv2.IMREAD_IGNORE_ORIENTATION``, so no EXIF rotation), downscale once with ``cv2.INTER_AREA`` to
``resize_to`` when the photo has more than ``max_pixels`` pixels (keeps the sub-image set small
and averages away JPEG blocking and sensor noise), then crop the bottom/right border to a
multiple of ``mod`` (12: one HR image serves x2, x3 and x4). ``out_sha256`` is the SHA-256 of the
written PNG; a different value (another JPEG decoder build) is reported as a warning only.

Output (``out_dir``, default ``datasets/photos``)::

    train/DIV2K_train_HR/<name>.png           HR train photos
    train/DIV2K_train_HR_sub(.lmdb)           480x480 sub-images (step 240), via prepare_div2k
    train/DIV2K_train_LR_bicubic/X4_sub, train/DIV2K_train_LR_bicubic_X4_sub.lmdb
    val/HR/<name>.png   val/LR_bicubic/X4/<name>x4.png      (prepare_benchmark layout)
    test/HR/<name>.png  test/LR_bicubic/X4/<name>x4.png
    photo_set.json                            manifest copy + build summary (written last)

LR images are BasicSR's MATLAB bicubic (``bicubic_downsample``) as PNG.
"""
from __future__ import annotations

import hashlib
import json
import os
import os.path as osp
import sys
from collections.abc import Sequence

import cv2
import numpy as np

from kdsr_plugins.core.image_files import preview
from kdsr_plugins.data_prep.benchmark import prepare_benchmark
from kdsr_plugins.data_prep.div2k import prepare_div2k
from kdsr_plugins.data_prep.files import guard_outputs, write_png

SPLITS = ('train', 'val', 'test')
READ_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION


def sha256_file(path: str) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def source_path(source: dict, root: str = '/') -> str:
    """Local path of a manifest source (``deb``: ``root`` + path; ``skimage``: ``skimage/data`` file)."""
    kind = source.get('kind')
    if kind == 'deb':
        return osp.join(root, source['path'].lstrip('/'))
    if kind == 'skimage':
        import skimage.data
        return osp.join(osp.dirname(skimage.data.__file__), source['file'])
    raise ValueError(f'unknown source kind {kind!r} (expected deb or skimage)')


def target_size(w: int, h: int, max_pixels: int | None) -> tuple[int, int] | None:
    """``(w2, h2)`` for an INTER_AREA downscale to at most ``max_pixels``, or None if small enough."""
    if not max_pixels or w * h <= max_pixels:
        return None
    f = (max_pixels / (w * h)) ** 0.5
    return max(1, int(w * f)), max(1, int(h * f))


def process_photo(img: np.ndarray, resize_to: Sequence[int] | None, mod: int) -> np.ndarray:
    """Downscale (INTER_AREA) to ``resize_to`` = (w, h) if given, then crop bottom/right to multiples of ``mod``."""
    if resize_to is not None:
        img = cv2.resize(img, tuple(int(v) for v in resize_to), interpolation=cv2.INTER_AREA)
    h, w = img.shape[:2]
    return np.ascontiguousarray(img[:h - h % mod, :w - w % mod])


def load_manifest(path: str) -> dict:
    """Read and check a photo manifest (names unique, splits known, sha256 present)."""
    with open(path, encoding='utf-8') as f:
        man = json.load(f)
    photos = man.get('photos')
    if not isinstance(photos, list) or not photos:
        raise ValueError(f'{path}: no "photos" list')
    names = [p['name'] for p in photos]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f'{path}: duplicate photo names: {preview(dup)}')
    bad = [p['name'] for p in photos if p.get('split') not in SPLITS or len(p.get('sha256', '')) != 64]
    if bad:
        raise ValueError(f'{path}: entries without a valid split ({"/".join(SPLITS)}) or sha256: {preview(bad)}')
    shas = [p['sha256'] for p in photos]
    dup = sorted({p['name'] for p in photos if shas.count(p['sha256']) > 1})
    if dup:
        raise ValueError(f'{path}: the same source file appears twice: {preview(dup)}')
    return man


def verify_sources(man: dict, root: str = '/') -> dict[str, str]:
    """Check every source file against its SHA-256; returns ``{name: local path}``.

    Raises:
        FileNotFoundError: some sources are missing (the message names the Debian packages to
            install, with their versions).
        ValueError: some sources have another checksum.
    """
    paths, missing, wrong, pkgs = {}, [], [], set()
    for p in man['photos']:
        path = source_path(p['source'], root)
        if not osp.isfile(path):
            missing.append(path)
            if p['source']['kind'] == 'deb':
                pkgs.add(f'{p["source"]["package"]}={p["source"]["version"]}')
            continue
        digest = sha256_file(path)
        if digest != p['sha256']:
            wrong.append(f'{path} (sha256 {digest[:12]}..., manifest {p["sha256"][:12]}...)')
        paths[p['name']] = path
    if missing:
        hint = f'; install: apt-get install {" ".join(sorted(pkgs))}' if pkgs else ''
        raise FileNotFoundError(f'{len(missing)} source files missing: {preview(missing, 3)}{hint}')
    if wrong:
        raise ValueError(f'{len(wrong)} source files differ from the manifest (other package version?): '
                         f'{preview(wrong, 3)}')
    return paths


def split_dirs(out_dir: str) -> dict[str, str]:
    """HR folder of each split."""
    return {'train': osp.join(out_dir, 'train', 'DIV2K_train_HR'),
            'val': osp.join(out_dir, 'val', 'HR'),
            'test': osp.join(out_dir, 'test', 'HR')}


def build_photo_set(manifest_path: str, out_dir: str = 'datasets/photos', root: str = '/',
                    overwrite: bool = False, n_thread: int = 1, progress: bool = True) -> dict:
    """Verify the sources of a manifest and build the train LMDBs and the val/test folders.

    Returns:
        Summary dict (counts per split, LMDB paths, warnings), also written to
        ``<out_dir>/photo_set.json``.
    """
    man = load_manifest(manifest_path)
    paths = verify_sources(man, root)
    scales = [int(s) for s in man.get('scales', [4])]
    mod = int(man.get('mod', 12))
    summary_path = osp.join(out_dir, 'photo_set.json')
    dirs = split_dirs(out_dir)
    guard_outputs([osp.join(out_dir, s) for s in SPLITS] + [summary_path], overwrite,
                  hint='use --overwrite')
    for d in dirs.values():
        os.makedirs(d)
    warnings = []
    for p in man['photos']:
        img = cv2.imread(paths[p['name']], READ_FLAGS)
        if img is None:
            raise ValueError(f'cannot decode {paths[p["name"]]}')
        if p.get('source_size') and list(p['source_size']) != [img.shape[1], img.shape[0]]:
            raise ValueError(f'{p["name"]}: decoded size {img.shape[1]}x{img.shape[0]} != manifest '
                             f'{p["source_size"]}')
        out = process_photo(img, p.get('resize_to'), mod)
        dst = osp.join(dirs[p['split']], f'{p["name"]}.png')
        write_png(dst, out, compress_level=3)
        if p.get('out_sha256') and sha256_file(dst) != p['out_sha256']:
            warnings.append(f'{p["name"]}: written PNG differs from the recorded out_sha256 (decoder build?)')
    for w in warnings:
        print(f'warning: {w}', file=sys.stderr)
    bench = prepare_benchmark(out_dir, ['val', 'test'], scales, progress=progress)
    train = prepare_div2k(osp.join(out_dir, 'train'), osp.join(out_dir, 'train'), scales,
                          crop_size=int(man.get('crop_size', 480)), step=int(man.get('step', 240)),
                          n_thread=n_thread, progress=progress, make_lr=True)
    counts = {s: sum(p['split'] == s for p in man['photos']) for s in SPLITS}
    summary = {
        'manifest': osp.abspath(manifest_path), 'manifest_sha256': sha256_file(manifest_path),
        'counts': counts, 'num_train_subimages': train['num_subimages'],
        'train_gt_lmdb': train['hr_lmdb'], 'train_lq_lmdb': {str(s): train['lr_lmdb'][s] for s in scales},
        'val': {str(s): bench['val'][s] for s in scales}, 'test': {str(s): bench['test'][s] for s in scales},
        'warnings': warnings, 'photos': man['photos'],
    }
    with open(summary_path, 'w', encoding='utf-8') as f:
        json.dump(summary, f, indent=1)
    return summary
