"""The one LMDB reader/writer (``kdsr_plugins.core.lmdb_io``): format, BasicSR's key rule, map growth, cleanup."""
import os
import os.path as osp

import cv2
import lmdb
import numpy as np
import pytest
from basicsr.data.data_util import paired_paths_from_lmdb
from basicsr.utils.lmdb_util import make_lmdb_from_imgs

from kdsr_plugins.core.lmdb_io import (
    LmdbCheckError,
    LmdbWriter,
    is_valid_key,
    meta_info_key,
    meta_info_keys,
    meta_info_shapes,
    parse_meta_line,
    read_meta_info,
)


def _png(rng, h, w):
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return img, cv2.imencode('.png', img, [cv2.IMWRITE_PNG_COMPRESSION, 1])[1].tobytes()


def _read_all(path):
    env = lmdb.open(path, readonly=True, lock=False)
    with env.begin() as txn:
        out = {k.decode(): bytes(v) for k, v in txn.cursor()}
    env.close()
    return out


def test_writer_matches_basicsr_make_lmdb_and_key_rule(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / 'imgs'
    folder.mkdir()
    shapes = {'b_s001': (6, 5), 'a_s002': (4, 7), 'c': (3, 3)}
    imgs = {}
    for key, (h, w) in shapes.items():
        imgs[key] = _png(rng, h, w)
        cv2.imwrite(str(folder / f'{key}.png'), imgs[key][0])
    ref = str(tmp_path / 'ref.lmdb')
    keys = list(shapes)
    make_lmdb_from_imgs(str(folder), ref, [f'{k}.png' for k in keys], keys, batch=2, compress_level=1,
                        map_size=1 << 20)
    ours = str(tmp_path / 'ours.lmdb')
    with LmdbWriter(ours, map_size=1 << 20, batch=2) as w:
        for key in keys:
            w.put(key, imgs[key][1], imgs[key][0].shape)
    assert open(osp.join(ours, 'meta_info.txt')).read() == open(osp.join(ref, 'meta_info.txt')).read()
    assert _read_all(ours) == _read_all(ref)
    # one key rule: ours == BasicSR's line.split('.')[0] as used by paired_paths_from_lmdb
    assert meta_info_keys(ours) == keys
    pairs = paired_paths_from_lmdb([ours, ref], ['lq', 'gt'])
    assert [p['gt_path'] for p in pairs] == sorted(keys)  # BasicSR sorts them
    assert meta_info_shapes(ours) == {k: (h, w, 3) for k, (h, w) in shapes.items()}
    for line in open(osp.join(ours, 'meta_info.txt')):
        assert meta_info_key(line) == parse_meta_line(line).key


def test_writer_grows_a_full_map_and_keeps_put_order(tmp_path):
    path = str(tmp_path / 'small.lmdb')
    values = {f'k{i}': os.urandom(200_000) for i in range(8)}  # 1.6 MB into a 256 kB map
    with LmdbWriter(path, map_size=1 << 18, batch=3) as w:
        for key, value in values.items():
            w.put(key, value, (1, len(value), 1), ext='npy', compress_level=0)
    assert _read_all(path) == values
    entries = read_meta_info(path)
    assert [e.key for e in entries] == list(values) and {e.ext for e in entries} == {'npy'}
    assert entries[0].shape == (1, 200_000, 1) and entries[0].compress_level == 0


def test_writer_removes_the_folder_on_error_and_rejects_bad_keys(tmp_path):
    path = str(tmp_path / 'bad.lmdb')
    with pytest.raises(RuntimeError, match='boom'):
        with LmdbWriter(path, map_size=1 << 20) as w:
            w.put('ok', b'x', (1, 1, 1))
            raise RuntimeError('boom')
    assert not osp.exists(path)
    w = LmdbWriter(path, map_size=1 << 20)
    for key in ('a.b', 'a b', '', 'é'):
        assert not is_valid_key(key)
        with pytest.raises(ValueError, match='invalid LMDB key'):
            w.put(key, b'x', (1, 1, 1))
    w.put('a', b'x', (1, 1))
    with pytest.raises(ValueError, match="duplicate LMDB key 'a'"):
        w.put('a', b'y', (1, 1))
    w.close()
    assert open(osp.join(path, 'meta_info.txt')).read() == 'a.png (1,1,1) 1\n'


@pytest.mark.parametrize('text, match', [
    (None, 'missing meta_info.txt'),
    ('\n\n', 'empty meta_info.txt'),
    ('a.png (2,2,3) 1\na.png (2,2,3) 1\n', "key 'a' listed twice"),
    ('a.png (2,2) 1\n', r"malformed line 1 .*'a.png \(2,2\) 1'"),
    ('a.b.png (2,2,3) 1\n', 'malformed line 1'),
])
def test_read_meta_info_errors(tmp_path, text, match):
    path = tmp_path / 'x.lmdb'
    path.mkdir()
    if text is not None:
        (path / 'meta_info.txt').write_text(text)
    with pytest.raises(LmdbCheckError, match=match):
        read_meta_info(str(path))


def test_blank_lines_are_skipped(tmp_path):
    path = tmp_path / 'x.lmdb'
    path.mkdir()
    (path / 'meta_info.txt').write_text('a.png (2,2,3) 1\n\nb.npy (4,4,1) 0\n')
    assert meta_info_shapes(str(path)) == {'a': (2, 2, 3), 'b': (4, 4, 1)}
