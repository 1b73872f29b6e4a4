"""Data checks before training (docs/guarantees.md, "Data checks before training").

Folder datasets (PairedImageDataset / SingleImageDataset on io_backend disk): missing or empty
folders, non-image files (named), GT/LQ folders that do not pair up (differing files named),
data of another scale; LMDBs: a sample of values decoded at start; a value that fails to decode
during training names the LMDB, the key and check-lmdb.
"""
import os
import os.path as osp
import shutil

import lmdb
import pytest
from basicsr.data import build_dataset

from kdsr_plugins.core import dataset_checks
from kdsr_plugins.core.dataset_checks import DatasetOptionError, ImageDecodeError, check_dataset_opt


def paired(gt, lq, phase='val', scale=4, **extra):
    return dict(name='set', type='PairedImageDataset', phase=phase, scale=scale, dataroot_gt=str(gt),
                dataroot_lq=str(lq), io_backend={'type': 'disk'}, **extra)


@pytest.fixture
def folders(demo_data, tmp_path):
    gt, lq = tmp_path / 'HR', tmp_path / 'LR'
    shutil.copytree(osp.join(demo_data, 'val_HR'), gt)
    shutil.copytree(osp.join(demo_data, 'val_LR_X4'), lq)
    return gt, lq


def test_good_folder_pair_passes(folders):
    check_dataset_opt(paired(*folders))
    assert len(build_dataset(paired(*folders))) == 2


def test_empty_and_missing_folders_are_refused(folders, tmp_path):
    """Found case: an empty validation folder crashed with UnboundLocalError at the first validation."""
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(DatasetOptionError, match=r'datasets.val \(set, PairedImageDataset\): dataroot_gt .*empty holds '
                                                 r'no image .*validation would crash'):
        check_dataset_opt(paired(empty, empty))
    with pytest.raises(DatasetOptionError, match=r"dataroot_lq '.*nowhere' is not a folder"):
        check_dataset_opt(paired(folders[0], tmp_path / 'nowhere'))
    with pytest.raises(DatasetOptionError, match='holds no image'):
        check_dataset_opt(dict(name='lq', type='SingleImageDataset', phase='test', dataroot_lq=str(empty),
                               io_backend={'type': 'disk'}))


@pytest.mark.parametrize('stray', ['Thumbs.db', 'notes.txt', 'README'])
def test_non_image_files_are_named(folders, stray):
    """Found case: a stray file gave BasicSR's "different number of images" without naming it."""
    gt, lq = folders
    (lq / stray).write_text('x')
    with pytest.raises(DatasetOptionError, match=rf'dataroot_lq .*LR holds 1 file\(s\) that are not images: {stray}'):
        check_dataset_opt(paired(gt, lq))
    (lq / stray).unlink()
    (lq / '.DS_Store').write_text('x')  # hidden files: BasicSR skips them, so do the checks
    check_dataset_opt(paired(gt, lq))


def test_unequal_folders_name_the_differing_files(folders):
    gt, lq = folders
    os.rename(lq / 'rocket.png', lq / 'rocket_copy.png')
    with pytest.raises(DatasetOptionError, match=r'do not pair up .*GT without LQ: rocket.png \(expects rocket.png\); '
                                                 r'LQ without GT: rocket_copy.png'):
        check_dataset_opt(paired(gt, lq))


def test_filename_template_pairs_edsr_names(folders):
    gt, lq = folders
    for name in os.listdir(lq):
        os.rename(lq / name, lq / name.replace('.png', 'x4.png'))
    check_dataset_opt(paired(gt, lq, filename_tmpl='{}x4'))
    with pytest.raises(DatasetOptionError, match=r"filename_tmpl '\{\}'.*GT without LQ: coffee.png"):
        check_dataset_opt(paired(gt, lq))


@pytest.mark.parametrize('backend', ['disk', 'lmdb'])
def test_data_of_another_scale_is_refused_outside_training(demo_data, backend):
    """Found case: scale 2 on x4 data scored the top-left quarter of each image."""
    ext = '.lmdb' if backend == 'lmdb' else ''
    opt = paired(osp.join(demo_data, 'val_HR' + ext), osp.join(demo_data, 'val_LR_X4' + ext), scale=2)
    opt['io_backend'] = {'type': backend}
    with pytest.raises(DatasetOptionError, match=r'GT is larger than 2 x LQ .*the data look x4'):
        check_dataset_opt(opt)
    opt['scale'] = 4
    check_dataset_opt(opt)


def test_training_folder_shapes_and_gt_size(demo_data):
    opt = paired(osp.join(demo_data, 'train_HR_sub'), osp.join(demo_data, 'train_LR_X2_sub'), phase='train', scale=4,
                 gt_size=64)
    with pytest.raises(DatasetOptionError, match=r'GT is not 4 x LQ .*the data look x2'):
        check_dataset_opt(opt)
    opt.update(scale=2, gt_size=512)
    with pytest.raises(DatasetOptionError, match=r'GT images in .* are smaller than gt_size 512'):
        check_dataset_opt(opt)


def _corrupt_value(lmdb_path, key):
    env = lmdb.open(str(lmdb_path), map_size=1 << 30)
    with env.begin(write=True) as txn:
        txn.put(key.encode(), b'not an image')
    env.close()


def test_lmdb_sample_is_decoded_at_start(demo_data, tmp_path):
    """Found case: corrupted LMDB values passed the start-up check (keys only)."""
    gt = tmp_path / 'val_HR.lmdb'
    shutil.copytree(osp.join(demo_data, 'val_HR.lmdb'), gt)
    _corrupt_value(gt, 'rocket')
    opt = paired(gt, osp.join(demo_data, 'val_LR_X4.lmdb'))
    opt['io_backend'] = {'type': 'lmdb'}
    with pytest.raises(DatasetOptionError, match=r'values do not decode as images: rocket.*check-lmdb'):
        check_dataset_opt(opt)


def test_decode_failure_while_reading_names_lmdb_key_and_check_lmdb(demo_data, tmp_path, monkeypatch):
    """A corrupt value outside the start-up sample fails, when drawn, with the LMDB, key and command."""
    gt = tmp_path / 'train_HR_sub.lmdb'
    shutil.copytree(osp.join(demo_data, 'train_HR_sub.lmdb'), gt)
    keys = [line.split('.')[0] for line in open(gt / 'meta_info.txt')]
    _corrupt_value(gt, keys[1])
    monkeypatch.setattr(dataset_checks, 'LMDB_DECODE_SAMPLE', 2)  # first and last key only
    opt = paired(gt, osp.join(demo_data, 'train_LR_X2_sub.lmdb'), phase='train', scale=2, gt_size=32,
                 use_hflip=False, use_rot=False)
    opt['io_backend'] = {'type': 'lmdb'}
    dataset = build_dataset(opt)
    dataset[0]
    with pytest.raises(ImageDecodeError, match=rf"key '{keys[1]}' of the LMDB .*train_HR_sub.lmdb \(gt\) does not "
                                               rf"decode .*python -m kdsr_plugins.data_prep check-lmdb .*train_HR_sub"):
        dataset[1]


def test_decode_failure_of_a_file_names_it(folders):
    lq = folders[1]
    (lq / 'rocket.png').write_bytes(b'\x89PNG broken')
    dataset = build_dataset(dict(name='lq', type='SingleImageDataset', phase='test', dataroot_lq=str(lq),
                                 io_backend={'type': 'disk'}))
    with pytest.raises(ImageDecodeError, match=r"image file '.*rocket.png' does not decode"):
        [dataset[i] for i in range(len(dataset))]
