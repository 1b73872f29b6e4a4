"""Speed, memory and arithmetic of one training iteration per method, on CPU, at one fixed configuration.

Configuration: EDSR 64c16b teacher -> EDSR 32c8b student, x4, batch 16, LR patch 48 (random
weights, synthetic batches: LMDB data time is negligible). Each method runs in
its own process; the process also measures, in the same run, the student trained alone and one
no-grad teacher forward, so "inherent KD cost" = student step + teacher forward.

Seconds per iteration are the mean over the timed iterations (the median is reported too). A
method whose cost depends on its random draws (MiPKD's block prior mixer: position k* and route R)
cycles through every draw equally often and weights each by its probability, so its mean is the
expected cost per training iteration rather than the cost of whichever draws happened to come up.
GFLOPs per iteration (forward + backward, counted by ``torch.utils.flop_counter``, expectation
over the draws) give the machine-independent ratio next to the wall-clock one.

Mixed precision (docs/amp.md): ``--amp off,bf16`` and/or ``--channels-last off,on`` measure every
method once per combination (``train.amp`` / ``train.channels_last`` of the model, through the real
``optimize_parameters``) and write the step times and bf16 speed-ups to ``--out`` (default
``bench/results/speed_memory_amp.md`` + ``.json``); GFLOPs are not counted in that mode.

Usage:
    python bench/speed_memory.py [--iters 8] [--warmup 2] [--methods kd,fitnet,...]
        [--out bench/results/speed_memory.md]
    python bench/speed_memory.py --amp off,bf16 --channels-last off,on --threads 1 [--methods ...]
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import resource
import subprocess
import sys
import tempfile
import time
from copy import deepcopy
from functools import partial

import kdsr_plugins  # noqa: F401  (top level: registers the plugin)

import torch
from basicsr.archs import build_network
from basicsr.models import build_model
from torch.utils.flop_counter import FlopCounterMode

from kdsr_plugins.methods.mipkd.mipkd_mixer_arch import STUDENT as STUDENT_ROUTE
from kdsr_plugins.methods.mipkd.mipkd_mixer_arch import TEACHER as TEACHER_ROUTE

SCALE, BATCH, LR_PATCH = 4, 16, 48
MEAN = [0.4488, 0.4371, 0.4040]


def edsr(num_feat: int, num_block: int) -> dict:
    return dict(type='EDSR', num_in_ch=3, num_out_ch=3, num_feat=num_feat, num_block=num_block, upscale=SCALE,
                res_scale=1.0, img_range=255.0, rgb_mean=MEAN)


TEACHER, STUDENT = edsr(64, 16), edsr(32, 8)
L1 = {'type': 'L1Loss', 'loss_weight': 1.0}
TAPS_T, TAPS_S = ['conv_first', 7, 15, 'conv_after_body'], ['conv_first', 3, 7, 'conv_after_body']


def feature(loss: dict) -> dict:
    return {'kd_opt': L1, 'feature_kd': {'positions_t': TAPS_T, 'positions_s': TAPS_S}, 'feature_opt': loss}


#: method -> (model_type, train block additions, top-level additions)
METHODS = {
    'kd': ('KDModel', {'kd_opt': L1}, {}),
    'fitnet': ('FeatureKDModel', feature({'type': 'KDFitNetLoss', 'loss_weight': 10.0}), {}),
    'at': ('FeatureKDModel', feature({'type': 'KDAttentionLoss', 'loss_weight': 10.0}), {}),
    'fakd': ('FeatureKDModel', feature({'type': 'KDAffinityLoss', 'loss_weight': 10.0}), {}),
    # FAKD's direct path (full B×N×N affinity matrices), the only one before the blocked default
    'fakd_direct': ('FeatureKDModel', feature({'type': 'KDAffinityLoss', 'loss_weight': 10.0, 'max_hw': 4096,
                                               'blocked': False}), {}),
    'rkd': ('FeatureKDModel', feature({'type': 'KDRelationLoss', 'loss_weight': 1.0}), {}),
    'dukd': ('DUKDModel', {'kd_opt': L1, 'dukd_opt': {'n_gt_sub': [1], 'zoom_out': True}, 'noisy': {'prob': 0.3}}, {}),
    'mipkd': ('MiPKDModel', {'kd_opt': L1, 'mipkd_opt': {'positions_t': [3, 7, 11, 15], 'positions_s': [1, 3, 5, 7]}},
              {}),
    # cheaper MiPKD settings (options of the same model): 1x1-conv mixers; two positions
    'mipkd_mlp': ('MiPKDModel', {'kd_opt': L1, 'mipkd_opt': {'positions_t': [3, 7, 11, 15], 'positions_s': [1, 3, 5, 7],
                                                             'enc_type': 'mlp'}}, {}),
    # the shipped cheaper preset (train_MiPKD_EDSR_*_lite.yml): 1x1 mixers at the student width (C_S = 32 here)
    'mipkd_lite': ('MiPKDModel', {'kd_opt': L1, 'mipkd_opt': {
        'positions_t': [3, 7, 11, 15], 'positions_s': [1, 3, 5, 7], 'enc_type': 'mlp', 'latent_dim': 32}}, {}),
    'mipkd_k2': ('MiPKDModel', {'kd_opt': L1, 'mipkd_opt': {'positions_t': [7, 15], 'positions_s': [3, 7]}}, {}),
    # the block prior mixer's share of the default cost: feature and auto-encoder terms off
    'mipkd_bpm_only': ('MiPKDModel', {'kd_opt': L1, 'feat_opt': None, 'ae_opt': None,
                                      'mipkd_opt': {'positions_t': [3, 7, 11, 15], 'positions_s': [1, 3, 5, 7]}}, {}),
    # output-only methods reading teacher outputs from the cache (KDCachedTargetDataset's batch key 'target')
    'kd_cached': ('KDModel', {'kd_opt': L1, 'use_cached_targets': True}, {}),
    'mtkd_cached': ('MTKDStudentModel', {'use_cached_targets': True,
                                         'pixel_opt': {'type': 'L1Loss', 'loss_weight': 0.1},
                                         'kd_opt': {'type': 'KDWaveletLoss', 'loss_weight': 1.0, 'levels': 1}},
                    {'mtkd': True}),
}
AGGREGATOR = dict(type='MTKDDCTSwin', num_teachers=2, upscale=SCALE, img_size=64, window_size=8, embed_dim=60,
                  depths=[4, 4], num_heads=[6, 6], mlp_ratio=2, num_feat=64)


def model_options(method: str, teacher_ckpt: str, root: str, amp: str = 'off', channels_last: bool = False) -> dict:
    model_type, train_extra, top_extra = METHODS[method]
    top_extra = dict(top_extra)
    mtkd = top_extra.pop('mtkd', False)
    opt = {'name': f'bench_{method}', 'model_type': model_type, 'scale': SCALE, 'num_gpu': 0, 'is_train': True,
           'dist': False, 'rank': 0, 'world_size': 1, 'network_g': deepcopy(STUDENT), 'network_t': deepcopy(TEACHER),
           'path': {'pretrain_network_g': None, 'pretrain_network_t': teacher_ckpt, 'models': root,
                    'training_states': root},
           'train': {'ema_decay': 0.999, 'optim_g': {'type': 'Adam', 'lr': 1e-4, 'betas': [0.9, 0.99]},
                     'scheduler': {'type': 'MultiStepLR', 'milestones': [10 ** 6], 'gamma': 0.5},
                     'total_iter': 100, 'pixel_opt': L1, **deepcopy(train_extra)}}
    if amp != 'off' or channels_last:  # else the option dict of speed_memory.md, unchanged
        opt['train'].update(amp=amp, channels_last=channels_last)
    opt.update(deepcopy(top_extra))
    if mtkd:  # two teachers + a frozen aggregator; with cached targets neither runs during training
        del opt['network_t']
        opt['teachers'] = [{'name': n, 'network': deepcopy(TEACHER), 'pretrain': teacher_ckpt} for n in ('t1', 't2')]
        agg_ckpt = osp.join(root, 'aggregator.pth')
        torch.save({'params': build_network(deepcopy(AGGREGATOR)).state_dict()}, agg_ckpt)
        opt['aggregator'] = {'network': deepcopy(AGGREGATOR), 'pretrain': agg_ckpt, 'param_key': 'params',
                             'teacher_order': ['t1', 't2']}
    return opt


def batch(seed: int, cached: bool = False) -> dict:
    g = torch.Generator().manual_seed(seed)
    hr = (BATCH, 3, LR_PATCH * SCALE, LR_PATCH * SCALE)
    data = {'lq': torch.rand(BATCH, 3, LR_PATCH, LR_PATCH, generator=g), 'gt': torch.rand(*hr, generator=g)}
    if cached:
        data['target'] = torch.rand(*hr, generator=g)
    return data


Draw = tuple[dict, float]
"""Keyword arguments that fix a model's random draws for one iteration, and their probability."""


