"""Tests of kdsr_plugins.data_prep: demo set, LMDB tools, DIV2K recipe, benchmark layout, CLI."""
import os
import os.path as osp
import shutil

import kdsr_plugins  # noqa: F401  (shims, then basicsr)

import cv2
import lmdb
import numpy as np
import pytest

from kdsr_plugins.data_prep import (
    LmdbCheckError,
    benchmark_dataset_opt,
    bicubic_downsample,
    build_demo_dataset,
    check_lmdb,
    check_paired_lmdb,
    detect_filename_tmpl,
    modcrop,
    prepare_benchmark,
    prepare_div2k,
    subimage_grid,
    subimage_positions,
    write_lmdb,
)
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


def test_div2k_hr_only_generates_bicubic_lr(tmp_path):
    """No DIV2K_train_LR_bicubic: LR = bicubic of the whole mod-cropped HR, cut at (y/s, x/s), PNG."""
    root = tmp_path / 'hr_only'
    os.makedirs(root / 'DIV2K_train_HR')
    hrs = {'0001': _synthetic(253, 301, 11), '0002': _synthetic(240, 250, 12)}  # not multiples of 12
    cv2.imwrite(str(root / 'DIV2K_train_HR' / '0001.png'), hrs['0001'])
    cv2.imwrite(str(root / 'DIV2K_train_HR' / '0002.jpg'), hrs['0002'], [cv2.IMWRITE_JPEG_QUALITY, 90])
    hrs['0002'] = cv2.imread(str(root / 'DIV2K_train_HR' / '0002.jpg'))
    out = prepare_div2k(root, tmp_path / 'out', scales=(2, 4), crop_size=96, step=48, progress=False)
    assert out['lr_generated'] and out['num_images'] == 2
    assert not osp.exists(root / 'DIV2K_train_LR_bicubic')
    for stem, hr in hrs.items():
        hr_mod = modcrop(hr, 4)  # lcm of the scales
        grid = subimage_grid(hr_mod.shape[0], hr_mod.shape[1], 96, 48)
        for s in (2, 4):
            lr_full = bicubic_downsample(hr_mod, s)
            for j, (y, x) in enumerate(grid, 1):
                key = f'{stem}_s{j:03d}'
                path = osp.join(out['lr_sub'][s], f'{key}.png')
                with open(path, 'rb') as f:
                    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
                np.testing.assert_array_equal(cv2.imread(path), lr_full[y // s:(y + 96) // s, x // s:(x + 96) // s])
                np.testing.assert_array_equal(_lmdb_image(out['lr_lmdb'][s], key),
                                              lr_full[y // s:(y + 96) // s, x // s:(x + 96) // s])
        np.testing.assert_array_equal(_lmdb_image(out['hr_lmdb'], f'{stem}_s{len(grid):03d}'),
                                      hr_mod[grid[-1][0]:grid[-1][0] + 96, grid[-1][1]:grid[-1][1] + 96])
    for s in (2, 4):
        keys = check_paired_lmdb(out['hr_lmdb'], out['lr_lmdb'][s], s)
        assert keys == sorted(osp.splitext(n)[0] for n in os.listdir(out['hr_sub']))
    # the last sub-image is flush with the mod-cropped border: 253x301 -> 252x300
    assert subimage_grid(252, 300, 96, 48)[-1] == (156, 204)


def test_div2k_make_lr_flag_and_hint(div2k_root, tmp_path, capsys):
    """--make-lr ignores existing LR files; a missing X{s} folder next to others stays an error, with a hint."""
    out = prepare_div2k(div2k_root, tmp_path / 'o', scales=(3,), crop_size=240, step=240, make_lr=True,
                        make_lmdb=False, progress=False)
    hr = modcrop(cv2.imread(str(div2k_root / 'DIV2K_train_HR' / '0001.png')), 3)
    np.testing.assert_array_equal(cv2.imread(osp.join(out['lr_sub'][3], '0001_s001.png')),
                                  bicubic_downsample(hr, 3)[:80, :80])
    with pytest.raises(FileNotFoundError, match='missing LR folder .*X3.*--make-lr'):
        prepare_div2k(div2k_root, tmp_path / 'o2', scales=(3,))
    assert cli_main(['div2k', '--input', str(div2k_root), '--output', str(tmp_path / 'o3'), '--scales', '4',
                     '--crop-size', '240', '--step', '240', '--make-lr', '--no-lmdb']) == 0
    assert 'bicubic LR generated from HR' in capsys.readouterr().out


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


def test_benchmark_jpeg_hr_gets_png_lr(tmp_path):
    """JPEG HR: LR is written as lossless PNG, and a PNG copy of HR is the GT folder BasicSR pairs with it."""
    import basicsr.data

    root = tmp_path / 'bench'
    os.makedirs(root / 'Set14' / 'HR')
    cv2.imwrite(str(root / 'Set14' / 'HR' / 'lenna.jpg'), _synthetic(90, 70, 7), [cv2.IMWRITE_JPEG_QUALITY, 80])
    cv2.imwrite(str(root / 'Set14' / 'HR' / 'zebra.png'), _synthetic(64, 64, 8))
    opt = prepare_benchmark(root, ['Set14'], [4], progress=False)['Set14'][4]
    assert opt['dataroot_gt'] == str(root / 'Set14' / 'HR_png') and opt['filename_tmpl'] == '{}x4'
    assert sorted(os.listdir(opt['dataroot_lq'])) == ['lennax4.png', 'zebrax4.png']
    hr = cv2.imread(str(root / 'Set14' / 'HR' / 'lenna.jpg'), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(cv2.imread(str(root / 'Set14' / 'HR_png' / 'lenna.png')), hr)
    lr_path = osp.join(opt['dataroot_lq'], 'lennax4.png')
    with open(lr_path, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    np.testing.assert_array_equal(cv2.imread(lr_path), bicubic_downsample(modcrop(hr, 4), 4))
    assert benchmark_dataset_opt(root, 'Set14', 4) == opt
    ds = basicsr.data.build_dataset({**opt, 'phase': 'val', 'scale': 4})
    assert len(ds) == 2 and ds[0]['gt'].shape == (3, 88, 68) and ds[0]['lq'].shape == (3, 22, 17)
    # running again validates the existing folders; --overwrite rebuilds both
    assert prepare_benchmark(root, ['Set14'], [4], progress=False)['Set14'][4] == opt
    assert prepare_benchmark(root, ['Set14'], [4], overwrite=True, progress=False)['Set14'][4] == opt


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


# --------------------------------------------------------------------------------------- photos
def _photo_manifest(tmp_path, photos, **extra):
    import json
    man = {'format': 1, 'max_pixels': 200000, 'mod': 12, 'scales': [4], 'crop_size': 96, 'step': 96, 'photos': photos,
           **extra}
    path = tmp_path / 'manifest.json'
    path.write_text(json.dumps(man))
    return str(path)


def test_photo_set_from_manifest(tmp_path):
    import json

    import skimage

    from kdsr_plugins.data_prep.photos import build_photo_set, sha256_file, source_path

    photos = []
    for f, split in (('astronaut.png', 'train'), ('coffee.png', 'val'), ('rocket.jpg', 'test')):
        src = {'kind': 'skimage', 'version': skimage.__version__, 'file': f}
        photos.append({'name': f.split('.')[0], 'split': split, 'source': src, 'sha256': sha256_file(source_path(src)),
                       'resize_to': [300, 300] if f == 'astronaut.png' else None})
    man = _photo_manifest(tmp_path, photos)
    out = build_photo_set(man, str(tmp_path / 'photos'), progress=False)
    assert out['counts'] == {'train': 1, 'val': 1, 'test': 1}
    assert out['num_train_subimages'] == 16  # 0, 96, 192, 204 per axis
    assert check_paired_lmdb(out['train_gt_lmdb'], out['train_lq_lmdb']['4'], 4)[0] == 'astronaut_s001'
    hr = cv2.imread(str(tmp_path / 'photos' / 'test' / 'HR' / 'rocket.png'))
    assert hr.shape == (420, 636, 3)  # 427x640 cropped to multiples of 12
    lr = cv2.imread(str(tmp_path / 'photos' / 'test' / 'LR_bicubic' / 'X4' / 'rocketx4.png'))
    np.testing.assert_array_equal(lr, bicubic_downsample(hr, 4))
    astro = cv2.imread(str(tmp_path / 'photos' / 'train' / 'DIV2K_train_HR' / 'astronaut.png'))
    ref = cv2.resize(cv2.imread(source_path(photos[0]['source'])), (300, 300), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(astro, ref[:300, :300])
    assert out['test']['4']['dataroot_gt'].endswith('test/HR')
    assert json.loads((tmp_path / 'photos' / 'photo_set.json').read_text())['counts']['test'] == 1
    with pytest.raises(FileExistsError):
        build_photo_set(man, str(tmp_path / 'photos'), progress=False)


def test_photo_manifest_refuses_bad_sources(tmp_path):
    from kdsr_plugins.data_prep.photos import build_photo_set

    src = {'kind': 'skimage', 'version': '0', 'file': 'coffee.png'}
    man = _photo_manifest(tmp_path, [{'name': 'coffee', 'split': 'val', 'source': src, 'sha256': '0' * 64}])
    with pytest.raises(ValueError, match='1 source files differ from the manifest'):
        build_photo_set(man, str(tmp_path / 'o'), progress=False)
    deb = {'kind': 'deb', 'package': 'no-such-wallpapers', 'version': '1.0-1', 'path': '/usr/share/none/x.jpg'}
    man = _photo_manifest(tmp_path, [{'name': 'x', 'split': 'test', 'source': deb, 'sha256': '1' * 64}])
    with pytest.raises(FileNotFoundError, match='apt-get install no-such-wallpapers=1.0-1'):
        build_photo_set(man, str(tmp_path / 'o'), root=str(tmp_path), progress=False)
    man = _photo_manifest(tmp_path, [{'name': 'x', 'split': 'holdout', 'source': deb, 'sha256': '1' * 64}])
    with pytest.raises(ValueError, match='valid split'):
        build_photo_set(man, str(tmp_path / 'o'), progress=False)
    assert not osp.exists(tmp_path / 'o')


def test_committed_photo_manifest_is_consistent():
    """The committed manifest: >= 30 photos of >= 1 MP from Debian, >= 10 test, disjoint splits by source."""
    from kdsr_plugins.data_prep.photos import load_manifest
    from kdsr_testutils import ROOT
    man = load_manifest(osp.join(ROOT, 'scripts', 'photo_manifest.json'))
    debs = [p for p in man['photos'] if p['source']['kind'] == 'deb']
    assert len(debs) >= 30 and all(p['source_size'][0] * p['source_size'][1] >= 1_000_000 for p in debs)
    assert sum(p['split'] == 'test' for p in man['photos']) >= 10
    assert len({p['source']['path'] for p in debs}) == len(debs)
