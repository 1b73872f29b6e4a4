"""Tests of kdsr_plugins.data_prep: demo set, LMDB tools, DIV2K recipe, benchmark layout, CLI."""
import os
import os.path as osp
import shutil

import kdsr_plugins  # noqa: F401  (shims, then basicsr)

import cv2
import lmdb
import numpy as np
import pytest

from kdsr_plugins.data_prep import (LmdbCheckError, benchmark_dataset_opt, bicubic_downsample, build_demo_dataset,
                                    check_lmdb, check_paired_lmdb, detect_filename_tmpl, modcrop, prepare_benchmark,
                                    prepare_div2k, subimage_grid, subimage_positions, write_lmdb)
from kdsr_plugins.data_prep.__main__ import main as cli_main

SCALES = (2, 3, 4)


def _lmdb_image(lmdb_path, key):
    env = lmdb.open(lmdb_path, readonly=True, lock=False)
    with env.begin() as txn:
        buf = txn.get(key.encode())
    env.close()
    return cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_UNCHANGED)


def _synthetic(h, w, seed):
    """Smooth colour image with some texture (uint8 BGR)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([np.sin(xx / 17. + c) * np.cos(yy / 23. - c) for c in range(3)], -1) * 90 + 128
    return np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    return build_demo_dataset(tmp_path_factory.mktemp('data') / 'demo', scales=SCALES, max_train_images=6)


# ----------------------------------------------------------------------------------------- demo
def test_demo_keys_and_shapes(demo):
    assert demo['num_train'] == 6 and demo['num_val'] == 2
    for s in SCALES:
        train_keys = check_paired_lmdb(demo['train_gt_lmdb'], demo['train_lq_lmdb'][s], s)
        assert len(train_keys) == 6
        assert check_paired_lmdb(demo['val_gt_lmdb'], demo['val_lq_lmdb'][s], s) == ['coffee', 'rocket']
        lq = check_lmdb(demo['train_lq_lmdb'][s])
        assert set(lq.values()) == {(240 // s, 240 // s, 3)}
        assert sorted(os.listdir(demo['train_lq'][s])) == sorted(f'{k}.png' for k in train_keys)
    assert check_lmdb(demo['val_gt_lmdb']) == {'coffee': (396, 600, 3), 'rocket': (420, 636, 3)}


def test_demo_lr_is_bicubic_of_hr(demo):
    for key in ('rocket',):
        hr = cv2.imread(osp.join(demo['val_gt'], f'{key}.png'), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(_lmdb_image(demo['val_gt_lmdb'], key), hr)
        for s in SCALES:
            lr = cv2.imread(osp.join(demo['val_lq'][s], f'{key}.png'), cv2.IMREAD_UNCHANGED)
            np.testing.assert_array_equal(lr, bicubic_downsample(hr, s))
            np.testing.assert_array_equal(_lmdb_image(demo['val_lq_lmdb'][s], key), lr)
    key = sorted(check_lmdb(demo['train_gt_lmdb'], decode=False))[0]
    hr = _lmdb_image(demo['train_gt_lmdb'], key)
    np.testing.assert_array_equal(_lmdb_image(demo['train_lq_lmdb'][4], key), bicubic_downsample(hr, 4))


def test_demo_idempotent_and_write_lmdb_refuses(demo):
    watched = [osp.join(demo['root'], '.demo_complete.json'), osp.join(demo['train_gt_lmdb'], 'data.mdb'),
               osp.join(demo['val_lq'][4], 'coffee.png')]
    before = [os.stat(p).st_mtime_ns for p in watched]
    again = build_demo_dataset(demo['root'], scales=SCALES, max_train_images=6)
    assert [os.stat(p).st_mtime_ns for p in watched] == before
    assert again == demo
    # a subset of scales is served from the same build
    assert build_demo_dataset(demo['root'], scales=(4,), max_train_images=6)['train_lq_lmdb'] == {
        4: demo['train_lq_lmdb'][4]}
    with pytest.raises(FileExistsError, match='overwrite'):
        build_demo_dataset(demo['root'], scales=SCALES, max_train_images=3)
    with pytest.raises(FileExistsError, match='already exists'):
        write_lmdb(demo['val_gt'], demo['val_gt_lmdb'])
    assert [os.stat(p).st_mtime_ns for p in watched] == before


def test_write_lmdb_overwrite_and_keys(demo, tmp_path):
    target = str(tmp_path / 'val.lmdb')
    write_lmdb(demo['val_gt'], target, progress=False)
    with pytest.raises(FileExistsError):
        write_lmdb(demo['val_gt'], target)
    files = [osp.join(demo['val_gt'], f) for f in ('rocket.png', 'coffee.png')]
    write_lmdb(files, target, keys=['r', 'c'], overwrite=True, progress=False)
    assert check_lmdb(target) == {'r': (420, 636, 3), 'c': (396, 600, 3)}
    with open(osp.join(target, 'meta_info.txt')) as f:
        assert f.readline() == 'r.png (420,636,3) 1\n'
    with pytest.raises(ValueError, match='invalid LMDB keys'):
        write_lmdb(files, str(tmp_path / 'bad.lmdb'), keys=['a.b', 'c'])
    with pytest.raises(ValueError, match='duplicate'):
        write_lmdb(files, str(tmp_path / 'bad.lmdb'), keys=['a', 'a'])
    with pytest.raises(ValueError, match='.lmdb'):
        write_lmdb(files, str(tmp_path / 'bad'))
    assert not osp.exists(tmp_path / 'bad.lmdb')


# ----------------------------------------------------------------------------------- check_lmdb
@pytest.fixture
def lmdb_copy(demo, tmp_path):
    target = str(tmp_path / 'copy.lmdb')
    shutil.copytree(demo['train_lq_lmdb'][4], target)
    return target


def test_check_lmdb_missing_meta_info(lmdb_copy):
    os.remove(osp.join(lmdb_copy, 'meta_info.txt'))
    with pytest.raises(LmdbCheckError, match='missing meta_info.txt'):
        check_lmdb(lmdb_copy)


def test_check_lmdb_truncated_data(lmdb_copy):
    data = osp.join(lmdb_copy, 'data.mdb')
    with open(data, 'r+b') as f:
        f.truncate(os.path.getsize(data) // 2)
    with pytest.raises(LmdbCheckError, match='corrupt LMDB.*truncated'):
        check_lmdb(lmdb_copy)


def test_check_lmdb_garbage_data(lmdb_copy):
    with open(osp.join(lmdb_copy, 'data.mdb'), 'r+b') as f:
        f.write(np.random.default_rng(0).integers(0, 256, 16384, dtype=np.uint8).tobytes())
    with pytest.raises(LmdbCheckError, match='corrupt LMDB'):
        check_lmdb(lmdb_copy)


def test_check_lmdb_corrupt_value(lmdb_copy):
    key = next(iter(check_lmdb(lmdb_copy)))
    env = lmdb.open(lmdb_copy, map_size=64 << 20)
    with env.begin(write=True) as txn:
        txn.put(key.encode(), b'not a png')
    env.close()
    with pytest.raises(LmdbCheckError, match=f'do not decode.*{key}'):
        check_lmdb(lmdb_copy)
    check_lmdb(lmdb_copy, decode=False)


def test_check_lmdb_key_missing_from_db(lmdb_copy):
    with open(osp.join(lmdb_copy, 'meta_info.txt'), 'a') as f:
        f.write('ghost_s0000_0000.png (60,60,3) 1\n')
    with pytest.raises(LmdbCheckError, match='missing from the LMDB.*ghost_s0000_0000'):
        check_lmdb(lmdb_copy)


def test_check_lmdb_bad_paths(tmp_path):
    with pytest.raises(LmdbCheckError, match="end in '.lmdb'"):
        check_lmdb(str(tmp_path))
    with pytest.raises(LmdbCheckError, match='not found'):
        check_lmdb(str(tmp_path / 'nothing.lmdb'))


def test_check_paired_lmdb_mismatches(demo):
    with pytest.raises(LmdbCheckError, match='different keys; only in GT: coffee, rocket'):
        check_paired_lmdb(demo['val_gt_lmdb'], demo['train_lq_lmdb'][4], 4)
    with pytest.raises(LmdbCheckError, match='not 2 x LQ shape for keys: coffee'):
        check_paired_lmdb(demo['val_gt_lmdb'], demo['val_lq_lmdb'][4], 2)


# ---------------------------------------------------------------------------------------- DIV2K
def test_subimage_positions():
    assert subimage_positions(600, 480, 240) == [0, 120]
    assert subimage_positions(720, 480, 240) == [0, 240]
    assert subimage_positions(1356, 480, 240) == [0, 240, 480, 720, 876]
    assert subimage_positions(500, 480, 240, thresh_size=20) == [0]
    assert subimage_positions(480, 480, 240) == [0]
    assert subimage_grid(600, 720, 480, 240) == [(0, 0), (0, 240), (120, 0), (120, 240)]
    with pytest.raises(ValueError, match='smaller than crop_size'):
        subimage_positions(400, 480, 240)


@pytest.fixture(scope='module')
def div2k_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('div2k_in')
    os.makedirs(root / 'DIV2K_train_HR')
    for s in (2, 4):
        os.makedirs(root / 'DIV2K_train_LR_bicubic' / f'X{s}')
    for i in (1, 2):
        hr = _synthetic(600, 720, i)
        cv2.imwrite(str(root / 'DIV2K_train_HR' / f'{i:04d}.png'), hr)
        for s in (2, 4):
            cv2.imwrite(str(root / 'DIV2K_train_LR_bicubic' / f'X{s}' / f'{i:04d}x{s}.png'), bicubic_downsample(hr, s))
    return root


def test_div2k_subimages_and_lmdb(div2k_root, tmp_path):
    out = prepare_div2k(div2k_root, tmp_path / 'out', scales=(2, 4), progress=False)
    names = [f'{i:04d}_s{j:03d}.png' for i in (1, 2) for j in range(1, 5)]
    assert out['num_subimages'] == 8 and out['num_images'] == 2
    assert sorted(os.listdir(out['hr_sub'])) == names
    assert out['hr_lmdb'].endswith('DIV2K_train_HR_sub.lmdb')
    for s in (2, 4):
        assert out['lr_sub'][s] == str(tmp_path / 'out' / 'DIV2K_train_LR_bicubic' / f'X{s}_sub')
        assert out['lr_lmdb'][s].endswith(f'DIV2K_train_LR_bicubic_X{s}_sub.lmdb')
        assert sorted(os.listdir(out['lr_sub'][s])) == names
        keys = check_paired_lmdb(out['hr_lmdb'], out['lr_lmdb'][s], s)
        assert keys == [n[:-4] for n in names]
    lr4 = cv2.imread(str(div2k_root / 'DIV2K_train_LR_bicubic' / 'X4' / '0002x4.png'))
    hr = cv2.imread(str(div2k_root / 'DIV2K_train_HR' / '0002.png'))
    for j, (y, x) in enumerate(subimage_grid(600, 720, 480, 240), 1):
        patch = cv2.imread(osp.join(out['lr_sub'][4], f'0002_s{j:03d}.png'))
        np.testing.assert_array_equal(patch, lr4[y // 4:y // 4 + 120, x // 4:x // 4 + 120])
        np.testing.assert_array_equal(_lmdb_image(out['hr_lmdb'], f'0002_s{j:03d}'), hr[y:y + 480, x:x + 480])
    with pytest.raises(FileExistsError, match='DIV2K_train_HR_sub'):
        prepare_div2k(div2k_root, tmp_path / 'out', scales=(2, 4), progress=False)


@pytest.mark.subprocess
def test_div2k_small_crops_multiprocess(div2k_root, tmp_path):
    out = prepare_div2k(div2k_root, tmp_path / 'o', scales=(4,), crop_size=240, step=120, n_thread=2,
                        make_lmdb=False, progress=False)
    assert out['num_subimages'] == 2 * 4 * 5
    assert len(os.listdir(out['lr_sub'][4])) == 40 and not osp.exists(out['hr_lmdb'])
    assert cv2.imread(osp.join(out['lr_sub'][4], '0001_s020.png')).shape == (60, 60, 3)
    with pytest.raises(ValueError, match='multiples of scale 4'):
        prepare_div2k(div2k_root, tmp_path / 'o4', scales=(4,), crop_size=240, step=130, progress=False)


def test_div2k_input_errors(div2k_root, tmp_path):
    with pytest.raises(FileNotFoundError, match='DIV2K input folder not found.*DIV2K_train_HR'):
        prepare_div2k(tmp_path / 'nope', tmp_path / 'out')
    with pytest.raises(FileNotFoundError, match=r'missing LR folder .*X3'):
        prepare_div2k(div2k_root, tmp_path / 'out', scales=(3,), crop_size=480, step=240)
    assert not osp.exists(tmp_path / 'out')


# ------------------------------------------------------------------------------------ benchmark
def test_benchmark_generate_validate_and_load(tmp_path):
    import basicsr.data

    root = tmp_path / 'bench'
    os.makedirs(root / 'Set5' / 'HR')
    hrs = {'baby': _synthetic(101, 77, 5), 'bird': _synthetic(64, 48, 6)}
    for name, img in hrs.items():
        cv2.imwrite(str(root / 'Set5' / 'HR' / f'{name}.png'), img)
    opts = prepare_benchmark(root, ['Set5'], [2, 4], progress=False)
    opt = opts['Set5'][4]
    assert opt == benchmark_dataset_opt(root, 'Set5', 4)
    assert opt['filename_tmpl'] == '{}x4' and opt['io_backend'] == {'type': 'disk'}
    lr = cv2.imread(osp.join(opt['dataroot_lq'], 'babyx4.png'))
    np.testing.assert_array_equal(lr, bicubic_downsample(modcrop(hrs['baby'], 4), 4))
    # same-name layout is detected too
    os.makedirs(root / 'Set5' / 'LR_bicubic' / 'X3')
    for name, img in hrs.items():
        cv2.imwrite(str(root / 'Set5' / 'LR_bicubic' / 'X3' / f'{name}.png'), bicubic_downsample(modcrop(img, 3), 3))
    assert detect_filename_tmpl(str(root / 'Set5' / 'HR'), str(root / 'Set5' / 'LR_bicubic' / 'X3'), 3) == '{}'
    assert prepare_benchmark(root, ['Set5'], [3])['Set5'][3]['filename_tmpl'] == '{}'
    # BasicSR crops the non-mod-cropped GT in the val phase
    ds = basicsr.data.build_dataset({**opt, 'phase': 'val', 'scale': 4})
    item = ds[0]
    assert item['lq'].shape == (3, 25, 19) and item['gt'].shape == (3, 100, 76)
    with pytest.raises(FileNotFoundError, match='missing HR folders.*Set14'):
        prepare_benchmark(root, ['Set5', 'Set14'], [4])


# ---------------------------------------------------------------------------------------- BasicSR
def test_basicsr_paired_dataset_loads_demo_lmdb(demo):
    import basicsr.data

    common = {'type': 'PairedImageDataset', 'dataroot_gt': demo['train_gt_lmdb'],
              'dataroot_lq': demo['train_lq_lmdb'][4], 'io_backend': {'type': 'lmdb'}, 'scale': 4}
    train = basicsr.data.build_dataset({**common, 'name': 'demo_train', 'phase': 'train', 'gt_size': 64,
                                        'use_hflip': True, 'use_rot': True})
    assert len(train) == 6
    item = train[0]
    assert item['gt'].shape == (3, 64, 64) and item['lq'].shape == (3, 16, 16)
    assert 0 <= float(item['gt'].min()) and float(item['gt'].max()) <= 1
    val = basicsr.data.build_dataset({**common, 'name': 'demo_val', 'phase': 'val', 'scale': 3,
                                      'dataroot_gt': demo['val_gt_lmdb'], 'dataroot_lq': demo['val_lq_lmdb'][3],
                                      'io_backend': {'type': 'lmdb'}})
    item = val[0]
    assert item['lq_path'] == 'coffee' and item['gt'].shape == (3, 396, 600) and item['lq'].shape == (3, 132, 200)


# -------------------------------------------------------------------------------------------- CLI
def test_cli_user_errors_exit_2(tmp_path, capsys, lmdb_copy):
    os.remove(osp.join(lmdb_copy, 'meta_info.txt'))
    assert cli_main(['check-lmdb', lmdb_copy]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: missing meta_info.txt') and err.count('\n') == 1
    assert cli_main(['div2k', '--input', str(tmp_path / 'none'), '--output', str(tmp_path / 'o')]) == 2
    assert 'DIV2K input folder not found' in capsys.readouterr().err
    assert cli_main(['benchmark', '--root', str(tmp_path / 'none'), '--sets', 'Set5']) == 2
    assert 'benchmark root not found' in capsys.readouterr().err


def test_cli_demo_and_check(demo, capsys):
    assert cli_main(['demo', '--out', demo['root'], '--max-train-images', '6']) == 0
    assert 'demo dataset ready' in capsys.readouterr().out
    assert cli_main(['check-lmdb', demo['train_gt_lmdb'], '--lq', demo['train_lq_lmdb'][2], '--scale', '2']) == 0
    assert capsys.readouterr().out.startswith('OK: 6 identical keys')
    assert cli_main(['demo', '--out', demo['root'], '--max-train-images', '2']) == 2
