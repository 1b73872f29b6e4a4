"""Cached teacher outputs: LMDB codec and ``KDCachedTargetDataset`` (GT, LR and targets cropped together).

A *target cache* is a BasicSR-style LMDB (``data.mdb``, ``lock.mdb``, ``meta_info.txt``) written by
``python -m kdsr_plugins.tools.cache_teacher_outputs`` with the GT keys of a training LMDB, holding
one teacher output (or the MTKD aggregator output) per HR image, plus ``kd_cache_meta.json``
(what produced it, encoding, value range). Encodings (BGR, HWC, like BasicSR images):

* ``png16`` (default): 16-bit PNG of ``(x - lo) / (hi - lo)`` with ``value_range`` [lo, hi]
  (default [-0.25, 1.25], so teacher overshoot outside [0, 1] is kept); step (hi - lo) / 65535
  = 2.3e-5, i.e. ~170 times finer than 8 bits. Values outside the range are clipped.
* ``png8``: 8-bit PNG of the output clipped to [0, 1] (step 1/255; for comparison only).
* ``npy32``: raw float32 ``.npy`` bytes (exact, about 2-3 times larger than ``png16``).
"""
from __future__ import annotations

import io
import json
import os.path as osp
import re
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np
from basicsr.data.data_util import paired_paths_from_lmdb
from basicsr.data.transforms import augment, paired_random_crop
from basicsr.utils import FileClient, bgr2ycbcr, imfrombytes, img2tensor
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data
from torchvision.transforms.functional import normalize

from kdsr_plugins.core.lmdb_io import meta_info_keys
from kdsr_plugins.core.schema import check_choice

__all__ = ['KDCachedTargetDataset', 'CACHE_META_FILE', 'ENCODINGS', 'DEFAULT_VALUE_RANGE', 'encode_target',
           'decode_target', 'read_cache_meta', 'target_roots', 'check_cached_targets']

CACHE_META_FILE = 'kd_cache_meta.json'
ENCODINGS = ('png16', 'png8', 'npy32')
DEFAULT_VALUE_RANGE = {'png16': (-0.25, 1.25), 'png8': (0.0, 1.0), 'npy32': None}
EXTENSIONS = {'png16': 'png', 'png8': 'png', 'npy32': 'npy'}
_NAME_RE = re.compile(r'^[a-z0-9_]+$')


# --------------------------------------------------------------------------------------------- codec
def encode_target(img: np.ndarray, encoding: str = 'png16', value_range: tuple[float, float] | None = None,
                  compress_level: int = 1) -> bytes:
    """Encode one ``H x W x C`` float image (BGR, ~[0, 1]) as cache bytes.

    Args:
        img: Float image, HWC, BGR channel order.
        encoding: ``png16``, ``png8`` or ``npy32``.
        value_range: [lo, hi] mapped to the integer range (PNG encodings); default per encoding.
        compress_level: PNG compression level (0-9).

    Returns:
        The encoded bytes.
    """
    check_choice(encoding, ENCODINGS, f'encoding must be one of {ENCODINGS}, got {encoding!r}')
    img = np.asarray(img, dtype=np.float32)
    if encoding == 'npy32':
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(img), allow_pickle=False)
        return buf.getvalue()
    lo, hi = value_range if value_range is not None else DEFAULT_VALUE_RANGE[encoding]
    top = 65535 if encoding == 'png16' else 255
    q = np.clip(np.rint((img.astype(np.float64) - lo) / (hi - lo) * top), 0, top)
    q = q.astype(np.uint16 if encoding == 'png16' else np.uint8)
    ok, buf = cv2.imencode('.png', q, [cv2.IMWRITE_PNG_COMPRESSION, int(compress_level)])
    if not ok:
        raise RuntimeError('cv2.imencode failed')
    return buf.tobytes()


def decode_target(buf: bytes, encoding: str = 'png16', value_range: tuple[float, float] | None = None) -> np.ndarray:
    """Inverse of :func:`encode_target`: float32 ``H x W x C`` image (BGR)."""
    if encoding == 'npy32':
        return np.load(io.BytesIO(buf), allow_pickle=False).astype(np.float32, copy=False)
    check_choice(encoding, ENCODINGS, f'encoding must be one of {ENCODINGS}, got {encoding!r}')
    q = cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_UNCHANGED)
    if q is None:
        raise ValueError('cannot decode cached target bytes as PNG')
    expected = np.uint16 if encoding == 'png16' else np.uint8
    if q.dtype != expected:
        raise ValueError(f'cached target is {q.dtype}, encoding {encoding} expects {np.dtype(expected)}')
    if q.ndim == 2:
        q = q[..., None]
    lo, hi = value_range if value_range is not None else DEFAULT_VALUE_RANGE[encoding]
    top = 65535.0 if encoding == 'png16' else 255.0
    return (q.astype(np.float32) * np.float32((hi - lo) / top) + np.float32(lo)).astype(np.float32)


