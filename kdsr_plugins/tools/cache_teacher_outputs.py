"""Run the frozen teachers (and the MTKD aggregator) once over a training LMDB and cache their outputs.

Usage::

    python -m kdsr_plugins.tools.cache_teacher_outputs -opt options/train/MTKD/X.yml [--out DIR]
        [--what auto|teacher|teachers|aggregator] [--encoding png16|png8|npy32] [--range LO HI]
        [--batch-size 4] [--device auto|cpu|cuda] [--overwrite]

What is cached (``--what auto``) follows the YAML: when ``datasets.train`` is a
``KDCachedTargetDataset``, its ``dataroot_target`` is filled (a path: the model's target = the
aggregator output for ``MTKDStudentModel`` with an ``aggregator`` block, else the first teacher's
output; a mapping ``{teacher_name: path}``: those teachers' outputs). Otherwise ``--out DIR`` is
required and receives ``DIR/<teacher>.lmdb`` (``MTKDAggregatorModel``, fixed-weight stage 2) or
``DIR/aggregator.lmdb`` (``MTKDStudentModel``) or ``DIR/<first teacher>.lmdb`` (other KD models);
the ``dataroot_target`` to use is printed. Each cache is a BasicSR LMDB with the GT keys of
``dataroot_gt`` whose values are the outputs on the **whole** LR image of each key (see
``kdsr_plugins.core.kd_cached_target_dataset`` for the encodings), plus ``kd_cache_meta.json``.
An existing cache is never replaced without ``--overwrite`` (and never a folder that is not a
cache). Writing goes to ``<path>.partial-<pid>`` and is renamed when complete.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import os.path as osp
import shutil
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from copy import deepcopy
from typing import Any

import kdsr_plugins  # noqa: F401  (shims, basicsr, registries)

import lmdb
import numpy as np
import torch
import yaml
from basicsr.archs import build_network
from basicsr.utils import imfrombytes, img2tensor
from basicsr.utils.options import ordered_yaml

from kdsr_plugins.core.arch_info import pad_multiple
from kdsr_plugins.core.checkpoints import extract_state_dict, load_checkpoint_file, load_state_dict_into
from kdsr_plugins.core.kd_cached_target_dataset import (
    CACHE_META_FILE,
    DEFAULT_VALUE_RANGE,
    ENCODINGS,
    EXTENSIONS,
    encode_target,
    target_roots,
)
from kdsr_plugins.core.lmdb_io import LmdbWriter, estimate_map_size, read_meta_info
from kdsr_plugins.core.schema import check_choice
from kdsr_plugins.core.teachers import TeacherSpec, build_teacher_network, check_teacher_scale, parse_teacher_specs
from kdsr_plugins.methods.mtkd.aggregator import load_aggregator, teacher_sr

__all__ = ['cache_teacher_outputs', 'plan_targets', 'main']

FORMAT_VERSION = 1
#: Bytes per decoded sample of each encoding (for the LMDB map size).
_SAMPLE_BYTES = {'png16': 2, 'png8': 1, 'npy32': 4}


def plan_targets(opt: Mapping[str, Any], what: str = 'auto', out: str | None = None,
                 dataset: str = 'train') -> list[dict[str, str]]:
    """Decide the caches to build: ``[{'key': batch key, 'path': lmdb, 'kind': teacher|aggregator, 'name': ...}]``."""
    specs = parse_teacher_specs(opt)
    names = [s.name for s in specs]
    model_type = opt.get('model_type')
    has_agg = model_type == 'MTKDStudentModel' and opt.get('aggregator') is not None
    ds = (opt.get('datasets') or {}).get(dataset) or {}
    if what == 'auto':
        if out is None and 'dataroot_target' in ds:
            what = 'map' if isinstance(ds['dataroot_target'], Mapping) else ('aggregator' if has_agg else 'teacher')
        elif model_type == 'MTKDAggregatorModel' or (model_type == 'MTKDStudentModel' and not has_agg):
            what = 'teachers'
        else:
            what = 'aggregator' if has_agg else 'teacher'
    if what == 'aggregator' and opt.get('aggregator') is None:
        raise ValueError('--what aggregator needs an aggregator block in the options.')
    if out is None and 'dataroot_target' not in ds:
        raise ValueError(f'datasets.{dataset} has no dataroot_target (not a KDCachedTargetDataset): pass --out DIR.')
    plan = []
    if what == 'map':
        for key, path in target_roots(ds['dataroot_target']).items():
            name = key[len('target_'):]
            if name not in names:
                raise ValueError(f'dataroot_target names {name!r}, which is not a teacher ({names}).')
            plan.append({'key': key, 'path': path, 'kind': 'teacher', 'name': name})
    elif what == 'teachers':
        roots = target_roots(ds['dataroot_target']) if out is None else None
        for name in names:
            path = osp.join(out, f'{name}.lmdb') if out is not None else roots.get(f'target_{name}')
            if path is None:
                raise ValueError(f'dataroot_target has no entry for teacher {name!r}.')
            plan.append({'key': f'target_{name}', 'path': path, 'kind': 'teacher', 'name': name})
    elif what in ('teacher', 'aggregator'):
        name = 'aggregator' if what == 'aggregator' else names[0]
        if out is not None:
            path = osp.join(out, f'{name}.lmdb')
        elif isinstance(ds['dataroot_target'], str):
            path = osp.expanduser(ds['dataroot_target'])
        else:
            raise ValueError(f'--what {what} writes one cache but dataroot_target is a mapping; pass --out DIR.')
        plan.append({'key': 'target', 'path': path, 'kind': what, 'name': name})
    else:
        raise ValueError(f'--what must be auto, teacher, teachers or aggregator, got {what!r}.')
    return plan


def _build_teacher(spec: TeacherSpec, scale: int, device: torch.device,
                   student_opt: Mapping[str, Any] | None = None) -> torch.nn.Module:
    check_teacher_scale(spec, scale)
    if spec.pretrain is None:
        raise ValueError(f'Teacher {spec.name!r} has no checkpoint (pretrain).')
    auto = build_teacher_network(spec, scale, student_opt or {})
    if auto is not None:  # network type auto: built and strictly loaded from the checkpoint by spandrel
        auto.requires_grad_(False)
        return auto.eval().to(device)
    net = build_network(deepcopy(spec.network_opt))
    state = extract_state_dict(load_checkpoint_file(spec.pretrain, f'teacher {spec.name!r}'), spec.param_key,
                               spec.pretrain)
    load_state_dict_into(net, state, spec.strict_load, spec.pretrain, f'teacher {spec.name!r}')
    net.requires_grad_(False)
    return net.eval().to(device)


def _check_destination(path: str, overwrite: bool, sources: Sequence[str]) -> None:
    real = osp.realpath(path)
    if any(real == osp.realpath(s) for s in sources):
        raise ValueError(f'Cache path {path!r} is a source LMDB of the dataset.')
    if osp.exists(path):
        if not overwrite:
            raise FileExistsError(f'Cache {path!r} exists; pass --overwrite to rebuild it.')
        if not osp.isfile(osp.join(path, CACHE_META_FILE)):
            raise FileExistsError(f'{path!r} exists and is not a teacher-output cache ({CACHE_META_FILE} missing); '
                                  'refusing to delete it even with --overwrite.')


def cache_teacher_outputs(opt: Mapping[str, Any], out: str | None = None, what: str = 'auto',
                          dataset: str = 'train', encoding: str = 'png16',
                          value_range: Sequence[float] | None = None, compress_level: int = 1,
                          overwrite: bool = False, device: str = 'auto', batch_size: int = 4,
                          options_file: str | None = None,
                          log: Callable[[str], None] = print) -> OrderedDict[str, str]:
    """Build the target caches for a training option dict (see module docstring).

    Returns:
        Batch key (``target`` / ``target_<name>``) -> written LMDB path.
    """
    check_choice(encoding, ENCODINGS, f'encoding must be one of {ENCODINGS}, got {encoding!r}.')
    if encoding == 'npy32':
        value_range = None
    else:
        value_range = tuple(float(v) for v in (value_range or DEFAULT_VALUE_RANGE[encoding]))
        if len(value_range) != 2 or not value_range[0] < value_range[1]:
            raise ValueError(f'value range must be LO HI with LO < HI, got {value_range}.')
    scale = int(opt['scale'])
    ds = opt['datasets'][dataset]
    lq_root, gt_root = osp.expanduser(ds['dataroot_lq']), osp.expanduser(ds['dataroot_gt'])
    if ds.get('io_backend', {}).get('type') != 'lmdb' or not (lq_root.endswith('.lmdb') and gt_root.endswith('.lmdb')):
        raise ValueError(f'datasets.{dataset} must read LMDBs (io_backend lmdb, .lmdb roots).')
    plan = plan_targets(opt, what, out, dataset)
    for item in plan:
        _check_destination(item['path'], overwrite, [lq_root, gt_root])

    dev = torch.device(('cuda' if torch.cuda.is_available() else 'cpu') if device == 'auto' else device)
    specs = parse_teacher_specs(opt)
    need_agg = any(p['kind'] == 'aggregator' for p in plan)
    needed = [s for s in specs if need_agg or any(p['name'] == s.name for p in plan)]
    teachers = OrderedDict((s.name, _build_teacher(s, scale, dev, opt.get('network_g'))) for s in needed)
    multiples = {s.name: pad_multiple(s.network_opt) for s in needed}
    aggregator, agg_meta = None, None
    if need_agg:
        aggregator, agg_meta, warnings = load_aggregator(opt['aggregator'], specs, scale, dev)
        for msg in warnings:
            log(f'WARNING: {msg}')

    gt_shapes = {e.key: e.shape for e in read_meta_info(gt_root)}
    lq_keys = {e.key for e in read_meta_info(lq_root)}
    missing = [k for k in gt_shapes if k not in lq_keys]
    if missing:
        raise ValueError(f'{len(missing)} GT key(s) have no LR image in {lq_root!r} (e.g. {missing[:3]}).')
    ext = EXTENSIONS[encoding]
    map_size = estimate_map_size(sum(h * w * c for h, w, c in gt_shapes.values()) * _SAMPLE_BYTES[encoding],
                                 len(gt_shapes))
    env_lq = lmdb.open(lq_root, readonly=True, lock=False, readahead=False)
    partial = {p['key']: f'{p["path"]}.partial-{os.getpid()}' for p in plan}
    writers: dict[str, LmdbWriter] = {}
    for p in plan:
        os.makedirs(osp.dirname(osp.abspath(p['path'])), exist_ok=True)
        if osp.exists(partial[p['key']]):
            shutil.rmtree(partial[p['key']])
        writers[p['key']] = LmdbWriter(partial[p['key']], map_size)
    stats = {p['key']: {'min': float('inf'), 'max': float('-inf'), 'clipped': 0, 'values': 0} for p in plan}
    start, done = time.time(), 0

    def flush(keys: list[str], lqs: list[np.ndarray]) -> None:
        x = torch.stack(img2tensor(lqs, bgr2rgb=True, float32=True)).to(dev)
        outs = OrderedDict((name, teacher_sr(net, x, multiples[name], scale)) for name, net in teachers.items())
        if aggregator is not None:
            with torch.no_grad():
                outs['aggregator'] = aggregator(torch.cat([outs[s.name] for s in specs], dim=1))
        for p in plan:
            out_t = outs[p['name']].float().cpu()
            st = stats[p['key']]
            st['min'] = min(st['min'], float(out_t.min()))
            st['max'] = max(st['max'], float(out_t.max()))
            if value_range is not None:
                st['clipped'] += int(((out_t < value_range[0]) | (out_t > value_range[1])).sum())
            st['values'] += out_t.numel()
            for key, img in zip(keys, out_t.numpy()):
                hwc = np.ascontiguousarray(img.transpose(1, 2, 0)[:, :, ::-1])  # RGB CHW -> BGR HWC
                if hwc.shape != gt_shapes[key]:
                    raise ValueError(f'{p["name"]} output of {key!r} is {hwc.shape}, GT is {gt_shapes[key]}: GT and '
                                     f'LR are not x{scale} pairs.')
                writers[p['key']].put(key, encode_target(hwc, encoding, value_range, compress_level), hwc.shape, ext,
                                      compress_level)

    try:
        batch_keys: list[str] = []
        batch_imgs: list[np.ndarray] = []
        with env_lq.begin(write=False) as txn:
            for key in gt_shapes:
                buf = txn.get(key.encode('ascii'))
                if buf is None:
                    raise KeyError(f'LR LMDB {lq_root!r} has no key {key!r}.')
                img = imfrombytes(buf, float32=True)
                if batch_imgs and (img.shape != batch_imgs[0].shape or len(batch_imgs) >= batch_size):
                    flush(batch_keys, batch_imgs)
                    if (done + len(batch_keys)) // 100 > done // 100:
                        log(f'{done + len(batch_keys)}/{len(gt_shapes)} images, {time.time() - start:.1f} s')
                    done += len(batch_keys)
                    batch_keys, batch_imgs = [], []
                batch_keys.append(key)
                batch_imgs.append(img)
            if batch_keys:
                flush(batch_keys, batch_imgs)
                done += len(batch_keys)
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    finally:
        env_lq.close()
    elapsed = time.time() - start

    agg_info = None
    if agg_meta is not None:
        agg_info = {k: agg_meta.get(k) for k in ('pretrain', 'format', 'output_convention', 'mask_mode')}
        agg_info['param_key'] = opt['aggregator'].get('param_key', 'params_ema')
    written: OrderedDict[str, str] = OrderedDict()
    now = datetime.datetime.now().isoformat(timespec='seconds')
    for p in plan:
        tmp = writers[p['key']].close()  # writes meta_info.txt
        st = stats[p['key']]
        used = specs if p['kind'] == 'aggregator' else [s for s in specs if s.name == p['name']]
        meta = {
            'format_version': FORMAT_VERSION, 'kind': p['kind'], 'name': p['name'], 'encoding': encoding,
            'value_range': list(value_range) if value_range is not None else None, 'compress_level': compress_level,
            'scale': scale, 'num_images': done, 'source_lq': lq_root, 'source_gt': gt_root,
            'options_file': options_file, 'model_type': opt.get('model_type'), 'created': now,
            'teacher_order': [s.name for s in specs],
            'teachers': [{'name': s.name, 'type': s.network_opt.get('type'), 'pretrain': s.pretrain,
                          'param_key': s.param_key} for s in used],
            'aggregator': agg_info if p['kind'] == 'aggregator' else None,
            'stats': {'min': st['min'], 'max': st['max'],
                      'clipped_fraction': st['clipped'] / max(1, st['values'])},
            'seconds': round(elapsed, 3), 'device': str(dev), 'torch': torch.__version__,
        }
        with open(osp.join(tmp, CACHE_META_FILE), 'w') as f:
            json.dump(meta, f, indent=1)
        if osp.exists(p['path']):
            shutil.rmtree(p['path'])
        os.replace(tmp, p['path'])
        written[p['key']] = p['path']
        log(f'Wrote {p["kind"]} {p["name"]!r} outputs of {done} images to {p["path"]} ({encoding}, '
            f'range {value_range}, values in [{st["min"]:.4f}, {st["max"]:.4f}], '
            f'{100 * meta["stats"]["clipped_fraction"]:.4f}% clipped) in {elapsed:.1f} s.')
    return written


def main(argv: Sequence[str] | None = None) -> OrderedDict[str, str]:
    parser = argparse.ArgumentParser(prog='python -m kdsr_plugins.tools.cache_teacher_outputs',
                                     description=__doc__.split('\n\n')[0])
    parser.add_argument('-opt', required=True, help='training option YAML')
    parser.add_argument('--out', help='output folder (default: the dataroot_target paths of the YAML)')
    parser.add_argument('--what', default='auto', choices=['auto', 'teacher', 'teachers', 'aggregator'])
    parser.add_argument('--dataset', default='train', help='datasets.<key> to cache (default train)')
    parser.add_argument('--encoding', default='png16', choices=list(ENCODINGS))
    parser.add_argument('--range', nargs=2, type=float, metavar=('LO', 'HI'), dest='value_range',
                        help='value range mapped to the PNG integers (default png16: -0.25 1.25, png8: 0 1)')
    parser.add_argument('--compress-level', type=int, default=1)
    parser.add_argument('--batch-size', type=int, default=4, help='LR images of equal size per forward')
    parser.add_argument('--device', default='auto', help='auto (cuda if available), cpu, cuda, cuda:1 ...')
    parser.add_argument('--overwrite', action='store_true', help='rebuild existing caches')
    args = parser.parse_args(argv)
    with open(args.opt) as f:
        opt = yaml.load(f, Loader=ordered_yaml()[0])
    written = cache_teacher_outputs(opt, args.out, args.what, args.dataset, args.encoding, args.value_range,
                                    args.compress_level, args.overwrite, args.device, args.batch_size,
                                    osp.abspath(args.opt), log=lambda m: print(m, flush=True))
    if args.out is not None:
        mapping = {k[len('target_'):]: v for k, v in written.items() if k.startswith('target_')}
        snippet = {'type': 'KDCachedTargetDataset', 'dataroot_target': mapping or written['target']}
        print('Use in datasets.train:\n' + yaml.safe_dump(snippet, sort_keys=False))
    return written


if __name__ == '__main__':
    try:
        main()
    except (FileExistsError, FileNotFoundError, ValueError, KeyError) as err:
        print(f'error: {err}', file=sys.stderr)
        sys.exit(1)
