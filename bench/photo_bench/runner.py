"""Plan, train (``python -m kdsr_plugins.train``) and score the benchmark's runs; one JSON per finished run."""
from __future__ import annotations

import hashlib
import json
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import cv2
import numpy as np

from kdsr_plugins.demo.pipeline import read_test_metrics, run_entry_point, write_yaml
from photo_bench import scoring
from photo_bench.config import OUTPUT_ONLY, Benchmark, run_options
from photo_bench.stats import last_fraction_gain

#: How a run's options digest writes the benchmark's work folder (:meth:`Driver.options_text`).
WORK = '<work>'


def digest(options_text: str) -> str:
    """A run's options digest (``options_sha256`` of its run JSON): SHA-256 of :meth:`Driver.options_text`."""
    return hashlib.sha256(options_text.encode()).hexdigest()


@dataclass
class Run:
    """One training run of the benchmark.

    Attributes:
        name: Experiment name (``<method>_s<seed>``, ``<method>_swept_s<seed>``, ``sweep_<method>_w<w>_s<seed>``).
        method: Method key (``mtkd1``: the MTKD stage-1 aggregator).
        variant: ``default`` (shipped weights), ``swept`` (weight chosen by the sweep), ``sweep`` (a sweep trial).
        weight: Loss weight set at the method's sweep key (``None``: shipped).
        needs: Names of runs that must finish first.
        reuse: A default run with the same options but the name (a sweep trial at the shipped weight, same
            seed and iterations): its kept student is scored instead of training the trial again.
    """

    name: str
    method: str
    seed: int
    iters: int
    variant: str = 'default'
    weight: float | None = None
    needs: list[str] = field(default_factory=list)
    reuse: str | None = None


