"""A data-limited copy of the real-photo set: the first N train photos, the same val and test splits.

    python bench/photo/train_subset.py --src datasets/photos --out datasets/photos_n3 --photos 3

The train LMDBs of ``--out`` hold the sub-images (HR and x``--scale`` LR, byte-identical pixels)
of the first ``--photos`` train photos in name order; ``val`` and ``test`` are links to those of
``--src``, so a benchmark config pointing at ``--out`` (``bench/photo/why_data.yml``) differs from
``bench/photo/benchmark.yml`` in the training data only. ``subset.json`` records the photos and the
number of sub-images. Existing outputs are never replaced silently (``--overwrite``).
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import sys

from kdsr_plugins.data_prep.div2k import div2k_output_paths
from kdsr_plugins.data_prep.files import guard_outputs, list_images
from kdsr_plugins.data_prep.lmdb_tools import write_lmdb


def photo_of(sub_image: str) -> str:
    """Photo name of a sub-image file ``<photo>_s001.png``."""
    return osp.splitext(osp.basename(sub_image))[0].rsplit('_s', 1)[0]


def make_subset(src: str, out: str, photos: int, scale: int = 4, overwrite: bool = False) -> dict:
    """Build ``out`` (see the module docstring) and return its ``subset.json`` record."""
    src, out = osp.abspath(src), osp.abspath(out)
    if out == src:
        raise ValueError('--out must differ from --src')
    have = div2k_output_paths(osp.join(src, 'train'), [scale])
    made = div2k_output_paths(osp.join(out, 'train'), [scale])
    hr_all = [osp.join(have['hr_sub'], f) for f in list_images(have['hr_sub'])]
    lr_all = [osp.join(have['lr_sub'][scale], f) for f in list_images(have['lr_sub'][scale])]
    names = sorted({photo_of(p) for p in hr_all})
    if not 1 <= photos <= len(names):
        raise ValueError(f'--photos must be in 1..{len(names)} (the train photos of {src}), got {photos}')
    if [osp.basename(p) for p in hr_all] != [osp.basename(p) for p in lr_all]:
        raise ValueError(f'{src}: HR and x{scale} LR train sub-images differ; rebuild it with data_prep photos')
    chosen = set(names[:photos])
    hr = [p for p in hr_all if photo_of(p) in chosen]
    lr = [p for p in lr_all if photo_of(p) in chosen]
    hr_lmdb, lr_lmdb = made['hr_lmdb'], made['lr_lmdb'][scale]
    links = {split: osp.join(out, split) for split in ('val', 'test')}
    record_path = osp.join(out, 'subset.json')
    if real := [p for p in links.values() if osp.exists(p) and not osp.islink(p)]:
        raise FileExistsError(f'not links made by this script, left alone: {", ".join(real)}')
    guard_outputs([hr_lmdb, lr_lmdb, record_path, *links.values()], overwrite, hint='pass --overwrite')
    os.makedirs(out, exist_ok=True)
    for split, link in links.items():
        os.symlink(osp.join(src, split), link)
    write_lmdb(hr, hr_lmdb)
    write_lmdb(lr, lr_lmdb)
    record = {'src': src, 'photos': sorted(chosen), 'of_train_photos': len(names), 'sub_images': len(hr),
              'of_sub_images': len(hr_all), 'scale': scale}
    with open(record_path, 'w', encoding='utf-8') as f:
        json.dump(record, f, indent=1)
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--src', required=True, help='photo set root (python -m kdsr_plugins.data_prep photos)')
    p.add_argument('--out', required=True, help='root of the subset')
    p.add_argument('--photos', type=int, required=True, help='train photos kept (the first N in name order)')
    p.add_argument('--scale', type=int, default=4)
    p.add_argument('--overwrite', action='store_true', help='replace an existing subset')
    a = p.parse_args(argv)
    rec = make_subset(a.src, a.out, a.photos, a.scale, a.overwrite)
    print(f'{a.out}: {len(rec["photos"])} of {rec["of_train_photos"]} train photos, '
          f'{rec["sub_images"]} of {rec["of_sub_images"]} sub-images')
    return 0


if __name__ == '__main__':
    sys.exit(main())
