"""kdsr_plugins.report: log parsing, grouping/statistics and the written table/pictures (no training).

The fake logs are written through BasicSR's own logger format, ``dict2str``, ``MessageLogger`` and
``SRModel._log_validation_metric_values`` (with BaseModel's best-metric bookkeeping), following the
order of ``basicsr/train.py`` and ``basicsr/test.py``, so the parser sees BasicSR's exact format.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import os.path as osp
import statistics

import cv2
import numpy as np
import pytest
from basicsr.models.base_model import BaseModel
from basicsr.models.sr_model import SRModel
from basicsr.utils import MessageLogger, get_root_logger
from basicsr.utils.options import dict2str

from kdsr_plugins.report import ReportOptions, build_report, parse_test_log, parse_train_log, read_experiments
from kdsr_plugins.report.__main__ import main as report_main
from kdsr_plugins.report.figures import textured_crop, y_psnr
from kdsr_plugins.report.summary import build_groups, classify, mean_std

DATASET = 'demo_val'


@contextlib.contextmanager
def basicsr_log(path: str):
    """Route BasicSR's root logger into ``path`` with BasicSR's format."""
    logger = get_root_logger()
    handler = logging.FileHandler(path, 'w')
    handler.setFormatter(logging.Formatter('%(asctime)s %(levelname)s: %(message)s'))
    handler.setLevel(logging.INFO)
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield logger
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        handler.close()


class FakeModel:
    """Just BasicSR's validation bookkeeping and logging (``SRModel.nondist_validation`` minus the images)."""

    _initialize_best_metric_results = BaseModel._initialize_best_metric_results
    _update_best_metric_result = BaseModel._update_best_metric_result
    _log_validation_metric_values = SRModel._log_validation_metric_values

    def __init__(self, opt: dict):
        self.opt = opt

    def validation(self, current_iter, dataset: str, values: dict[str, float]) -> None:
        self._initialize_best_metric_results(dataset)
        self.metric_results = dict(values)
        for metric, value in values.items():
            self._update_best_metric_result(dataset, metric, value, current_iter)
        self._log_validation_metric_values(current_iter, dataset, None)


def metric_opt() -> dict:
    return {'psnr': {'type': 'calculate_psnr', 'crop_border': 4, 'test_y_channel': True},
            'ssim': {'type': 'calculate_ssim', 'crop_border': 4, 'test_y_channel': True}}


def curve_value(it: int, offset: float) -> dict[str, float]:
    return {'psnr': 20.0 + offset + 0.01 * it, 'ssim': 0.5 + 0.001 * it}


def write_train_log(root: str, name: str, total_iter: int, val_freq: int | None, print_freq: int, offset: float,
                    start_iter: int = 0, stop_at: int | None = None, stamp: str = '20250101_000000') -> str:
    """Follow basicsr/train.py: option dump, start line, progress/validation lines, end-of-training validation."""
    folder = osp.join(root, name)
    os.makedirs(folder, exist_ok=True)
    path = osp.join(folder, f'train_{name}_{stamp}.log')
    opt = {'name': name, 'model_type': 'KDModel', 'scale': 4, 'num_gpu': 0, 'manual_seed': 0,
           'train': {'ema_decay': 0, 'total_iter': total_iter, 'warmup_iter': -1},
           'logger': {'print_freq': print_freq, 'save_checkpoint_freq': total_iter, 'use_tb_logger': False}}
    if val_freq:
        opt['val'] = {'val_freq': val_freq, 'save_img': False, 'metrics': metric_opt()}
    model = FakeModel(opt)
    with basicsr_log(path) as logger:
        logger.info(dict2str(opt))
        if start_iter:
            logger.info(f'Resuming training from epoch: 0, iter: {start_iter}.')
        logger.info(f'Start training from epoch: 0, iter: {start_iter}')
        msg_logger = MessageLogger(opt, start_iter)
        for it in range(start_iter + 1, (stop_at or total_iter) + 1):
            if it % print_freq == 0:
                msg_logger({'epoch': it // 7, 'iter': it, 'lrs': [1e-3], 'time': 0.1, 'data_time': 0.01,
                            'l_pix': 0.1, 'l_kd': 0.05})
            if it % total_iter == 0:
                logger.info('Saving models and training states.')
            if val_freq and it % val_freq == 0:
                model.validation(it, DATASET, curve_value(it, offset))
        if stop_at is None:
            logger.info('End of training. Time consumed: 0:00:01')
            logger.info('Save the latest model.')
            if val_freq:  # train.py validates once more with current_iter = total_iter + 1
                model.validation(total_iter + 1, DATASET, curve_value(total_iter, offset))
    return path