class Driver:
    """Runs and scores the benchmark's runs in ``work`` (``options/``, ``logs/``, ``experiments/``, ``results/``)."""

    def __init__(self, bm: Benchmark, out: str, work: str, skip_done: bool, jobs: int) -> None:
        self.bm, self.out, self.work, self.skip_done, self.jobs = bm, out, work, skip_done, jobs
        self.results: dict[str, dict] = {}
        self.trained: list[str] = []
        self._lock = threading.Lock()
        self._test = scoring.image_pairs(osp.join(bm.data, 'test'), bm.scale)
        self._val = scoring.image_pairs(osp.join(bm.data, 'val'), bm.scale)
        self.grid_image = str(bm.raw.get('grid_image') or self._test[0].name)
        self._teacher_sr: dict[str, np.ndarray] | None = None
        self.teacher_scores: dict[str, dict] = {}
        for sub in ('options', 'logs', 'results', 'grid'):
            os.makedirs(osp.join(work, sub), exist_ok=True)

    # ------------------------------------------------------------------ bookkeeping
    def result_path(self, name: str) -> str:
        return osp.join(self.work, 'results', f'{name}.json')

    def stored_results(self) -> dict[str, dict]:
        """Every stored run result (``--report-only``)."""
        folder = osp.join(self.work, 'results')
        out = {}
        for f in sorted(os.listdir(folder)):
            if f.endswith('.json'):
                with open(osp.join(folder, f), encoding='utf-8') as fh:
                    out[f[:-5]] = json.load(fh)
        return out

    def options_text(self, opt: dict) -> str:
        """A run's options as canonical JSON with this work folder written ``<work>`` (the MTKD aggregator
        checkpoint and the teacher-output caches live there): the digest of a run does not depend on
        where its work folder is, so a run JSON copied from another work folder is recognised."""
        return re.sub(re.escape(json.dumps(self.work)[1:-1]) + r'(?=[/"])', WORK, json.dumps(opt, sort_keys=True))

    def done(self, name: str, text: str) -> dict | None:
        """The stored result of a finished run whose options have the :meth:`options_text` ``text``
        (``--skip-done``), else ``None``.

        A result written before digests named the work folder ``<work>`` holds the digest of its options
        with the absolute work folder it ran in (its ``options`` file's folder): that one matches too.
        """
        path = self.result_path(name)
        if not (self.skip_done and osp.isfile(path)):
            return None
        with open(path, encoding='utf-8') as f:
            res = json.load(f)
        digests = {digest(text)}
        if ran_in := osp.dirname(osp.dirname(res.get('options') or '')):
            digests.add(digest(text.replace(WORK, json.dumps(ran_in)[1:-1])))
        return res if res.get('options_sha256') in digests else None

    def ckpt(self, name: str, it: int | None = None) -> str:
        file = 'net_g_latest.pth' if it is None else f'net_g_{it}.pth'
        return osp.join(self.work, 'experiments', name, 'models', file)

    # ------------------------------------------------------------------ teacher outputs
    def teacher_outputs(self) -> dict[str, np.ndarray]:
        """The first teacher's test outputs (``work/teacher_sr/<name>/``, computed once) and its test score."""
        with self._lock:
            if self._teacher_sr is None:
                t = self.bm.teachers[0]
                folder = osp.join(self.work, 'teacher_sr', t.name)
                meta = osp.join(folder, 'score.json')
                if osp.isfile(meta):
                    with open(meta, encoding='utf-8') as f:
                        self.teacher_scores[t.name] = json.load(f)
                    self._teacher_sr = {p.name: scoring.read_image(osp.join(folder, f'{p.name}.png'))
                                        for p in self._test}
                else:
                    print(f'[bench] teacher {t.name}: test outputs ...', flush=True)
                    params = scoring.load_params(t.pretrain, 'params')
                    keep: dict[str, np.ndarray] = {}
                    res = scoring.score(scoring.build_net(t.network, params), self._test, self.bm.scale, keep=keep)
                    os.makedirs(folder, exist_ok=True)
                    for k, img in keep.items():
                        cv2.imwrite(osp.join(folder, f'{k}.png'), img)
                    with open(meta, 'w', encoding='utf-8') as f:
                        json.dump(res, f, indent=1)
                    self.teacher_scores[t.name], self._teacher_sr = res, keep
            return self._teacher_sr

    # ------------------------------------------------------------------ one run
    def options(self, run: Run, cache: str | None) -> dict:
        agg = self.ckpt(self.aggregator_name()) if run.method == 'mtkd' else None
        return run_options(self.bm, run.method, run.name, run.seed, run.iters, weight=run.weight, cache=cache,
                           aggregator_ckpt=agg)

    def aggregator_name(self) -> str:
        return self.bm.aggregator_run

    def kept_aggregator(self) -> str:
        """Where the benchmark keeps the stage-1 aggregator (``<out>/aggregator/``; ``work/`` is not kept)."""
        return osp.join(self.out, 'aggregator', f'{self.aggregator_name()}.pth')

    def keep_aggregator(self, ckpt: str) -> str:
        """Copy the whole stage-1 checkpoint (its ``kd_meta`` names the teacher order stage 2 checks)."""
        os.makedirs(osp.dirname(self.kept_aggregator()), exist_ok=True)
        shutil.copyfile(ckpt, self.kept_aggregator())
        return self.kept_aggregator()

    def restore_aggregator(self) -> None:
        """Put the kept aggregator where stage-2 runs read it, when the work folder lost it."""
        path = self.ckpt(self.aggregator_name())
        with self._lock:
            if osp.isfile(path):
                return
            if not osp.isfile(self.kept_aggregator()):
                raise FileNotFoundError(
                    f'MTKD stage 2 needs the stage-1 aggregator {path}, and no kept copy exists '
                    f'({self.kept_aggregator()}); delete {self.result_path(self.aggregator_name())} to retrain it.')
            os.makedirs(osp.dirname(path), exist_ok=True)
            shutil.copyfile(self.kept_aggregator(), path)

    def execute(self, run: Run, cache: str | None) -> dict:
        opt = self.options(run, cache)
        text = self.options_text(opt)
        if (res := self.done(run.name, text)) is not None:
            print(f'[bench] {run.name}: done, kept', flush=True)
            return res
        sha = digest(text)
        yml = write_yaml(opt, osp.join(self.work, 'options', f'{run.name}.yml'))
        if run.reuse:
            return self.reuse_student(run, opt, yml, sha)
        if run.method == 'mtkd':
            self.restore_aggregator()
        args = ('--auto_resume',) if self.skip_done else ()
        earlier_s = self.earlier_train_s(run)
        print(f'[bench] {run.name}: training {run.iters} iterations ({opt["model_type"]}) ...', flush=True)
        train_s = earlier_s + run_entry_point('kdsr_plugins.train', yml, self.work,
                                              osp.join(self.work, 'logs', f'{run.name}.log'), args)
        with self._lock:
            self.trained.append(run.name)
        curve = self.val_curve(run, opt)
        res = {**self.result_head(run, opt, yml, sha, train_s, bool(cache)),
               'val_curve': {str(it): v for it, v in curve.items()}}
        res.update(self.score_run(run, opt, curve))
        return self.store(res)

    def earlier_train_s(self, run: Run) -> float:
        """Seconds earlier processes of ``run`` trained when ``--auto_resume`` will resume it (a saved
        training state), so that ``train_s`` of a resumed run counts all of its training."""
        from kdsr_plugins.report.logs import train_span_s

        folder = osp.join(self.work, 'experiments', run.name)
        states = osp.join(folder, 'training_states')
        if not self.skip_done or not osp.isdir(states) or not any(f.endswith('.state') for f in os.listdir(states)):
            return 0.0
        return train_span_s(folder)

    @staticmethod
    def result_head(run: Run, opt: dict, yml: str, sha: str, train_s: float, cached: bool) -> dict:
        """The fields every run JSON starts with: what ran, its options file and hash, its training time."""
        return {'name': run.name, 'method': run.method, 'variant': run.variant, 'seed': run.seed, 'iters': run.iters,
                'weight': run.weight, 'train_s': train_s, 'cached_targets': cached, 'options': yml,
                'options_sha256': sha, 'ema_decay': opt['train']['ema_decay']}

    def store(self, res: dict) -> dict:
        with open(self.result_path(res['name']), 'w', encoding='utf-8') as f:
            json.dump(res, f, indent=1)
        print(f'[bench] {res["name"]}: {self.brief(res)} ({res["train_s"]:.0f} s)', flush=True)
        return res

    def val_curve(self, run: Run, opt: dict) -> dict[int, float]:
        """Validation PSNR per iteration from the run's training log (kept in its JSON: ``work/`` is not)."""
        from kdsr_plugins.report.logs import read_experiment

        log = read_experiment(osp.join(self.work, 'experiments', run.name))
        curve = log.curves.get(opt['datasets']['val']['name'], {}).get('psnr', {}) if log else {}
        return dict(sorted(curve.items()))

    def reuse_student(self, run: Run, opt: dict, yml: str, sha: str) -> dict:
        """A sweep trial identical to the default run ``run.reuse``: its kept student scored on the val split."""
        with open(self.result_path(run.reuse), encoding='utf-8') as f:
            src = json.load(f)
        student = self.student_path(src['method'], src['seed'])
        print(f'[bench] {run.name}: same options as {run.reuse}, scoring its student {student}', flush=True)
        res = {**self.result_head(run, opt, yml, sha, src['train_s'], src['cached_targets']),
               'reused_from': run.reuse, 'val': self.score_split(student, opt, self._val)}
        return self.store(res)

    def score_split(self, ckpt: str, opt: dict, pairs: list, refs: dict | None = None,
                    grid_name: str | None = None) -> dict[str, dict]:
        """Scores of the ``params`` / ``params_ema`` weights of ``ckpt`` on ``pairs`` (grid crop: test split)."""
        out = {}
        for key in ('params', 'params_ema'):
            params = scoring.load_params(ckpt, key)
            if params is None:
                continue
            keep: dict[str, np.ndarray] = {}
            out[key] = scoring.score(scoring.build_net(opt['network_g'], params), pairs, self.bm.scale, refs, keep)
            if grid_name:
                self.write_grid_tile(grid_name, key, keep)
        return out

    @staticmethod
    def brief(res: dict) -> str:
        return ', '.join(f'{split} {key} PSNR {m["psnr"]:.3f}' for split in ('test', 'val')
                         for key, m in res.get(split, {}).items())

    def score_run(self, run: Run, opt: dict, val_curve: dict[int, float]) -> dict:
        """Scores of a finished run: raw (``params``) and EMA (``params_ema``) weights.

        Sweep trials: on the validation split. Other student runs: on the test split, plus PSNR to
        the teacher's output, the grid crop's output and (scratch) the checkpoint at 80 % of training.
        The MTKD aggregator: on the test split through ``python -m kdsr_plugins.test`` (it runs the teachers).
        """
        ckpt = self.ckpt(run.name)
        if run.method == 'mtkd1':
            key = 'params_ema' if opt['train']['ema_decay'] > 0 else 'params'
            return {'test': {key: self.test_aggregator(run, opt)},
                    'aggregator': self.keep_aggregator(ckpt)}
        out: dict = {}
        if run.variant == 'sweep':
            out['val'] = self.score_split(ckpt, opt, self._val)
            return out
        out['test'] = self.score_split(ckpt, opt, self._test, self.teacher_outputs(), run.name)
        if run.method == 'scratch':
            out['convergence'] = self.convergence(run, opt, val_curve)
        out['student'] = scoring.keep_student(ckpt, self.student_path(run.method, run.seed, run.variant))
        return out

    def grid_tile(self, name: str, method: str, seed: int, variant: str) -> str:
        """The grid crop of a run's raw weights (``work/grid/``), made again from its kept student if missing."""
        path = self.grid_tile_path(name, 'params')
        student = self.student_path(method, seed, variant)
        if not osp.isfile(path) and osp.isfile(student):
            keep: dict[str, np.ndarray] = {}
            net = scoring.build_net(self.bm.student, scoring.load_params(student, 'params'))
            scoring.score(net, [self.grid_pair], self.bm.scale, keep=keep)
            self.write_grid_tile(name, 'params', keep)
        return path

    @property
    def grid_pair(self) -> scoring.Pair:
        """The test pair whose crop the picture grid shows."""
        return next(p for p in self._test if p.name == self.grid_image)

    def grid_tile_path(self, name: str, key: str) -> str:
        return osp.join(self.work, 'grid', f'{name}_{key}.png')

    def write_grid_tile(self, name: str, key: str, outputs: dict[str, np.ndarray]) -> None:
        """Keep the grid image's output of ``outputs`` (test image name -> output) as the run's tile."""
        cv2.imwrite(self.grid_tile_path(name, key), outputs[self.grid_image])

    def student_path(self, method: str, seed: int, variant: str = 'default') -> str:
        """Where the benchmark keeps the final student of a run (``<out>/students[_swept]/``)."""
        return osp.join(self.out, 'students' if variant == 'default' else 'students_swept', f'{method}_seed{seed}.pth')

    def convergence(self, run: Run, opt: dict, val_curve: dict[int, float]) -> dict:
        """Test PSNR at the start of the last 20 % (the latest checkpoint at or before 0.8 T) and at the end."""
        res = {'val': last_fraction_gain(val_curve, run.iters)}
        freq = opt['logger']['save_checkpoint_freq']
        t0 = int(0.8 * run.iters) // freq * freq
        if t0 <= 0 or not osp.isfile(self.ckpt(run.name, t0)):
            return res
        res['test'] = {'from_iter': t0, 'to_iter': run.iters}
        for key in ('params', 'params_ema'):
            params = scoring.load_params(self.ckpt(run.name, t0), key)
            if params is not None:
                res['test'][key] = scoring.score(scoring.build_net(opt['network_g'], params), self._test,
                                                 self.bm.scale)['psnr']
        return res

    def test_aggregator(self, run: Run, opt: dict) -> dict:
        test_name = f'test_{run.name}'
        key = 'params_ema' if opt['train']['ema_decay'] > 0 else 'params'
        t = {'name': test_name, 'model_type': opt['model_type'], 'scale': self.bm.scale,
             'num_gpu': opt.get('num_gpu', 0), 'manual_seed': 0, 'network_g': opt['network_g'],
             'teachers': opt['teachers'],
             'datasets': {'test_1': {**opt['datasets']['val'], 'name': f'{self.bm.name}_test',
                                     'dataroot_gt': osp.join(osp.abspath(self.bm.data), 'test', 'HR'),
                                     'dataroot_lq': osp.join(osp.abspath(self.bm.data), 'test', 'LR_bicubic',
                                                             f'X{self.bm.scale}')}},
             'path': {'pretrain_network_g': self.ckpt(run.name),
                      'param_key_g': key, 'strict_load_g': True},
             'val': {'save_img': False, 'suffix': None, 'metrics': opt['val']['metrics']}}
        yml = write_yaml(t, osp.join(self.work, 'options', f'{test_name}.yml'))
        run_entry_point('kdsr_plugins.test', yml, self.work, osp.join(self.work, 'logs', f'{test_name}.log'))
        return read_test_metrics(osp.join(self.work, 'results'), test_name)

    # ------------------------------------------------------------------ teacher-output cache
    def cache_path(self, method: str) -> str | None:
        """The cache LMDB a run of ``method`` reads (``None``: no cache for it)."""
        if not self.bm.cache_teacher or method not in OUTPUT_ONLY:
            return None
        name = 'aggregator' if method == 'mtkd' else self.bm.teachers[0].name
        return osp.join(self.work, 'cache', f'{name}.lmdb')

    def ensure_cache(self, run: Run) -> str | None:
        """Build the cache a run reads once (``kdsr_plugins.tools.cache_teacher_outputs``), under a lock."""
        path = self.cache_path(run.method)
        if path is None:
            return None
        with self._lock:
            if not osp.isdir(path):
                yml = write_yaml(self.options(run, path), osp.join(self.work, 'options', f'cache_{run.method}.yml'))
                log = osp.join(self.work, 'logs', f'cache_{run.method}.log')
                print(f'[bench] caching teacher outputs for {run.method} -> {path} ...', flush=True)
                start = time.time()
                with open(log, 'w') as f:
                    cmd = [sys.executable, '-m', 'kdsr_plugins.tools.cache_teacher_outputs', '-opt', yml]
                    proc = subprocess.run(cmd, cwd=self.work, stdout=f, stderr=subprocess.STDOUT)
                if proc.returncode != 0:
                    shutil.rmtree(path, ignore_errors=True)
                    raise RuntimeError(f'teacher-output cache failed; log {log}:\n{open(log).read()[-3000:]}')
                print(f'[bench] cache {path}: {time.time() - start:.0f} s', flush=True)
        return path

    # ------------------------------------------------------------------ all runs
    def run_all(self, runs: list[Run], then=None) -> dict[str, dict]:
        """Execute ``runs`` ``jobs`` at a time (a run starts once its ``needs`` are done)."""
        pending = list(runs)
        done: dict[str, dict] = {}

        def task(run: Run) -> dict:
            return self.execute(run, self.ensure_cache(run))

        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            running: dict[Future, Run] = {}
            while pending or running:
                for run in [r for r in pending if all(n in done or n in self.results for n in r.needs)]:
                    running[pool.submit(task, run)] = run
                    pending.remove(run)
                if not running:
                    raise RuntimeError(f'runs waiting on missing runs: {[(r.name, r.needs) for r in pending]}')
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in finished:
                    run = running.pop(fut)
                    done[run.name] = fut.result()
        self.results.update(done)
        return done