# --------------------------------------------------------------------------------------------- metadata
def read_cache_meta(lmdb_path: str) -> dict[str, Any]:
    """``kd_cache_meta.json`` of a target cache.

    Raises:
        FileNotFoundError: Not a target cache (written by ``cache_teacher_outputs``).
    """
    path = osp.join(lmdb_path, CACHE_META_FILE)
    if not osp.isfile(path):
        raise FileNotFoundError(f'{lmdb_path!r} is not a teacher-output cache ({CACHE_META_FILE} missing); build it '
                                'with python -m kdsr_plugins.tools.cache_teacher_outputs -opt <train.yml>.')
    with open(path) as f:
        return json.load(f)


def target_roots(dataroot_target: str | Mapping[str, str]) -> OrderedDict[str, str]:
    """Batch key -> LMDB path: a path gives ``target``; a mapping ``name: path`` gives ``target_<name>``."""
    if isinstance(dataroot_target, str):
        return OrderedDict(target=osp.expanduser(dataroot_target))
    if not isinstance(dataroot_target, Mapping) or not dataroot_target:
        raise ValueError('dataroot_target must be an LMDB path or a non-empty mapping {teacher_name: path}.')
    roots: OrderedDict[str, str] = OrderedDict()
    for name, path in dataroot_target.items():
        if not _NAME_RE.match(str(name)):
            raise ValueError(f'dataroot_target name {name!r} must match [a-z0-9_]+ (a teacher name).')
        roots[f'target_{name}'] = osp.expanduser(str(path))
    return roots


def check_cached_targets(dataset_opt: Mapping[str, Any], scale: int, teacher_names: list[str],
                         expect: str, aggregator_pretrain: str | None = None) -> list[str]:
    """Check that a training set's caches hold what a model needs; return warnings.

    Args:
        dataset_opt: The ``datasets.train`` block (``KDCachedTargetDataset``).
        scale: The run's scale.
        teacher_names: The run's canonical teacher order.
        expect: ``aggregator`` (a ``target`` made by the aggregator) or ``teachers`` (``target_<name>``
            per-teacher outputs, names must be teachers).
        aggregator_pretrain: The aggregator checkpoint of the run (compared with the cache's).

    Raises:
        ValueError: Wrong kind of cache, scale or teacher order.
    """
    warnings = []
    roots = target_roots(dataset_opt['dataroot_target'])
    for key, path in roots.items():
        meta = read_cache_meta(path)
        if int(meta.get('scale', -1)) != int(scale):
            raise ValueError(f'Cache {path!r} was made at x{meta.get("scale")}, the run is x{scale}.')
        if expect == 'aggregator':
            if key != 'target' or meta.get('kind') != 'aggregator':
                raise ValueError(f'Cache {path!r} ({key}, kind {meta.get("kind")!r}) is not an aggregator output: MTKD '
                                 'stage 2 needs dataroot_target: <aggregator cache> (a single path).')
            if list(meta.get('teacher_order', [])) != list(teacher_names):
                raise ValueError(f'Cache {path!r} was made with teachers {meta.get("teacher_order")}, this run '
                                 f'declares {teacher_names}.')
            cached = meta.get('aggregator', {}).get('pretrain')
            if aggregator_pretrain and cached and osp.realpath(cached) != osp.realpath(aggregator_pretrain):
                warnings.append(f'Cache {path!r} was made with aggregator {cached!r}, the run names '
                                f'{aggregator_pretrain!r}: the cached targets are used.')
        else:
            name = key[len('target_'):] if key.startswith('target_') else None
            if name is None or name not in teacher_names or meta.get('kind') != 'teacher' or meta.get('name') != name:
                raise ValueError(f'Cache {path!r} (kind {meta.get("kind")!r}, name {meta.get("name")!r}) under '
                                 f'{key!r} is not the output of one of the teachers {teacher_names}; use '
                                 'dataroot_target: {teacher_name: cache_path, ...}.')
    return warnings