def routing_draws(model) -> list[Draw]:
    """Every fixed draw of a stochastic-cost model with its probability.

    MiPKD with ``bpm_mode: single`` runs the block prior mixer from position k* (uniform over 1..K)
    through the teacher (R = 0) or the student (R = 1, probability ``path_prob``); the work differs
    per draw. Other models: one draw, no arguments.
    """
    bank = getattr(model, 'bank', None)
    if bank is None or bank.bpm_mode != 'single':
        return [({}, 1.0)]
    p_student, k = model.mipkd.path_prob, bank.num_positions
    draws = [({'k_star': ks, 'route': route}, (p_student if route == STUDENT_ROUTE else 1 - p_student) / k)
             for ks in range(1, k + 1) for route in (TEACHER_ROUTE, STUDENT_ROUTE)]
    return [d for d in draws if d[1] > 0]


def fix_draw(model, draw: dict) -> None:
    """Make the model's next iterations use ``draw`` (no-op for models without draws)."""
    if draw:
        model.sample_plan = partial(type(model).sample_plan, model, **draw)


def timed_steps(step, draws: list[Draw], iters: int, warmup: int) -> dict:
    """Times ``step(i)``; iteration i uses draw ``i % len(draws)``.

    The number of timed iterations is ``iters`` rounded up to a multiple of ``len(draws)``, so
    every draw is timed equally often; ``mean_s`` weights each by its probability.
    """
    n = -(-iters // len(draws)) * len(draws)
    times, cpu_times, weights = [], [], []
    for i in range(warmup + n):
        start, cpu_start = time.perf_counter(), time.process_time()
        step(i, draws[i % len(draws)][0])
        if i >= warmup:
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
            weights.append(draws[i % len(draws)][1])
    ordered = sorted(times)
    return {'mean_s': sum(t * w for t, w in zip(times, weights)) / sum(weights),
            'cpu_mean_s': sum(t * w for t, w in zip(cpu_times, weights)) / sum(weights),
            'median_s': ordered[len(ordered) // 2], 'timed_iters': n}


def step_gflops(model, data: dict, draws: list[Draw]) -> float:
    """Expected GFLOPs of one ``optimize_parameters`` call (forward + backward) over the draws."""
    total = 0.0
    for draw, weight in draws:
        fix_draw(model, draw)
        model.feed_data(data)
        with FlopCounterMode(display=False) as counter:
            model.optimize_parameters(1)
        total += weight * counter.get_total_flops() / 1e9
    return total


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_one(method: str, iters: int, warmup: int, amp: str = 'off', channels_last: bool = False,
                flops: bool = True) -> dict:
    """Runs in a fresh process: method step, then student-alone step and teacher forward."""
    torch.manual_seed(0)
    precision = {'amp': amp, 'channels_last': channels_last}
    root = tempfile.mkdtemp()
    teacher_ckpt = osp.join(root, 'teacher.pth')
    torch.save({'params': build_network(deepcopy(TEACHER)).state_dict()}, teacher_ckpt)
    data = [batch(i, cached=method.endswith('_cached') or method == 'student') for i in range(4)]
    rss_start = rss_mb()
    result = {'method': method, **precision, 'threads': torch.get_num_threads()}
    if method == 'student':  # the student trained alone: KDModel without teacher terms when amp is set
        model = build_model(student_options(teacher_ckpt, root, **precision, precision_run=not flops))
    else:
        model = build_model(model_options(method, teacher_ckpt, root, **precision))

    def step(i: int, draw: dict) -> None:
        fix_draw(model, draw)
        model.feed_data(data[i % len(data)])
        model.optimize_parameters(i + 1)
    draws = routing_draws(model)
    timing = timed_steps(step, draws, iters, warmup)
    result.update(step_s=timing['mean_s'], cpu_s=timing['cpu_mean_s'], median_s=timing['median_s'],
                  timed_iters=timing['timed_iters'], draws=len(draws))
    result['peak_rss_mb'] = rss_mb()
    result['rss_increase_mb'] = result['peak_rss_mb'] - rss_start
    if not flops:
        return result
    result['gflops'] = step_gflops(model, data[0], draws)
    if method == 'kd':  # inherent cost, measured in the same process
        alone = build_model(model_options('kd', teacher_ckpt, root) | {'model_type': 'SRModel'})

        def alone_step(i: int, draw: dict) -> None:
            alone.feed_data(data[i % len(data)])
            alone.optimize_parameters(i + 1)
        teacher = model.net_t

        def teacher_fwd(i: int, draw: dict) -> None:
            with torch.no_grad():
                teacher(data[i % len(data)]['lq'])
        result['student_alone_s'] = timed_steps(alone_step, [({}, 1.0)], iters, warmup)['mean_s']
        result['teacher_forward_s'] = timed_steps(teacher_fwd, [({}, 1.0)], iters, warmup)['mean_s']
    return result


def student_options(teacher_ckpt: str, root: str, amp: str = 'off', channels_last: bool = False,
                    precision_run: bool = False) -> dict:
    """The student trained alone: SRModel; in the precision runs (SRModel has no train.amp) KDModel with the pixel
    loss only, reading a (never used) cached target so that the teacher never runs."""
    if not precision_run:
        return model_options('kd', teacher_ckpt, root) | {'model_type': 'SRModel'}
    opt = model_options('kd', teacher_ckpt, root, amp, channels_last)
    del opt['train']['kd_opt']
    opt['train'].update(use_cached_targets=True, amp=amp, channels_last=channels_last)
    return opt



def run_all(methods: list[str], iters: int, warmup: int, variants: tuple[tuple[str, bool], ...] = (('off', False),),
            threads: int | None = None, with_student: bool = True) -> list[dict]:
    results = []
    flops = variants == (('off', False),)
    jobs = [(m, amp, cl) for m in (['student'] if with_student else []) + methods for amp, cl in variants]
    for method, amp, channels_last in jobs:
        with tempfile.NamedTemporaryFile(suffix='.json', delete=False) as f:
            out = f.name
        cmd = [sys.executable, osp.abspath(__file__), '--one', method, '--iters', str(iters), '--warmup',
               str(warmup), '--json', out, '--amp', amp, '--channels-last', 'on' if channels_last else 'off',
               '--batch', str(BATCH)]
        if not flops:
            cmd.append('--no-flops')  # a precision run: also the KDModel student reference
        env = dict(os.environ, **({'OMP_NUM_THREADS': str(threads)} if threads else {}))
        print(f'[bench] {method} amp={amp} channels_last={channels_last} ...', flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            print(proc.stderr[-2000:], file=sys.stderr)
            results.append({'method': method, 'amp': amp, 'channels_last': channels_last,
                            'error': proc.stderr.strip().splitlines()[-1]})
            continue
        results.append(json.load(open(out)))
    return results


#: (label, method, reference, limit): the ratio targets of issue 7.
TARGETS = [('logits KD / inherent KD cost', 'kd', 'inherent', 1.10),
           ('MTKD from the cache / student alone', 'mtkd_cached', 'student', 1.30),
           ('MiPKD / logits KD', 'mipkd', 'kd', 1.6)]


def report(results: list[dict], iters: int) -> str:
    by = {r['method']: r for r in results if 'error' not in r}
    kd = by.get('kd', {})
    inherent = kd.get('student_alone_s', 0) + kd.get('teacher_forward_s', 0)
    refs = {'inherent': inherent, 'student': by.get('student', {}).get('step_s'), 'kd': kd.get('step_s')}
    kd_gflops = kd.get('gflops')
    lines = [f'# Training-iteration speed, arithmetic and memory (CPU, {torch.get_num_threads()} threads)', '',
             f'EDSR 64c16b teacher -> EDSR 32c8b student, x{SCALE}, batch {BATCH}, LR patch {LR_PATCH}; '
             f'mean (and median) of at least {iters} iterations after warm-up; synthetic batches. MiPKD times every '
             'block-mixer draw (k*, R) equally often and weights it by its probability, so its mean is the expected '
             'cost of a training iteration. GFLOPs: forward + backward of one iteration (expectation over the draws).',
             '', f'Inherent KD cost (student step {kd.get("student_alone_s", float("nan")):.3f} s + no-grad teacher '
             f'forward {kd.get("teacher_forward_s", float("nan")):.3f} s, same process as `kd`): {inherent:.3f} s', '',
             '| Method | s / iter | median | x student alone | x inherent KD | x logits KD | GFLOPs / iter | '
             'GFLOPs x logits KD | peak RSS (MB) | RSS increase (MB) |',
             '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
    for r in results:
        if 'error' in r:
            lines.append(f'| {r["method"]} | failed: {r["error"]} | | | | | | | | |')
            continue
        s = r['step_s']
        ratio = lambda num, ref: f'{num / ref:.2f}' if ref else '-'  # noqa: E731
        lines.append(f'| {r["method"]} | {s:.3f} | {r["median_s"]:.3f} | {ratio(s, refs["student"])} | '
                     f'{ratio(s, inherent)} | {ratio(s, refs["kd"])} | {r["gflops"]:.1f} | '
                     f'{ratio(r["gflops"], kd_gflops)} | {r["peak_rss_mb"]:.0f} | {r["rss_increase_mb"]:.0f} |')
    lines += ['', '| Target (issue 7) | limit | measured | |', '|---|---:|---:|---|']
    for label, method, ref, limit in TARGETS:
        if method in by and refs[ref]:
            value = by[method]['step_s'] / refs[ref]
            lines.append(f'| {label} | {limit:.2f} | {value:.2f} | {"met" if value <= limit else "NOT met"} |')
    lines += ['', '"RSS increase" is the peak resident memory over the process size before the model was built '
              '(torch/BasicSR import excluded).']
    return '\n'.join(lines) + '\n'


def cpu_text() -> str:
    """CPU model and the vector extensions that decide bf16 speed (AVX-512 BF16 / AMX)."""
    model, flags = '?', set()
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name') and model == '?':
                    model = line.split(':', 1)[1].strip()
                elif line.startswith('flags') and not flags:
                    flags = set(line.split(':', 1)[1].split())
    except OSError:
        pass
    bf16 = [x for x in ('avx512_bf16', 'amx_bf16') if x in flags]
    return (f'{model}; torch CPU capability {torch.backends.cpu.get_cpu_capability()}; native bf16: '
            f'{", ".join(bf16) if bf16 else "none (no avx512_bf16 / amx_bf16 flag)"}')


AMP_TARGET = 1.8  # issue 16: bf16 step speed-up over float32 for every method


def amp_report(results: list[dict], iters: int, threads: int, command: str) -> str:
    """Step time of every (method, amp, channels_last) and the speed-ups over float32 NCHW."""
    ok = {(r['method'], r['amp'], r['channels_last']): r for r in results if 'error' not in r}
    variants = list(dict.fromkeys((r['amp'], r['channels_last']) for r in results))
    methods = list(dict.fromkeys(r['method'] for r in results))
    label = {v: f'{v[0]}{" + channels-last" if v[1] else ""}' for v in variants}
    lines = [f'# Training-step speed with mixed precision (CPU, {threads} thread{"s" if threads > 1 else ""})', '',
             f'Command: `{command}`; date {time.strftime("%Y-%m-%d")}; machine: {cpu_text()}.', '',
             f'EDSR 64c16b teacher -> EDSR 32c8b student, x{SCALE}, batch {BATCH}, LR patch {LR_PATCH}; one real '
             '`optimize_parameters` per iteration (`train.amp`, `train.channels_last` of the model); mean seconds of '
             f'at least {iters} iteration(s) after warm-up; synthetic batches; `student` is the student trained '
             'alone (pixel loss only).', '',
             'Each cell: wall-clock seconds / CPU seconds of the process (`time.process_time`; with one thread the '
             'CPU time is what the step computes, whatever else the machine runs). Speed-ups are of the CPU seconds, '
             'relative to float32 without channels-last.', '',
             '| Method | ' + ' | '.join(f's / iter {label[v]}' for v in variants) + ' | '
             + ' | '.join(f'speed-up {label[v]}' for v in variants if v != ('off', False)) + ' |',
             '|---|' + '---:|' * (2 * len(variants) - 1)]
    for m in methods:
        base = ok.get((m, 'off', False))
        cells = [f'{ok[(m, *v)]["step_s"]:.2f} / {ok[(m, *v)]["cpu_s"]:.2f}' if (m, *v) in ok else 'failed'
                 for v in variants]
        ups = [f'{base["cpu_s"] / ok[(m, *v)]["cpu_s"]:.2f}x' if base and (m, *v) in ok else '-'
               for v in variants if v != ('off', False)]
        lines.append(f'| {m} | ' + ' | '.join(cells + ups) + ' |')
    bf16 = [v for v in variants if v[0] == 'bf16']
    if bf16 and ('off', False) in variants:
        lines += ['', f'Target (issue 16): bf16 step >= {AMP_TARGET}x faster than float32 for every method.', '']
        for v in bf16:
            ups = {m: ok[(m, 'off', False)]['cpu_s'] / ok[(m, *v)]['cpu_s'] for m in methods
                   if (m, 'off', False) in ok and (m, *v) in ok}
            met = ups and min(ups.values()) >= AMP_TARGET
            worst = min(ups, key=ups.get) if ups else '-'
            lines.append(f'- {label[v]}: {"met" if met else "NOT met"} (lowest speed-up {ups.get(worst, 0):.2f}x, '
                         f'{worst}).')
    failed = [r for r in results if 'error' in r]
    for r in failed:
        lines.append(f'- {r["method"]} amp={r["amp"]} channels_last={r["channels_last"]} failed: {r["error"]}')
    return '\n'.join(lines) + '\n'


def write_results(out_md: str, text: str, data: object) -> None:
    """Writes the markdown report, the same figures as ``<out>.json`` next to it, and prints the report."""
    os.makedirs(osp.dirname(osp.abspath(out_md)), exist_ok=True)
    with open(out_md, 'w') as f:
        f.write(text)
    with open(osp.splitext(out_md)[0] + '.json', 'w') as f:
        json.dump(data, f, indent=1)
    print(text)


DEFAULT_OUT = osp.join(osp.dirname(osp.abspath(__file__)), 'results', 'speed_memory.md')


def main() -> int:
    global BATCH  # --batch: the configuration of this process and of the measuring processes it starts
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--iters', type=int, default=8)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--methods', default=','.join(METHODS))
    parser.add_argument('--out', default=DEFAULT_OUT)
    parser.add_argument('--amp', default=None, help='comma list of train.amp values to measure (off,bf16)')
    parser.add_argument('--channels-last', default=None, help='comma list of off/on (train.channels_last)')
    parser.add_argument('--batch', type=int, default=BATCH, help=f'batch size (default {BATCH}, the benchmark '
                        'configuration; smaller only where a precision is too slow to time at it)')
    parser.add_argument('--threads', type=int, default=None, help='OMP_NUM_THREADS of the measuring processes')
    parser.add_argument('--one', help=argparse.SUPPRESS)
    parser.add_argument('--json', help=argparse.SUPPRESS)
    parser.add_argument('--no-flops', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args()
    BATCH = args.batch
    amps = (args.amp or 'off').split(',')
    layouts = [v == 'on' for v in (args.channels_last or 'off').split(',')]
    if args.one:
        with open(args.json, 'w') as f:
            json.dump(measure_one(args.one, args.iters, args.warmup, amps[0], layouts[0], not args.no_flops), f)
        return 0
    methods = [m for m in args.methods.split(',') if m]
    if args.amp is None and args.channels_last is None:
        results = run_all(methods, args.iters, args.warmup, threads=args.threads)
        write_results(args.out, report(results, args.iters), results)
        return 0
    variants = tuple((a, cl) for cl in layouts for a in amps)
    out = args.out if args.out != DEFAULT_OUT else osp.join(osp.dirname(DEFAULT_OUT), 'speed_memory_amp.md')
    results = run_all(methods, args.iters, args.warmup, variants, args.threads)
    threads = args.threads or torch.get_num_threads()
    command = 'python bench/speed_memory.py ' + ' '.join(sys.argv[1:])
    write_results(out, amp_report(results, args.iters, threads, command), results)
    return 0


if __name__ == '__main__':
    sys.exit(main())
