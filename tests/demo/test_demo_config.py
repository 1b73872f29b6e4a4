"""The demo's options: precision, teachers, the printed table (``kdsr_plugins.demo``)."""
from __future__ import annotations

import json
import os.path as osp

import pytest
import yaml

from kdsr_plugins.core.option_checks import check_option_file
from kdsr_plugins.demo import config
from kdsr_plugins.demo.pipeline import ensure_teachers, format_table
from kdsr_plugins.demo.runs import RUNS
from kdsr_plugins.demo.stored import reading, stored_benchmark


def test_teachers_student_and_taps_match_the_benchmark():
    net, ckpt = config.TEACHERS['edsr']
    assert (net['num_feat'], net['num_block']) == (48, 16) and ckpt == config.PHOTO_TEACHER and osp.isfile(ckpt)
    assert (config.STUDENT['num_feat'], config.STUDENT['num_block']) == (12, 2)
    rcan_net, rcan_ckpt = config.TEACHERS['rcan']
    assert rcan_ckpt == config.PHOTO_RCAN_TEACHER and osp.isfile(rcan_ckpt)
    for net, ckpt in config.TEACHERS.values():  # the networks the photo teacher cards were trained with
        with open(osp.splitext(ckpt)[0] + '.yml', encoding='utf-8') as f:
            assert yaml.safe_load(f)['network_g'] == net


@pytest.mark.parametrize('amp', ['off', 'bf16'])
def test_every_demo_run_builds_valid_options_at_both_precisions(amp, tmp_path):
    ckpts = {name: ckpt for name, (_, ckpt) in config.TEACHERS.items()}
    done = {'mtkd1': {'ckpt': str(tmp_path / 'agg.pth')}}
    for run in RUNS:
        train_extra, top_extra = run.make_options(ckpts, done)
        opt = config.train_options(f'demo_{run.key}', run.model_type, run.student or config.STUDENT, str(tmp_path),
                                   10, 0, train_extra, top_extra, amp=amp)
        if amp == 'off':
            assert opt['model_type'] == run.model_type and 'amp' not in opt['train']
        else:
            assert opt['train']['amp'] == 'bf16' and opt['train']['channels_last'] is True
            assert opt['model_type'] == ('AmpSRModel' if run.model_type == 'SRModel' else run.model_type)
        check_option_file(opt)  # unknown keys or a wrong model type would raise


def test_missing_photo_teacher_stops_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setitem(config.TEACHERS, 'edsr', (config.TEACHERS['edsr'][0], str(tmp_path / 'none.pth')))
    with pytest.raises(SystemExit, match=r"Teacher 'edsr': no checkpoint .*none.pth.*bench/photo/README.md"):
        ensure_teachers()


def test_table_has_a_delta_column_against_the_scratch_row():
    rows = [{'key': 'scratch', 'label': 'Scratch', 'params': 10, 'psnr': 30.0, 'ssim': 0.8, 'train_s': 5.0},
            {'key': 'kd', 'label': 'KD', 'params': 10, 'psnr': 30.25, 'ssim': 0.81, 'train_s': 6.0}]
    text = format_table(rows, 'T', reference=rows[0])
    assert '| Δ PSNR |' in text and '| KD | 10 | 30.250 | +0.250 | 0.8100 | 6 |' in text
    assert 'Δ' not in format_table(rows, 'T')


def test_stored_benchmark_prints_the_table_and_its_command(tmp_path, monkeypatch):
    table = tmp_path / 'table.md'
    converged = tmp_path / 'table_4800.md'
    monkeypatch.setattr(config, 'BENCHMARK_TABLE', str(table))
    monkeypatch.setattr(config, 'CONVERGED_TABLE', str(converged))
    assert 'No stored benchmark table' in stored_benchmark()
    table.write_text('| Method | PSNR |\n|---|---:|\n| scratch | 35.0 |\n')
    text = stored_benchmark()
    assert '| scratch | 35.0 |' in text and 'bench/photo_benchmark.py --config bench/photo/benchmark.yml' in text
    assert 'convergence' not in text
    converged.write_text('| Method | PSNR |\n|---|---:|\n| scratch | 35.9 |\n')
    text = stored_benchmark()
    assert text.index('| scratch | 35.0 |') < text.index('| scratch | 35.9 |')
    assert '--iters 4800 --out' in text and 'fixed budget of 1,200 iterations' in text  # no summary: no --methods
    (tmp_path / 'summary.json').write_text(json.dumps({'rows': {
        'scratch': {'seeds': [0]}, 'kd': {'seeds': [0]}, 'mtkd': {'skipped': 'needs 2 teachers'},
        'kd (swept)': {'seeds': [0]}}}))
    assert '--iters 4800 --methods scratch,kd --out' in stored_benchmark()  # the rows the stored table holds
    (tmp_path / 'summary.json').write_text(json.dumps({
        'config': 'bench/photo/why_long_at1.yml', 'iters': 2400, 'sweep': {'kd': {}},
        'rows': {'scratch': {'seeds': [0]}, 'at': {'seeds': [0]}}}))
    text = stored_benchmark()  # the config and iterations the summary records, not the defaults
    assert '--config bench/photo/why_long_at1.yml --data datasets/photos --iters 2400 --methods scratch,at' in text
    assert '--iters 4800' not in text and '--skip-done --sweep' in text


def _row(*deltas: float, p: float | None) -> dict:
    mean = sum(deltas) / len(deltas)
    return {'seeds': list(range(len(deltas))), 'delta_vs_scratch': {'raw': {
        'deltas': list(deltas), 'mean': mean, 'std': None if len(deltas) < 2 else 0.01, 'n': len(deltas), 'p': p}}}


def test_reading_sorts_rows_by_sign_on_every_seed_and_p_value():
    summary = {'rows': {
        'scratch': {'seeds': [0, 1, 2], 'delta_vs_scratch': None},
        'kd': _row(0.05, 0.06, 0.07, p=0.004),
        'at': _row(0.3, 0.2, 0.4, p=0.2),            # every seed positive, but p >= 0.05
        'fitnet': _row(-0.2, -0.3, -0.25, p=0.01),
        'rkd': _row(0.1, -0.1, 0.05, p=0.01),         # mixed signs: never called better
        'dukd': _row(0.04, p=None),
        'mtkd': {'skipped': 'needs 2 teachers'}}}
    text = reading(summary)
    better, rest = text.split('worse on every seed: ')
    assert 'kd +0.060 dB (3 seeds, p = 0.004)' in better and 'at +' not in better
    worse, rest = rest.split('not distinguishable')
    assert 'fitnet -0.250 dB' in worse and 'rkd ' not in worse
    unclear, single = rest.split('one seed so far: ')
    assert 'at +0.300 dB' in unclear and 'rkd +0.017 dB' in unclear
    assert 'dukd +0.040 dB (1 seed)' in single and 'mtkd' not in text and 'scratch +' not in text
    assert reading({'rows': {'scratch': {'seeds': [0]}}}) == ''


def test_the_stored_tables_the_demo_prints_are_committed():
    for path in (config.BENCHMARK_TABLE, config.CONVERGED_TABLE):
        with open(path, encoding='utf-8') as f:
            assert '| scratch |' in f.read()
