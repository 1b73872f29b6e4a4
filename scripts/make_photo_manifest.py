"""Write ``scripts/photo_manifest.json``: the real-photo set's sources, checksums and splits.

Run once by a maintainer (the committed manifest is the record); users rebuild the set with::

    apt-get install mate-backgrounds=1.26.0-1 lomiri-wallpapers-16.04=20.04.0-2 \
        lomiri-wallpapers-20.04=20.04.0-2 \
        plasma-workspace-wallpapers=4:5.27.5-2
    python -m kdsr_plugins.data_prep photos --manifest scripts/photo_manifest.json

Selection: every wallpaper of these Debian 12 packages that is a natural photograph of at least
1 megapixel, chosen by eye (renders, vector art, logos and gradients left out); for Plasma
wallpapers shipped in several sizes only the largest landscape file, since the smaller ones are
resized copies of the same photo. Splits are assigned deterministically: Debian photos sorted by
the SHA-256 of their source file, the first ``N_TEST`` go to test, the next ``N_VAL`` to val and
the rest to train; the natural colour photos bundled with scikit-image (all below 1 MP) are
added to val only, so test and train are made of the wallpapers alone.
"""
from __future__ import annotations

import argparse
import json
import os.path as osp
import subprocess
import sys
import tempfile

import cv2

from kdsr_plugins.data_prep.files import write_png
from kdsr_plugins.data_prep.photos import (
    READ_FLAGS,
    load_manifest,
    process_photo,
    sha256_file,
    source_path,
    target_size,
)

MAX_PIXELS = 2_000_000
MOD = 12
N_TEST, N_VAL = 10, 3

# (package, path, short name) of the natural photographs, checked by eye.
DEB_PHOTOS = [
    ('mate-backgrounds', f'/usr/share/backgrounds/mate/nature/{n}.jpg', f'mate_{n}')
    for n in ('Aqua', 'Blinds', 'Dune', 'FreshFlower', 'Garden', 'GreenMeadow', 'LadyBird', 'RainDrops', 'Storm',
              'TwoWings', 'Wood', 'YellowFlower')
] + [
    ('lomiri-wallpapers-16.04', f'/usr/share/backgrounds/{f}.jpg', 'lomiri_' + f.split('_by_')[0])
    for f in ('Bridge_by_Sander_Klootwijk', 'Dragonfly_by_Bolly', 'Picture_0B_by_freespace',
              'Picture_1A_by_freespace', 'Wine_by_Jakkub_Mede', 'aitzgorri_by_Aitzol_Berasategi',
              'free_by_Peter_Nerlich', 'friends_by_Aitzol_Berasategi', 'greentock_by_Peter_Nerlich',
              'life_by_Aitzol_Berasategi', 'picosdeeuropa_by_Aitzol_Berasategi', 'seeding_by_Clements_Engelhardt',
              'sunset_by_Aitzol_Berasategi')
] + [
    ('lomiri-wallpapers-20.04', '/usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg', 'lomiri_Kleiber'),
] + [
    ('plasma-workspace-wallpapers', f'/usr/share/wallpapers/{n}/contents/images/2560x1600.jpg', f'plasma_{n}')
    for n in ('BytheWater', 'ColdRipple', 'ColorfulCups', 'DarkestHour', 'EveningGlow', 'FallenLeaf', 'Grey', 'Kite',
              'OneStandsOut', 'Path', 'summer_1am')
]
SKIMAGE_VAL = [('astronaut.png', 'skimage_astronaut'), ('chelsea.png', 'skimage_chelsea'),
               ('coffee.png', 'skimage_coffee'), ('rocket.jpg', 'skimage_rocket'),
               ('motorcycle_left.png', 'skimage_motorcycle_left')]


def deb_version(package: str) -> str:
    return subprocess.run(['dpkg-query', '-W', '-f=${Version}', package], check=True, capture_output=True,
                          text=True).stdout.strip()


def entry(source: dict, name: str, split: str, tmp: str) -> dict:
    path = source_path(source)
    img = cv2.imread(path, READ_FLAGS)
    if img is None:
        raise ValueError(f'cannot decode {path}')
    h, w = img.shape[:2]
    resize_to = target_size(w, h, MAX_PIXELS)
    out = process_photo(img, resize_to, MOD)
    png = osp.join(tmp, name + '.png')
    write_png(png, out, compress_level=3)
    return {'name': name, 'split': split, 'source': source, 'sha256': sha256_file(path), 'source_size': [w, h],
            'resize_to': list(resize_to) if resize_to else None, 'out_size': [out.shape[1], out.shape[0]],
            'out_sha256': sha256_file(png)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--out', default=osp.join(osp.dirname(osp.abspath(__file__)), 'photo_manifest.json'))
    args = ap.parse_args(argv)
    import skimage
    versions = {p: deb_version(p) for p in sorted({p for p, _, _ in DEB_PHOTOS})}
    debs = [{'kind': 'deb', 'package': p, 'version': versions[p], 'path': path} for p, path, _ in DEB_PHOTOS]
    order = sorted(range(len(debs)), key=lambda i: sha256_file(source_path(debs[i])))
    split = {}
    for rank, i in enumerate(order):
        split[i] = 'test' if rank < N_TEST else 'val' if rank < N_TEST + N_VAL else 'train'
    photos = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (src, (_, _, name)) in enumerate(zip(debs, DEB_PHOTOS)):
            photos.append(entry(src, name, split[i], tmp))
        for f, name in SKIMAGE_VAL:
            photos.append(entry({'kind': 'skimage', 'version': skimage.__version__, 'file': f}, name, 'val', tmp))
    photos.sort(key=lambda p: (('train', 'val', 'test').index(p['split']), p['name']))
    man = {
        'format': 1,
        'description': 'Natural photographs from Debian 12 wallpaper packages (>= 1 MP, chosen by eye) and '
                       'scikit-image; built by python -m kdsr_plugins.data_prep photos. Photos above max_pixels '
                       'are downscaled once with cv2.INTER_AREA to resize_to, then cropped bottom/right to '
                       'multiples of mod. Splits: Debian photos sorted by source sha256, first 10 test, next 3 '
                       'val, rest train; scikit-image photos val only.',
        'decoder': {'opencv': cv2.__version__, 'flags': 'IMREAD_COLOR|IMREAD_IGNORE_ORIENTATION'},
        'max_pixels': MAX_PIXELS, 'mod': MOD, 'scales': [4], 'crop_size': 480, 'step': 240,
        'photos': photos,
    }
    with open(args.out, 'w', encoding='utf-8') as fh:
        json.dump(man, fh, indent=1)
        fh.write('\n')
    load_manifest(args.out)
    counts = {s: sum(p['split'] == s for p in photos) for s in ('train', 'val', 'test')}
    print(f'wrote {args.out}: {counts}')
    return 0


if __name__ == '__main__':
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
    sys.exit(main())
