"""Efficiency table: parameters, GFLOPs, peak memory, CPU latency of students and teachers (report/efficiency.py)."""
from __future__ import annotations

import json
import os

import pytest
import torch
from torch import nn

from kdsr_plugins.report import ReportOptions, build_report
from kdsr_plugins.report.efficiency import PeakMemory, count_costs, default_lr_size, measure, measure_option_files
from kdsr_testutils import edsr, save_random_net, train_opt, write_yaml


def test_counts_of_a_two_conv_net_match_the_arithmetic():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 12, 1))
    gflops, peak = count_costs(net, (20, 10))  # w x h
    macs = 20 * 10 * (8 * 3 * 9 + 12 * 8)
    assert gflops == pytest.approx(2 * macs / 1e9)
    weights = 4 * sum(p.numel() for p in net.parameters())
    # input, then both outputs alive together (the first is the second conv's input)
    assert peak * 2 ** 20 == pytest.approx(weights + 4 * 200 * (3 + 8 + 12))
    assert next(net.parameters()).device.type == 'cpu'  # counted on a meta copy


def test_peak_memory_frees_dead_tensors_and_counts_views_once():
    x = torch.empty(1, 4, 8, 8, device='meta')
    mem = PeakMemory()
    with mem:
        for _ in range(3):
            y = x * 2  # the previous y dies when it is replaced
            y.view(-1)
    assert mem.peak == 2 * 4 * 64 * 4  # at most two generations alive at once, views free


def test_measure_row_and_default_size():
    assert default_lr_size(4) == (320, 180) and default_lr_size(3) == (427, 240)
    net = nn.Conv2d(3, 3, 3, padding=1)
    row = measure('c', 'student', net, (16, 8), repeats=2, threads=1)
    assert row.params == 84 and row.latency_ms > 0 and row.latency_lr == (16, 8) and row.threads == 1


def test_report_adds_efficiency_of_student_and_teachers(tmp_path):
    pytest.importorskip('spandrel')
    from spandrel_nets import make_checkpoint

    edsr_t = save_random_net(edsr(16, 1, 4), str(tmp_path / 'edsr_t.pth'))
    span_ckpt, _ = make_checkpoint(str(tmp_path), 'SPAN')
    kd = train_opt('eff_kd', str(tmp_path), edsr_t, scale=4, student=edsr(8, 1, 4), teacher=edsr(16, 1, 4))
    auto = train_opt('eff_auto', str(tmp_path), span_ckpt, scale=4, student=edsr(8, 1, 4), teacher={'type': 'auto'})
    ymls = [write_yaml(kd, str(tmp_path / 'kd.yml')), write_yaml(auto, str(tmp_path / 'auto.yml'))]
    rows = measure_option_files(ymls, lr_size=(24, 16), repeats=1)
    # the student is met twice and measured once; the SPAN teacher comes from its checkpoint
    assert [(r.role, r.arch) for r in rows] == [('student', 'EDSR'), ('teacher', 'EDSR'), ('teacher', 'SPAN')]
    assert rows[1].params > rows[0].params and all(r.gflops > 0 and r.peak_mem_mb > 0 for r in rows)

    results = tmp_path / 'results' / 'test_q_kd_s0'
    os.makedirs(results)
    (results / 'test_test_q_kd_s0_20250101_000100.log').write_text(
        '2025-01-01 00:01:00,000 INFO: Validation Set5\n\t # psnr: 30.1000\n')
    written = build_report(ReportOptions(results=str(tmp_path / 'results'), out=str(tmp_path / 'report'),
                                         efficiency_opts=ymls, efficiency_lr=(24, 16), efficiency_repeats=1))
    table = open(written['table']).read()
    assert '### Efficiency' in table and '| SPAN |' in table and '24×16' in table and '1 thread(s)' in table
    assert open(written['efficiency']).read() in table
    data = json.load(open(written['efficiency_json']))
    assert [d['arch'] for d in data] == ['EDSR', 'EDSR', 'SPAN'] and data[2]['params'] == rows[2].params