def write_test_log(root: str, name: str, metrics: dict[str, dict[str, float]], stamp: str = '20250101_000100') -> str:
    """Follow basicsr/test.py: option dump, one validation per test set with current_iter = opt name."""
    folder = osp.join(root, name)
    os.makedirs(folder, exist_ok=True)
    path = osp.join(folder, f'test_{name}_{stamp}.log')
    opt = {'name': name, 'model_type': 'SRModel', 'val': {'save_img': True, 'suffix': None, 'metrics': metric_opt()}}
    model = FakeModel(opt)
    with basicsr_log(path) as logger:
        logger.info(dict2str(opt))
        for dataset, values in metrics.items():
            logger.info(f'Number of test images in {dataset}: 2')
            logger.info(f'Testing {dataset}...')
            model.validation(name, dataset, values)
    return path


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


# ------------------------------------------------------------------------------------------ parsing
def test_train_log_iterations_from_val_freq(tmp_path):
    path = write_train_log(str(tmp_path), 'quality_kd_s0', total_iter=22, val_freq=5, print_freq=4, offset=0.0)
    text = read(path)
    assert 'Validation demo_val\n\t # psnr: 20.0500\tBest: 20.0500 @ 5 iter' in text  # BasicSR's format
    log = parse_train_log(text)
    assert (log.val_freq, log.total_iter) == (5, 22)
    psnr = log.curves[DATASET]['psnr']
    assert sorted(psnr) == [5, 10, 15, 20, 22]  # the end-of-training validation belongs to total_iter
    for it in (5, 10, 15, 20, 22):
        assert psnr[it] == pytest.approx(round(curve_value(it, 0.0)['psnr'], 4))
        assert log.curves[DATASET]['ssim'][it] == pytest.approx(round(curve_value(it, 0.0)['ssim'], 4))


def test_train_log_end_validation_merges_with_last(tmp_path):
    log = parse_train_log(read(write_train_log(str(tmp_path), 'x_s0', 20, 5, 5, 0.0)))
    assert sorted(log.curves[DATASET]['psnr']) == [5, 10, 15, 20]


def test_train_log_resume_merges_files(tmp_path):
    root = str(tmp_path)
    write_train_log(root, 'quality_kd_s1', 40, 10, 4, 1.0, stop_at=23, stamp='20250101_000000')
    write_train_log(root, 'quality_kd_s1', 40, 10, 4, 1.0, start_iter=20, stamp='20250101_010000')
    os.makedirs(osp.join(root, 'quality_kd_s1_archived_20250101_000000'))  # BasicSR's renamed copy: skipped
    runs = read_experiments(root)
    assert list(runs) == ['quality_kd_s1']
    psnr = runs['quality_kd_s1'].curves[DATASET]['psnr']
    assert sorted(psnr) == [10, 20, 30, 40]
    assert psnr[30] == pytest.approx(21.3)


def test_train_log_without_val_freq_uses_progress_lines(tmp_path):
    path = write_train_log(str(tmp_path), 'x_s0', 12, 4, 4, 0.0)
    text = read(path).replace('val_freq: 4', 'no_freq: 4')
    log = parse_train_log(text)
    assert log.val_freq is None
    assert sorted(log.curves[DATASET]['psnr']) == [4, 8, 12]


def test_progress_iteration_with_thousands_separator():
    text = ('2025-01-01 00:00:00,000 INFO: [a..][epoch:  1, iter:   1,200, lr:(1.000e-04,)] [eta: 0:00:01, '
            'time (data): 0.1 (0.0)] l_pix: 1.0e-01 \n'
            '2025-01-01 00:00:01,000 INFO: Validation Set5\n\t # psnr: 30.0000\tBest: 30.0000 @ 1200 iter\n\n')
    assert parse_train_log(text).curves == {'Set5': {'psnr': {1200: 30.0}}}


def test_parse_test_log_two_datasets(tmp_path):
    path = write_test_log(str(tmp_path), 'test_q_kd_s0', {'Set5': {'psnr': 31.5, 'ssim': 0.88},
                                                          'Set14': {'psnr': 28.25, 'ssim': 0.77}})
    assert parse_test_log(read(path)) == {'Set5': {'psnr': 31.5, 'ssim': 0.88}, 'Set14': {'psnr': 28.25, 'ssim': 0.77}}