# --------------------------------------------------------------------------------------------- dataset
@DATASET_REGISTRY.register()
class KDCachedTargetDataset(data.Dataset):
    """Paired LMDB dataset that also serves cached teacher outputs, cropped/augmented with GT and LR.

    Returns ``lq``, ``gt``, ``lq_path``, ``gt_path`` as ``PairedImageDataset`` (LMDB mode) plus
    ``target`` (``dataroot_target`` = one cache path) or ``target_<name>`` per entry of a mapping
    ``dataroot_target: {name: path}``. Targets are HR-sized and get the same crop window as GT and
    the same flips/rotation as GT and LR; validation/test phases crop them like GT.

    Option keys: ``dataroot_gt``, ``dataroot_lq``, ``dataroot_target``, ``io_backend`` (``lmdb``),
    ``gt_size``, ``use_hflip``, ``use_rot``, optional ``color: y``, ``mean``, ``std`` (applied to GT
    and targets as to GT); ``scale`` and ``phase`` are set by BasicSR.
    """

    def __init__(self, opt: dict) -> None:
        super().__init__()
        self.opt = opt
        self.file_client = None
        self.io_backend_opt = dict(opt['io_backend'])
        if self.io_backend_opt.get('type') != 'lmdb':
            raise ValueError('KDCachedTargetDataset needs io_backend: {type: lmdb} (GT, LR and caches are LMDBs).')
        self.mean = opt.get('mean')
        self.std = opt.get('std')
        self.gt_folder, self.lq_folder = opt['dataroot_gt'], opt['dataroot_lq']
        if 'dataroot_target' not in opt:
            raise ValueError('KDCachedTargetDataset needs dataroot_target (a cache path or {teacher_name: path}).')
        self.target_roots = target_roots(opt['dataroot_target'])
        self.paths = paired_paths_from_lmdb([self.lq_folder, self.gt_folder], ['lq', 'gt'])
        gt_keys = {p['gt_path'] for p in self.paths}
        self.codecs: dict[str, tuple[str, tuple[float, float] | None]] = {}
        for key, root in self.target_roots.items():
            meta = read_cache_meta(root)
            if 'scale' in opt and int(meta.get('scale', opt['scale'])) != int(opt['scale']):
                raise ValueError(f'Cache {root!r} was made at x{meta["scale"]}, the dataset is x{opt["scale"]}.')
            missing = sorted(gt_keys - set(meta_info_keys(root)))
            if missing:
                raise ValueError(f'Cache {root!r} lacks {len(missing)} GT key(s) (e.g. {missing[:3]}): it was made '
                                 'from another training set or interrupted; rebuild it.')
            value_range = meta.get('value_range')
            self.codecs[key] = (meta['encoding'], tuple(value_range) if value_range is not None else None)
        self.io_backend_opt['db_paths'] = [self.lq_folder, self.gt_folder, *self.target_roots.values()]
        self.io_backend_opt['client_keys'] = ['lq', 'gt', *self.target_roots.keys()]

    def __getitem__(self, index: int) -> dict:
        if self.file_client is None:
            backend = dict(self.io_backend_opt)
            self.file_client = FileClient(backend.pop('type'), **backend)
        scale = self.opt['scale']
        gt_path = self.paths[index]['gt_path']
        lq_path = self.paths[index]['lq_path']
        img_gt = imfrombytes(self.file_client.get(gt_path, 'gt'), float32=True)
        img_lq = imfrombytes(self.file_client.get(lq_path, 'lq'), float32=True)
        targets = []
        for key, (encoding, value_range) in self.codecs.items():
            img_t = decode_target(self.file_client.get(gt_path, key), encoding, value_range)
            if img_t.shape != img_gt.shape:
                raise ValueError(f'Cached {key} of {gt_path!r} is {img_t.shape}, GT is {img_gt.shape}.')
            targets.append(img_t)

        if self.opt['phase'] == 'train':
            hr, img_lq = paired_random_crop([img_gt, *targets], img_lq, self.opt['gt_size'], scale, gt_path)
            hr = hr if isinstance(hr, list) else [hr]
            out = augment([hr[0], img_lq, *hr[1:]], self.opt['use_hflip'], self.opt['use_rot'])
            out = out if isinstance(out, list) else [out]
            img_gt, img_lq, targets = out[0], out[1], out[2:]

        if self.opt.get('color') == 'y':
            img_gt = bgr2ycbcr(img_gt, y_only=True)[..., None]
            img_lq = bgr2ycbcr(img_lq, y_only=True)[..., None]
            targets = [bgr2ycbcr(t, y_only=True)[..., None] for t in targets]

        if self.opt['phase'] != 'train':
            h, w = img_lq.shape[0] * scale, img_lq.shape[1] * scale
            img_gt = img_gt[:h, :w, :]
            targets = [t[:h, :w, :] for t in targets]

        tensors = img2tensor([img_gt, img_lq, *targets], bgr2rgb=True, float32=True)
        img_gt, img_lq, targets = tensors[0], tensors[1], tensors[2:]
        if self.mean is not None or self.std is not None:
            normalize(img_lq, self.mean, self.std, inplace=True)
            normalize(img_gt, self.mean, self.std, inplace=True)
            for t in targets:
                normalize(t, self.mean, self.std, inplace=True)
        item = {'lq': img_lq, 'gt': img_gt, 'lq_path': lq_path, 'gt_path': gt_path}
        item.update(zip(self.codecs.keys(), targets))
        return item

    def __len__(self) -> int:
        return len(self.paths)
