"""Efficiency table of SR networks as SR efficiency papers report it (docs/export.md, "Efficiency table").

Per network: parameters; GFLOPs of one forward at a stated LR size (``torch.utils.flop_counter``,
2 FLOPs per multiply-add, convolutions and matrix products); peak memory of that forward (weights +
the largest sum of live tensors the forward allocates, tracked per storage); CPU latency (median
of repeated forwards, thread count stated). FLOPs and memory are counted on the ``meta`` device
(no arithmetic, so they are exact and cheap at any size); latency runs for real.

``python -m kdsr_plugins.report ... --efficiency-opt <train yml>...`` adds the table to the report;
``python -m kdsr_plugins.report.efficiency --opt <yml>...`` prints it alone.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

#: The HR size the default LR size is derived from (LR = 1280x720 / scale, e.g. 320x180 at x4).
DEFAULT_HR = (1280, 720)


@dataclass
class EfficiencyRow:
    """One network's costs (sizes are width x height)."""

    name: str
    role: str
    arch: str
    params: int
    lr_size: tuple[int, int]
    gflops: float | None
    peak_mem_mb: float | None
    latency_ms: float | None
    latency_lr: tuple[int, int] | None
    threads: int
    repeats: int
    note: str = ''


class PeakMemory(TorchDispatchMode):
    """Largest total size of live tensors created inside the mode (storages counted once, views free)."""

    def __init__(self) -> None:
        super().__init__()
        self.current = 0
        self.peak = 0
        self._live: dict[int, list[int]] = {}  # storage key -> [nbytes, live tensors]

    def _release(self, key: int) -> None:
        entry = self._live.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self._live[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and not isinstance(t, nn.Parameter):
                storage = t.untyped_storage()
                key, nbytes = storage._cdata, storage.nbytes()
                if key in self._live:
                    self._live[key][1] += 1
                else:
                    self._live[key] = [nbytes, 1]
                    self.current += nbytes
                    self.peak = max(self.peak, self.current)
                weakref.finalize(t, self._release, key)
        return out


def default_lr_size(scale: int, hr: tuple[int, int] = DEFAULT_HR) -> tuple[int, int]:
    """LR size (w, h) of an HR frame at ``scale`` (rounded up)."""
    return -(-hr[0] // scale), -(-hr[1] // scale)


def _padded(size: tuple[int, int], multiple: int) -> tuple[int, int]:
    return tuple(-(-s // multiple) * multiple for s in size)  # type: ignore[return-value]


def count_costs(net: nn.Module, lr_size: tuple[int, int], in_ch: int = 3, multiple: int = 1) -> tuple[float, float]:
    """``(GFLOPs, peak MB)`` of one no-grad forward at ``lr_size`` (padded to ``multiple``), on the meta device.

    Peak MB = weights + input + the largest sum of live tensors the forward creates.
    """
    w, h = _padded(lr_size, multiple)
    meta = copy.deepcopy(net).to('meta').eval()
    weights = sum(t.numel() * t.element_size() for t in list(meta.parameters()) + list(meta.buffers()))
    x = torch.empty(1, in_ch, h, w, device='meta')
    weights += x.numel() * x.element_size()
    flops, memory = FlopCounterMode(display=False), PeakMemory()
    with torch.no_grad(), flops, memory:
        meta(x)
    return flops.get_total_flops() / 1e9, (weights + memory.peak) / 2 ** 20


def cpu_latency(net: nn.Module, lr_size: tuple[int, int], in_ch: int = 3, multiple: int = 1, repeats: int = 5,
                warmup: int = 1, threads: int = 1) -> float:
    """Median wall time (ms) of ``repeats`` no-grad CPU forwards at ``lr_size`` with ``threads`` threads."""
    w, h = _padded(lr_size, multiple)
    x = torch.rand(1, in_ch, h, w, generator=torch.Generator().manual_seed(0))
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    was_training = net.training
    net.eval()
    times = []
    try:
        with torch.no_grad():
            for i in range(warmup + repeats):
                start = time.perf_counter()
                net(x)
                if i >= warmup:
                    times.append((time.perf_counter() - start) * 1e3)
    finally:
        torch.set_num_threads(old)
        net.train(was_training)
    return statistics.median(times)


def measure(name: str, role: str, net: nn.Module, lr_size: tuple[int, int], in_ch: int = 3, multiple: int = 1,
            latency_lr: tuple[int, int] | None = None, repeats: int = 5, threads: int = 1,
            latency: bool = True) -> EfficiencyRow:
    """All costs of one network (latency at ``latency_lr``, default ``lr_size``; skipped if not ``latency``)."""
    arch = getattr(net, 'arch', None) or type(net).__name__
    params = sum(p.numel() for p in net.parameters())
    note = ''
    try:
        gflops, peak = count_costs(net, lr_size, in_ch, multiple)
    except (RuntimeError, NotImplementedError, TypeError) as err:  # an op without a meta kernel
        gflops, peak, note = None, None, f'meta-device count failed: {str(err).splitlines()[0][:80]}'
    latency_lr = latency_lr or lr_size
    ms = cpu_latency(net.cpu(), latency_lr, in_ch, multiple, repeats, threads=threads) if latency else None
    return EfficiencyRow(name, role, str(arch), params, tuple(lr_size), gflops, peak, ms,
                         tuple(latency_lr) if latency else None, threads, repeats if latency else 0, note)


# ---------------------------------------------------------------------- networks of option files
def option_networks(opt_path: str) -> list[tuple[str, str, Callable[[], nn.Module], int, int]]:
    """``(name, role, build, pad multiple, scale)`` for the student and every teacher of an option YAML.

    Students and BasicSR teachers are built from their options (weights do not change the costs);
    auto (spandrel) teachers are built from their checkpoint, which must exist.
    """
    import kdsr_plugins  # noqa: F401  (registries)

    import yaml
    from basicsr.archs import build_network
    from basicsr.utils.options import ordered_yaml

    from kdsr_plugins.core.arch_info import pad_multiple
    from kdsr_plugins.core.auto_teacher import is_auto
    from kdsr_plugins.core.teachers import build_teacher_network, parse_teacher_specs

    with open(opt_path, encoding='utf-8') as f:
        opt = yaml.load(f, Loader=ordered_yaml()[0])
    scale = int(opt['scale'])
    student_opt = dict(opt['network_g'])
    out = [(opt.get('name', 'student'), 'student', lambda: build_network(copy.deepcopy(student_opt)),
            pad_multiple(student_opt), scale)]
    if 'network_t' in opt or opt.get('teachers') is not None:
        for spec in parse_teacher_specs(opt):
            def build(s=spec) -> nn.Module:
                if is_auto(s.network_opt):
                    return build_teacher_network(s, scale, student_opt)
                return build_network(copy.deepcopy(s.network_opt))

            out.append((spec.name, 'teacher', build, pad_multiple(spec.network_opt), scale))
    return out


def measure_option_files(paths: Sequence[str], lr_size: tuple[int, int] | None = None,
                         latency_lr: tuple[int, int] | None = None, repeats: int = 5, threads: int = 1,
                         latency: bool = True) -> list[EfficiencyRow]:
    """Rows for the students and teachers of option files (a network met twice is measured once).

    ``lr_size`` defaults to 1280x720 / scale.
    """
    rows, seen = [], set()
    for path in paths:
        for name, role, build, multiple, scale in option_networks(path):
            net = build()
            key = (type(net).__name__, sum(p.numel() for p in net.parameters()), scale,
                   tuple(p.shape for p in net.parameters()))
            if key in seen:
                continue
            seen.add(key)
            lr = lr_size or default_lr_size(scale)
            label = name if role == 'student' else f'{name} (teacher of {path.rsplit("/", 1)[-1]})'
            rows.append(measure(label, role, net, lr, multiple=multiple, latency_lr=latency_lr, repeats=repeats,
                                threads=threads, latency=latency))
    return rows


def _size(size: tuple[int, int] | None) -> str:
    return f'{size[0]}×{size[1]}' if size else '–'


def markdown_efficiency(rows: Sequence[EfficiencyRow], scale: int | None = None) -> str:
    """The efficiency table in Markdown, with a note stating sizes, threads and counting rules."""
    lines = ['| Network | Role | Arch | Params (M) | LR size | GFLOPs | Peak mem (MB) | CPU latency (ms) |',
             '|---|---|---|---:|---|---:|---:|---:|']
    for r in rows:
        gflops = f'{r.gflops:.1f}' if r.gflops is not None else '–'
        peak = f'{r.peak_mem_mb:.0f}' if r.peak_mem_mb is not None else '–'
        lat = f'{r.latency_ms:.0f}' if r.latency_ms is not None else '–'
        if r.latency_ms is not None and r.latency_lr != r.lr_size:
            lat += f' (at {_size(r.latency_lr)})'
        lines.append(f'| {r.name} | {r.role} | {r.arch} | {r.params / 1e6:.3f} | {_size(r.lr_size)} | {gflops} | '
                     f'{peak} | {lat} |')
    threads = sorted({r.threads for r in rows if r.latency_ms is not None})
    repeats = sorted({r.repeats for r in rows if r.latency_ms is not None})
    notes = [('GFLOPs: one forward, torch.utils.flop_counter (2 FLOPs per multiply-add; convolutions and matrix '
              'products). Peak memory: weights + input + largest sum of live tensors of one no-grad forward (float32, '
              'batch 1). Both counted on the meta device.')]
    if threads:
        notes.append(f'CPU latency: median of {"/".join(map(str, repeats))} no-grad forwards after one warm-up, '
                     f'{"/".join(map(str, threads))} thread(s), torch {torch.__version__}.')
    notes += [f'{r.name}: {r.note}' for r in rows if r.note]
    return '\n'.join(lines) + '\n\n' + ' '.join(notes) + '\n'


def rows_to_json(rows: Sequence[EfficiencyRow]) -> list[dict]:
    return [asdict(r) for r in rows]


def parse_size(text: str) -> tuple[int, int]:
    """``WxH`` -> ``(w, h)``."""
    try:
        w, h = (int(v) for v in text.lower().replace('×', 'x').split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(f'size must be WIDTHxHEIGHT, got {text!r}') from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f'size must be positive, got {text!r}')
    return w, h


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog='python -m kdsr_plugins.report.efficiency', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--opt', nargs='+', required=True, help='option YAMLs (network_g, network_t / teachers)')
    p.add_argument('--lr-size', type=parse_size, help='LR size WxH of the counts (default 1280x720 / scale)')
    p.add_argument('--latency-lr', type=parse_size, help='LR size WxH of the latency runs (default: --lr-size)')
    p.add_argument('--repeats', type=int, default=5, help='timed forwards per network (default 5)')
    p.add_argument('--threads', type=int, default=1, help='CPU threads of the latency runs (default 1)')
    p.add_argument('--no-latency', action='store_true', help='counts only')
    args = p.parse_args(argv)
    rows = measure_option_files(args.opt, args.lr_size, args.latency_lr, args.repeats, args.threads,
                                not args.no_latency)
    print(markdown_efficiency(rows))
    return 0


if __name__ == '__main__':
    sys.exit(main())