def test_classify_default_patterns():
    assert classify('quality_kd_s0') == ('kd', 0, False)
    assert classify('test_quality_mipkd_s12') == ('mipkd', 12, False)
    assert classify('test_quality_teacher_edsr') == ('teacher_edsr', None, True)
    assert classify('demo_teacher_rcan_s0') == ('teacher_rcan', 0, True)
    assert classify('no_seed_here') is None
    assert classify('run-a-seed3', group_by=r'run-(?P<method>\w)-seed(?P<seed>\d+)') == ('a', 3, False)


def test_mean_std_sample():
    mean, std = mean_std([1.0, 2.0, 4.0])
    assert mean == pytest.approx(7 / 3)
    assert std == pytest.approx(statistics.stdev([1.0, 2.0, 4.0]))
    assert mean_std([5.0]) == (5.0, None)


def test_textured_crop_finds_texture():
    rng = np.random.default_rng(0)
    img = np.full((64, 80, 3), 128, np.uint8)
    img[36:52, 48:64] = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    y, x = textured_crop(img, 16, align=4)
    assert (y, x) == (36, 48)


# ------------------------------------------------------------------------------------------ report
PSNR = {  # method -> seed -> final test PSNR
    'scratch': {0: 24.10, 1: 24.20, 2: 24.00},
    'kd': {0: 24.30, 1: 24.25, 2: 24.35},
    'dukd': {0: 24.50, 1: 24.40, 2: 24.45},
}
TEACHER_PSNR = 25.5


def ssim_of(psnr: float) -> float:
    return round(0.6 + (psnr - 24) / 10, 4)


@pytest.fixture
def fake_runs(tmp_path):
    """experiments/, results/ with visualizations, and HR/LR folders of two validation images."""
    exp, res = str(tmp_path / 'experiments'), str(tmp_path / 'results')
    rng = np.random.default_rng(1)
    hr = {img: rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for img in ('coffee', 'rocket')}
    for folder, scale in (('val_HR', 1), ('val_LR_X4', 4)):
        os.makedirs(tmp_path / folder)
        for img, arr in hr.items():
            cv2.imwrite(str(tmp_path / folder / f'{img}.png'), arr[::scale, ::scale])

    def save_outputs(test_name: str, noise: float) -> None:
        vis = osp.join(res, test_name, 'visualization', DATASET)
        os.makedirs(vis, exist_ok=True)
        for img, arr in hr.items():
            out = np.clip(arr + rng.normal(0, noise, arr.shape), 0, 255).astype(np.uint8)
            cv2.imwrite(osp.join(vis, f'{img}_{test_name}.png'), out)

    for method, seeds in PSNR.items():
        for seed, psnr in seeds.items():
            name = f'quality_{method}_s{seed}'
            write_train_log(exp, name, 20, 5, 4, offset=psnr - 20.4)
            write_test_log(res, f'test_{name}', {DATASET: {'psnr': psnr, 'ssim': ssim_of(psnr)}})
            save_outputs(f'test_{name}', 20 - psnr / 2)
    write_test_log(res, 'test_quality_teacher_edsr', {DATASET: {'psnr': TEACHER_PSNR, 'ssim': ssim_of(TEACHER_PSNR)}})
    save_outputs('test_quality_teacher_edsr', 3)
    write_test_log(res, 'test_other_kd_s0', {DATASET: {'psnr': 99.0, 'ssim': 0.99}})  # filtered out by include
    return tmp_path


def table_row(table: str, label: str) -> list[str]:
    rows = [line for line in table.splitlines() if line.startswith(f'| {label} |')]
    assert len(rows) == 1, table
    return [c.strip() for c in rows[0].strip('|').split('|')]


@pytest.mark.slow
def test_build_report_table_and_pictures(fake_runs):
    root = fake_runs
    out = str(root / 'report')
    opt = ReportOptions(results=str(root / 'results'), experiments=str(root / 'experiments'), out=out,
                        include=r'^(test_)?quality_', labels={'scratch': 'Student from scratch', 'kd': 'Logits KD'},
                        hr=str(root / 'val_HR'), lr=str(root / 'val_LR_X4'), scale=4, crop_size=16)
    written = build_report(opt)
    assert set(written) == {'table', 'curves', 'grid', 'summary'}
    table = read(written['table'])
    head = [c.strip() for c in table.splitlines()[4].strip('|').split('|')]
    assert head == ['Method', 'Seeds', 'PSNR (Y)', 'SSIM (Y)', 'Δ PSNR vs Student from scratch',
                    'Δ PSNR vs Logits KD']
    # order: baselines, other methods, teachers; the 'other_' run is excluded
    labels = [line.split('|')[1].strip() for line in table.splitlines() if line.startswith('| ') and '---' not in line]
    assert labels == ['Method', 'Student from scratch', 'Logits KD', 'dukd', 'Teacher (edsr)']
    assert '99.000' not in table

    for label, key in (('Student from scratch', 'scratch'), ('Logits KD', 'kd'), ('dukd', 'dukd')):
        values = list(PSNR[key].values())
        row = table_row(table, label)
        assert row[1] == '0,1,2'
        assert row[2] == f'{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}'
        ssims = [ssim_of(v) for v in values]
        assert row[3] == f'{statistics.fmean(ssims):.4f} ± {statistics.stdev(ssims):.4f}'
    row = table_row(table, 'dukd')
    diffs = [PSNR['dukd'][s] - PSNR['scratch'][s] for s in (0, 1, 2)]
    assert row[4] == f'{statistics.fmean(diffs):+.3f} ± {statistics.stdev(diffs):.3f}'
    diffs = [PSNR['dukd'][s] - PSNR['kd'][s] for s in (0, 1, 2)]
    assert row[5] == f'{statistics.fmean(diffs):+.3f} ± {statistics.stdev(diffs):.3f}'
    assert table_row(table, 'Student from scratch')[4] == '—'
    teacher = table_row(table, 'Teacher (edsr)')
    assert teacher[1:3] == ['–', f'{TEACHER_PSNR:.3f}']
    assert teacher[4] == f'{TEACHER_PSNR - statistics.fmean(PSNR["scratch"].values()):+.3f} †'

    for key in ('curves', 'grid'):
        img = cv2.imread(written[key])
        assert img is not None and img.shape[0] > 100 and img.shape[1] > 100
    summary = json.loads(read(written['summary']))
    assert summary['kd']['runs']['s1']['test'][DATASET]['psnr'] == PSNR['kd'][1]
    assert [it for it, _ in summary['kd']['runs']['s1']['curves'][DATASET]['psnr']] == [5, 10, 15, 20]
    assert summary['teacher_edsr']['teacher'] is True


def test_cli_writes_files(fake_runs, capsys):
    root = fake_runs
    out = root / 'cli'
    rc = report_main(['--experiments', str(root / 'experiments'), '--results', str(root / 'results'),
                      '--out', str(out), '--include', '^(test_)?quality_', '--label', 'dukd=DUKD',
                      '--hr', str(root / 'val_HR'), '--lr', str(root / 'val_LR_X4'), '--grid-image', 'rocket',
                      '--crop', '8,12,24', '--grid-seed', '1'])
    assert rc == 0
    for name in ('table.md', 'psnr_curves.png', 'grid.png', 'summary.json'):
        assert (out / name).is_file()
    assert '| DUKD | 0,1,2 |' in capsys.readouterr().out


def test_cli_bad_crop_and_no_results(fake_runs, tmp_path):
    root = fake_runs
    args = ['--results', str(root / 'results'), '--out', str(tmp_path / 'bad'), '--hr', str(root / 'val_HR')]
    assert report_main(args + ['--crop', '40,0,24']) == 1  # 40 + 24 > 48 rows
    assert report_main(['--results', str(tmp_path / 'nothing'), '--out', str(tmp_path / 'x')]) == 1


def test_report_without_curves_or_images(tmp_path):
    res = str(tmp_path / 'results')
    write_test_log(res, 'test_q_scratch_s0', {DATASET: {'psnr': 24.0, 'ssim': 0.6}})
    write_test_log(res, 'test_q_kd_s0', {DATASET: {'psnr': 24.5, 'ssim': 0.62}})
    written = build_report(ReportOptions(results=res, out=str(tmp_path / 'r')))
    assert set(written) == {'table', 'summary'}
    row = table_row(read(written['table']), 'kd')
    assert row[2] == '24.500' and row[4] == '+0.500'


def test_grid_psnr_label_matches_basicsr():
    from basicsr.metrics.psnr_ssim import calculate_psnr

    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    b = np.clip(a + rng.normal(0, 5, a.shape), 0, 255).astype(np.uint8)
    assert y_psnr(b, a, 4) == pytest.approx(calculate_psnr(b, a, 4, input_order='HWC', test_y_channel=True))


def test_build_groups_pairs_train_and_test(fake_runs):
    from kdsr_plugins.report import read_results

    groups, ignored = build_groups(read_experiments(str(fake_runs / 'experiments')),
                                   read_results(str(fake_runs / 'results')), include='quality_')
    assert set(groups) == {'scratch', 'kd', 'dukd', 'teacher_edsr'}
    run = groups['kd'].runs['s2']
    assert (run.train_name, run.test_name) == ('quality_kd_s2', 'test_quality_kd_s2')
    assert ignored == []
