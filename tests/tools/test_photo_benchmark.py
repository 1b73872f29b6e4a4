"""Real-photo benchmark driver (``bench/photo_benchmark.py``) and re-scoring (``bench/quality.py --score-only``).

Tiny photo set (scikit-image photos through ``data_prep photos``), tiny random teachers, a few iterations.
"""
from __future__ import annotations

import json
import os
import os.path as osp
import subprocess
import sys

import cv2
import numpy as np
import pytest
import yaml

from kdsr_testutils import ROOT, edsr, save_random_net

BENCH = osp.join(ROOT, 'bench')
sys.path.insert(0, BENCH)

from photo_bench import report, stats  # noqa: E402

SCALE = 4


def make_photo_set(root: str) -> str:
    """A photo set: 1 train photo (16 sub-images of 96), 1 val and 2 test photos, x4."""
    import skimage

    from kdsr_plugins.data_prep.photos import build_photo_set, sha256_file, source_path

    photos = []
    for f, split, size in (('astronaut.png', 'train', [192, 192]), ('coffee.png', 'val', [96, 72]),
                           ('rocket.jpg', 'test', [96, 96]), ('chelsea.png', 'test', [120, 96])):
        src = {'kind': 'skimage', 'version': skimage.__version__, 'file': f}
        photos.append({'name': f.split('.')[0], 'split': split, 'source': src, 'sha256': sha256_file(source_path(src)),
                       'resize_to': size})
    man = {'format': 1, 'max_pixels': 200000, 'mod': 12, 'scales': [SCALE], 'crop_size': 48, 'step': 48,
           'photos': photos}
    path = osp.join(root, 'manifest.json')
    with open(path, 'w') as f:
        json.dump(man, f)
    out = osp.join(root, 'photos')
    build_photo_set(path, out, progress=False)
    return out


def make_config(root: str, data: str, n_teachers: int = 1, methods=('scratch', 'kd', 'fitnet'),
                sweep: bool = False, sweep_iters: int = 2) -> str:
    """A benchmark config with tiny random EDSR teachers (f8b2) and student (f4b1)."""
    teachers = []
    for i in range(n_teachers):
        ckpt = save_random_net(edsr(8, 2, SCALE), osp.join(root, f'teacher{i}.pth'), seed=i)
        teachers.append({'name': f't{i}', 'network': edsr(8, 2, SCALE), 'pretrain': ckpt,
                         'taps': ['conv_first', 1, 'conv_after_body'], 'mipkd_positions': [1]})
    shipped = {'scratch': 'Scratch/train_Scratch_EDSR_x4c64b32.yml', 'kd': 'KD/train_KD_EDSR_x4c256b32_c64b32.yml',
               'fitnet': 'FeatureKD/train_FitNet_EDSR_x4c256b32_c64b32.yml',
               'mtkd': 'MTKD/train_MTKD_EDSRbl_x4.yml'}
    spec = {m: {'options': f'options/train/{shipped[m]}'} for m in methods}
    if 'mtkd' in spec:
        spec['mtkd']['stage1'] = 'options/train/MTKD/train_MTKD_DCTSwin_x4_edsr_swinir_rcan.yml'
    if sweep:
        spec['kd']['sweep'] = {'key': 'train.kd_opt.loss_weight', 'values': [0.5, 1.0]}
    cfg = {'name': 'tiny', 'scale': SCALE, 'data': data, 'iters': 4, 'seeds': [0, 1], 'val_freq': 2,
           'recipe': {'batch_size': 2, 'gt_size': 32, 'lr': 1e-3, 'warmup_iter': -1, 'eta_min': 1e-6,
                      'ema_decay': 0.9},
           'student': {'network_g': edsr(4, 1, SCALE), 'taps': ['conv_first', 0, 'conv_after_body'],
                       'mipkd_positions': [0]},
           'teachers': teachers, 'teacher_check': 'off', 'cache_teacher': True, 'methods': spec,
           'mtkd': {'aggregator': {'type': 'MTKDDCTSwin', 'img_size': 32, 'window_size': 4, 'embed_dim': 12,
                                   'depths': [1], 'num_heads': [2], 'mlp_ratio': 2, 'num_feat': 8},
                    'aggregator_iters': 2},
           'sweep': {'iters': sweep_iters, 'seed': 0}}
    path = osp.join(root, 'bench.yml')
    with open(path, 'w') as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    return path


def run_bench(*args: str, cwd: str) -> subprocess.CompletedProcess:
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': ROOT}
    proc = subprocess.run([sys.executable, osp.join(BENCH, 'photo_benchmark.py'), *args], cwd=cwd, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


# --------------------------------------------------------------------------------------- statistics
def test_paired_delta_matches_hand_computed_t_test():
    # deltas 0.1, 0.3, 0.1: mean 1/6, sample std sqrt(0.04/3), t = 2.5 with 2 degrees of freedom;
    # Student-t CDF for 2 dof: 1/2 + t / (2 sqrt(2 + t^2)) -> p = 1 - 2.5 / sqrt(8.25)
    d = stats.paired_delta({0: 30.1, 1: 30.3, 2: 30.2, 5: 99.0}, {0: 30.0, 1: 30.0, 2: 30.1})
    assert d['seeds'] == [0, 1, 2] and d['n'] == 3
    assert d['deltas'] == pytest.approx([0.1, 0.3, 0.1])
    assert d['mean'] == pytest.approx(1 / 6)
    assert d['std'] == pytest.approx((0.04 / 3) ** 0.5)
    assert d['p'] == pytest.approx(1 - 2.5 / 8.25 ** 0.5, rel=1e-9)


def test_paired_delta_without_variance_or_pairs_has_no_p_value():
    same = stats.paired_delta({0: 30.2, 1: 30.4}, {0: 30.0, 1: 30.2})
    assert same['mean'] == pytest.approx(0.2) and same['std'] == pytest.approx(0.0, abs=1e-12) and same['p'] is None
    one = stats.paired_delta({0: 30.2}, {0: 30.0, 1: 30.1})
    assert one['n'] == 1 and one['std'] is None and one['p'] is None
    assert stats.paired_delta({}, {0: 1.0})['mean'] is None


def test_paired_curve_deltas_subtract_the_same_seed_at_shared_iterations():
    base = {0: {10: 30.0, 20: 31.0}, 1: {10: 29.0, 20: 31.5, 30: 32.0}}
    kd = {0: {10: 30.5, 20: 31.25}, 1: {10: 29.1, 20: 31.75, 30: 32.1}, 2: {10: 50.0, 20: 50.0}}
    out = report.paired_curve_deltas({'scratch': base, 'kd': kd, 'solo': {5: {10: 1.0}}}, 'scratch')
    assert set(out) == {'kd'}  # no seed of 'solo' is paired; the base has no row of its own
    iters, means, stds = out['kd']
    assert iters == [10, 20]  # 30 only on seed 1; seed 2 has no scratch run
    assert means == pytest.approx([0.3, 0.25]) and stds == pytest.approx([(0.08 ** 0.5), 0.0], abs=1e-12)
    one = report.paired_curve_deltas({'scratch': base, 'at': {1: {20: 31.0}}}, 'scratch')
    assert one['at'] == ([20], [pytest.approx(-0.5)], [None])


def test_last_fraction_gain_starts_at_the_latest_point_before_80_percent():
    curve = {1000 * i: 29.0 + 0.01 * i for i in range(1, 21)}
    g = stats.last_fraction_gain(curve, 20000)
    assert (g['from_iter'], g['to_iter']) == (16000, 20000) and g['gain'] == pytest.approx(0.04)
    g = stats.last_fraction_gain({15000: 29.9, 17000: 30.0, 20000: 30.05}, 20000)
    assert g['from_iter'] == 15000 and g['gain'] == pytest.approx(0.15)
    assert stats.last_fraction_gain({18000: 30.0, 20000: 30.1}, 20000) is None


# --------------------------------------------------------------------------------------- options
def test_run_options_take_losses_from_the_shipped_yaml_and_substitute_the_rest(tmp_path):
    from photo_bench.config import load_benchmark, read_yaml, run_options

    data = tmp_path / 'photos'
    for split in ('val', 'test'):
        (data / split / 'HR').mkdir(parents=True)
        (data / split / 'LR_bicubic' / 'X4').mkdir(parents=True)
    cfg = make_config(str(tmp_path), str(data), methods=('scratch', 'kd', 'fitnet'), sweep=True)
    with open(cfg) as f:
        raw = yaml.safe_load(f)
    raw['methods']['dukd'] = {'options': 'options/train/DUKD/train_DUKD_EDSR_x4c256b32_c64b32.yml'}
    raw['methods']['mipkd'] = {'options': 'options/train/MiPKD/train_MiPKD_EDSR_x4c256b32_c64b32.yml'}
    with open(cfg, 'w') as f:
        yaml.safe_dump(raw, f)
    bm = load_benchmark(cfg)
    shipped = read_yaml(osp.join(ROOT, 'options/train/FeatureKD/train_FitNet_EDSR_x4c256b32_c64b32.yml'))
    opt = run_options(bm, 'fitnet', 'fitnet_s1', 1, 7)
    assert opt['manual_seed'] == 1 and opt['train']['total_iter'] == 7 and opt['network_g'] == edsr(4, 1, SCALE)
    assert opt['train']['feature_opt'] == shipped['train']['feature_opt']  # the paper's loss and weight
    assert opt['train']['feature_kd']['positions_t'] == ['conv_first', 1, 'conv_after_body']
    assert opt['train']['feature_kd']['positions_s'] == ['conv_first', 0, 'conv_after_body']
    assert opt['network_t'] == edsr(8, 2, SCALE) and opt['path']['pretrain_network_t'].endswith('teacher0.pth')
    assert opt['datasets']['train']['dataroot_gt'] == str(data / 'train' / 'DIV2K_train_HR_sub.lmdb')
    dukd = run_options(bm, 'dukd', 'dukd_s0', 0, 7)
    assert dukd['path']['pretrain_network_g'] is None  # the shipped x2 initialisation is not carried over
    assert dukd['train']['pixel_opt']['loss_weight'] == 5.0 and dukd['train']['optim_g']['lr'] == 1e-3
    assert run_options(bm, 'mipkd', 'm', 0, 7)['train']['mipkd_opt']['positions_s'] == [0]
    kd = run_options(bm, 'kd', 'kd_w', 0, 7, weight=0.5, cache='/c.lmdb')
    assert kd['train']['kd_opt']['loss_weight'] == 0.5 and kd['datasets']['train']['type'] == 'KDCachedTargetDataset'
    assert run_options(bm, 'scratch', 's', 0, 7)['model_type'] == 'SRModel'
    assert 'amp' not in run_options(bm, 'fitnet', 'f', 0, 7)['train']
    bm.recipe['amp'] = 'bf16'  # every method at the same precision, scratch through AmpSRModel
    for method in ('scratch', 'kd', 'fitnet'):
        train = run_options(bm, method, 'a', 0, 7)['train']
        assert train['amp'] == 'bf16' and train['channels_last'] is False
    assert run_options(bm, 'scratch', 's', 0, 7)['model_type'] == 'AmpSRModel'
    del bm.recipe['amp']
    bm.methods['kd']['overrides'] = {'train.kd_opt.loss_weight': 0.25}  # a preset: set before the sweep weight
    assert run_options(bm, 'kd', 'kd_o', 0, 7)['train']['kd_opt']['loss_weight'] == 0.25
    assert run_options(bm, 'kd', 'kd_o', 0, 7, weight=0.5)['train']['kd_opt']['loss_weight'] == 0.5
    bm.methods['kd']['overrides'] = {'train.kd_opt.lost_weight': 0.25}
    with pytest.raises(KeyError, match='lost_weight'):
        run_options(bm, 'kd', 'kd_o', 0, 7)
    del bm.methods['kd']['overrides']
    bm.methods['kd']['sweep']['key'] = 'train.kd_opt.loss_wieght'
    with pytest.raises(KeyError, match='loss_wieght'):
        run_options(bm, 'kd', 'kd_w', 0, 7, weight=0.5)


def _variant(root, text: str, name: str = 'variant.yml') -> str:
    path = osp.join(root, name)
    with open(path, 'w') as f:
        f.write(text)
    return path


def test_a_base_config_variant_merges_mappings_replaces_lists_and_selects_methods(tmp_path):
    from photo_bench.config import load_benchmark, run_options

    data = str(tmp_path / 'photos')
    base = load_benchmark(make_config(str(tmp_path), data, methods=('scratch', 'kd', 'fitnet'), sweep=True))
    variant = load_benchmark(_variant(tmp_path, (
        'base: bench.yml\nname: wide\nseeds: [3]\nstudent:\n  network_g: {num_feat: 6}\n'
        'recipe: {lr: 2.0e-3}\nmethods:\n  kd: {overrides: {train.kd_opt.loss_weight: 0.25}}\n  scratch: {}\n')))
    assert variant.name == 'wide' and variant.seeds == [3] and variant.iters == base.iters
    assert variant.student == {**base.student, 'num_feat': 6}  # merged key by key
    assert variant.recipe == {**base.recipe, 'lr': 2e-3}
    assert variant.student_taps == base.student_taps and variant.teachers == base.teachers
    assert list(variant.methods) == ['kd', 'scratch']  # the variant's methods only
    assert variant.methods['kd']['options'] == base.methods['kd']['options']
    assert variant.methods['kd']['sweep'] == base.methods['kd']['sweep']
    opt = run_options(variant, 'kd', 'kd_s3', 3, 4)
    assert opt['network_g']['num_feat'] == 6 and opt['train']['kd_opt']['loss_weight'] == 0.25
    assert opt['train']['optim_g']['lr'] == 2e-3
    # a list is replaced whole, not merged
    variant = load_benchmark(_variant(tmp_path, 'base: bench.yml\nstudent: {taps: [conv_first]}\n'))
    assert variant.student_taps == ['conv_first'] and variant.student == base.student
    assert list(variant.methods) == list(base.methods)


def test_a_variant_default_row_weight_reads_its_overrides(tmp_path):
    import photo_benchmark
    from photo_bench.config import load_benchmark

    make_config(str(tmp_path), str(tmp_path / 'photos'), methods=('scratch', 'kd'), sweep=True)
    bm = load_benchmark(_variant(tmp_path, 'base: bench.yml\nmethods:\n  kd: {}\n'))
    assert photo_benchmark.default_weight(bm, 'kd') == 1.0  # the shipped YAML's
    bm = load_benchmark(_variant(tmp_path, 'base: bench.yml\nmethods:\n'
                                           '  kd: {overrides: {train.kd_opt.loss_weight: 3}}\n'))
    assert photo_benchmark.default_weight(bm, 'kd') == 3.0


def test_bad_base_chains_and_methods_without_options_stop_with_a_clear_error(tmp_path):
    from photo_bench.config import load_benchmark

    make_config(str(tmp_path), str(tmp_path / 'photos'), methods=('scratch',))
    with pytest.raises(SystemExit, match='base: no file'):
        load_benchmark(_variant(tmp_path, 'base: missing.yml\n'))
    _variant(tmp_path, 'base: b.yml\n', 'a.yml')
    with pytest.raises(SystemExit, match='loops'):
        load_benchmark(_variant(tmp_path, 'base: a.yml\n', 'b.yml'))
    with pytest.raises(SystemExit, match='methods.kd has no options'):
        load_benchmark(_variant(tmp_path, 'base: bench.yml\nmethods: {kd: {}}\n'))


def test_an_output_folder_of_another_config_is_refused_before_training(tmp_path, capsys):
    import photo_benchmark

    cfg = make_config(str(tmp_path), str(tmp_path / 'photos'), methods=('scratch',))
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'summary.json').write_text(json.dumps({'config': 'bench/photo/benchmark.yml'}))
    assert photo_benchmark.main(['--config', cfg, '--out', str(out), '--skip-done']) == 2
    assert 'holds the results of bench/photo/benchmark.yml' in capsys.readouterr().err
    assert sorted(os.listdir(out)) == ['summary.json']  # nothing written, nothing trained
    # a config's `out:` is the default output folder, and is guarded the same way
    assert photo_benchmark.main(['--config', _variant(tmp_path, f'base: bench.yml\nout: {out}\n')]) == 2
    assert f'{out} holds the results of' in capsys.readouterr().err
    # the same config (by file name, e.g. a snapshot elsewhere) may continue in its folder
    (out / 'summary.json').write_text(json.dumps({'config': '/elsewhere/bench.yml'}))
    bm = photo_benchmark.load_benchmark(cfg)
    assert photo_benchmark.results_of_another_config(str(out), bm) is None
    assert photo_benchmark.results_of_another_config(str(tmp_path / 'fresh'), bm) is None


def test_a_config_out_key_is_the_default_output_folder():
    from photo_bench.config import load_benchmark

    bm = load_benchmark(osp.join(BENCH, 'photo', 'why_mtkd_wide.yml'))
    assert bm.name == 'photo_x4' and bm.raw['out'] == 'bench/results/photo_x4_mtkd_wide'
    assert bm.aggregator['embed_dim'] == 48 and bm.aggregator['num_feat'] == 48
    assert list(bm.methods) == ['scratch', 'kd', 'mtkd'] and 'stage1' in bm.methods['mtkd']


def test_the_shipped_variants_load_on_benchmark_yml():
    from photo_bench.config import load_benchmark

    main = load_benchmark(osp.join(BENCH, 'photo', 'benchmark.yml'))
    for name, methods in (('why_data.yml', ['scratch', 'kd', 'at', 'fitnet', 'rkd']),
                          ('why_capacity.yml', ['scratch', 'kd', 'at', 'fitnet', 'rkd'])):
        bm = load_benchmark(osp.join(BENCH, 'photo', name))
        assert list(bm.methods) == methods and bm.recipe == main.recipe and bm.iters == main.iters
        assert bm.seeds == main.seeds and [t.name for t in bm.teachers] == [main.teachers[0].name]
        assert bm.methods['at']['overrides'] == {'train.feature_opt.loss_weight': 1.0}
    wide = load_benchmark(osp.join(BENCH, 'photo', 'why_capacity.yml'))
    assert (wide.student['num_feat'], wide.student['num_block']) == (24, 4)
    assert {k: v for k, v in wide.student.items() if k not in ('num_feat', 'num_block')} == \
        {k: v for k, v in main.student.items() if k not in ('num_feat', 'num_block')}


# --------------------------------------------------------------------------------------- re-scoring
def test_image_pairs_accept_scale_suffixed_and_plain_lr_names(tmp_path):
    from photo_bench.scoring import image_pairs

    (tmp_path / 'HR').mkdir(), (tmp_path / 'LR_bicubic' / 'X4').mkdir(parents=True)
    img = np.zeros((16, 16, 3), np.uint8)
    for name in ('a', 'b'):
        cv2.imwrite(str(tmp_path / 'HR' / f'{name}.png'), img)
    cv2.imwrite(str(tmp_path / 'LR_bicubic' / 'X4' / 'ax4.png'), img[:4, :4])
    cv2.imwrite(str(tmp_path / 'LR_bicubic' / 'X4' / 'b.png'), img[:4, :4])
    assert [(p.name, osp.basename(p.lr)) for p in image_pairs(str(tmp_path), 4)] == [('a', 'ax4.png'), ('b', 'b.png')]
    os.remove(tmp_path / 'LR_bicubic' / 'X4' / 'b.png')
    with pytest.raises(FileNotFoundError, match=r"b\.png"):
        image_pairs(str(tmp_path), 4)


def _students(folder: str) -> None:
    from photo_bench.scoring import write_students_card

    os.makedirs(folder)
    files = {}
    for i, (m, s) in enumerate((('scratch', 0), ('kd', 0), ('mtkd', 1), ('scratch', 1))):
        save_random_net(edsr(4, 1, SCALE), osp.join(folder, f'{m}_seed{s}.pth'), seed=i)
        files[f'{m}_seed{s}.pth'] = {'method': m, 'seed': s}
    write_students_card(folder, edsr(4, 1, SCALE), SCALE, files)


def _set5(root: str, plain: bool) -> None:
    rng = np.random.default_rng(0)
    os.makedirs(osp.join(root, 'HR')), os.makedirs(osp.join(root, 'LR_bicubic', 'X4'))
    for name in ('bird', 'woman'):
        hr = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
        cv2.imwrite(osp.join(root, 'HR', f'{name}.png'), hr)
        lr = cv2.resize(hr, (12, 10), interpolation=cv2.INTER_AREA)
        cv2.imwrite(osp.join(root, 'LR_bicubic', 'X4', f'{name}{"" if plain else "x4"}.png'), lr)


def test_score_only_writes_the_results_json_with_method_labels(tmp_path):
    import torch
    from photo_bench import rescore, scoring

    _students(str(tmp_path / 'students'))
    _set5(str(tmp_path / 'set5'), plain=True)
    assert rescore.main(['--test-root', str(tmp_path / 'set5'), '--scale', '4', '--out', str(tmp_path / 'o'),
                         '--students', str(tmp_path / 'students')]) == 0
    with open(tmp_path / 'o' / 'summary.json') as f:
        res = json.load(f)
    assert list(res) == ['results']
    assert [(r['method'], r['seed']) for r in res['results']] == [('scratch', 0), ('scratch', 1), ('kd', 0),
                                                                  ('mtkd', 1)]
    assert all(list(r) == ['method', 'seed', 'psnr_y', 'ssim_y'] for r in res['results'])
    # the same figure as scoring the network by hand (BasicSR's Y PSNR, crop 4)
    params = torch.load(tmp_path / 'students' / 'kd_seed0.pth', weights_only=True)['params']
    net = scoring.build_net(edsr(4, 1, SCALE), params)
    want = []
    for name in ('bird', 'woman'):
        sr = scoring.super_resolve(net, cv2.imread(str(tmp_path / 'set5' / 'LR_bicubic' / 'X4' / f'{name}.png')))
        want.append(scoring.y_metrics(sr, cv2.imread(str(tmp_path / 'set5' / 'HR' / f'{name}.png')), 4)['psnr'])
    assert res['results'][2]['psnr_y'] == pytest.approx(sum(want) / 2)
    assert '| scratch | 2 |' in (tmp_path / 'o' / 'table.md').read_text()
    with pytest.raises(SystemExit, match='x4'):
        rescore.main(['--test-root', str(tmp_path / 'set5'), '--scale', '2', '--out', str(tmp_path / 'o2'),
                      '--students', str(tmp_path / 'students')])


@pytest.mark.subprocess
def test_quality_score_only_command_line(tmp_path):
    _students(str(tmp_path / 'students'))
    _set5(str(tmp_path / 'set5'), plain=False)
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': ROOT}
    proc = subprocess.run([sys.executable, osp.join(BENCH, 'quality.py'), '--score-only', '--test-root',
                           str(tmp_path / 'set5'), '--scale', '4', '--out', str(tmp_path / 'o'), '--students',
                           str(tmp_path / 'students')], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads((tmp_path / 'o' / 'summary.json').read_text())['results']
    assert {r['method'] for r in res} == {'scratch', 'kd', 'mtkd'} and all(r['psnr_y'] > 0 for r in res)


# --------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
@pytest.mark.subprocess
def test_benchmark_end_to_end_then_skip_done(tmp_path):
    data = make_photo_set(str(tmp_path))
    cfg = make_config(str(tmp_path), data, methods=('scratch', 'kd', 'mtkd'))
    out = tmp_path / 'out'
    proc = run_bench('--config', cfg, '--out', str(out), '--skip-done', cwd=str(tmp_path))
    assert 'skipping mtkd: MTKD needs >= 2 teachers, the config lists 1' in proc.stdout
    summary = json.loads((out / 'summary.json').read_text())
    assert sorted(summary['trained_this_call']) == ['kd_s0', 'kd_s1', 'scratch_s0', 'scratch_s1']
    rows = summary['rows']
    assert rows['mtkd'] == {'skipped': 'MTKD needs >= 2 teachers, the config lists 1'}
    kd = rows['kd']
    assert kd['seeds'] == [0, 1] and set(kd) >= {'raw', 'ema', 'delta_vs_scratch'}
    per = {int(k): v for k, v in kd['raw']['psnr']['per_seed'].items()}
    base = {int(k): v for k, v in rows['scratch']['raw']['psnr']['per_seed'].items()}
    assert kd['delta_vs_scratch']['raw']['deltas'] == pytest.approx([per[s] - base[s] for s in (0, 1)])
    assert 0 < kd['raw']['psnr_teacher']['mean'] < 100
    assert summary['runs']['kd_s0']['cached_targets'] is True  # logits KD read the teacher-output cache
    assert summary['convergence']['from_iter'] == 2 and 'test_raw' in summary['convergence']
    table = (out / 'table.md').read_text()
    assert '| mtkd | skipped: MTKD needs >= 2 teachers' in table and '| Teacher t0 |' in table
    assert summary["title"].startswith(f"{summary['benchmark']} ({osp.basename(cfg)}): ")  # variants tell apart
    for f in ('psnr_curves.png', 'psnr_delta_curves.png', 'grid.png', 'students/scratch_seed0.pth',
              'students/kd_seed1.pth'):
        assert (out / f).is_file(), f
    card = json.loads((out / 'students' / 'students.json').read_text())
    assert card['network_g'] == edsr(4, 1, SCALE) and card['students']['kd_seed1.pth'] == {
        'method': 'kd', 'seed': 1, 'weight': None}
    proc = run_bench('--config', cfg, '--out', str(out), '--skip-done', cwd=str(tmp_path))
    assert 'training' not in proc.stdout and json.loads((out / 'summary.json').read_text())['trained_this_call'] == []
    assert json.loads((out / 'summary.json').read_text())['rows']['kd']['raw'] == kd['raw']


def test_sweep_trial_at_the_shipped_weight_reuses_the_default_run(tmp_path):
    import photo_benchmark
    from photo_bench.config import load_benchmark

    data = make_photo_set(str(tmp_path))
    bm = load_benchmark(make_config(str(tmp_path), data, methods=('scratch', 'kd'), sweep=True, sweep_iters=4))
    trials = {t.name: t for t in photo_benchmark.sweep_trials(bm, ['scratch', 'kd'], {})}
    assert sorted(trials) == ['sweep_kd_w0.5_s0', 'sweep_kd_w1_s0']
    assert trials['sweep_kd_w1_s0'].reuse == 'kd_s0' and trials['sweep_kd_w1_s0'].needs == ['kd_s0']
    assert trials['sweep_kd_w0.5_s0'].reuse is None
    bm.sweep_iters = 2  # a shorter sweep trains something else: no reuse
    assert all(t.reuse is None for t in photo_benchmark.sweep_trials(bm, ['kd'], {}))


@pytest.mark.slow
@pytest.mark.subprocess
def test_sweep_reuses_the_default_run_and_the_report_survives_a_lost_work_folder(tmp_path):
    import shutil

    data = make_photo_set(str(tmp_path))
    cfg = make_config(str(tmp_path), data, methods=('scratch', 'kd'), sweep=True, sweep_iters=4)
    out = tmp_path / 'out'
    run_bench('--config', cfg, '--out', str(out), '--skip-done', '--sweep', cwd=str(tmp_path))
    summary = json.loads((out / 'summary.json').read_text())
    assert 'sweep_kd_w0.5_s0' in summary['trained_this_call']
    assert 'sweep_kd_w1_s0' not in summary['trained_this_call']
    results = out / 'work' / 'results'
    reused = json.loads((results / 'sweep_kd_w1_s0.json').read_text())
    assert reused['reused_from'] == 'kd_s0' and set(reused['val']) == {'params', 'params_ema'}
    assert set(summary['sweep']['kd']['val_psnr']) == {'0.5', '1'}
    kd = json.loads((results / 'kd_s0.json').read_text())
    assert sorted(int(it) for it in kd['val_curve']) == [2, 4]
    # the working folder's logs and grid crops are gone (a new session): curves from the run JSONs,
    # grid crops again from the kept students
    shutil.rmtree(out / 'work' / 'experiments')
    shutil.rmtree(out / 'work' / 'grid')
    (out / 'grid.png').unlink()
    run_bench('--config', cfg, '--out', str(out), '--sweep', '--report-only', cwd=str(tmp_path))
    assert (out / 'grid.png').is_file() and (out / 'work' / 'grid' / 'kd_s0_params.png').is_file()
    assert json.loads((out / 'summary.json').read_text())['rows']['kd']['raw'] == summary['rows']['kd']['raw']


def test_unfinished_sweep_reports_pending_trials_and_chooses_nothing(tmp_path):
    import photo_benchmark
    from photo_bench.config import load_benchmark

    data = make_photo_set(str(tmp_path))
    bm = load_benchmark(make_config(str(tmp_path), data, methods=('scratch', 'kd'), sweep=True))
    trials = photo_benchmark.sweep_trials(bm, ['kd'], {})
    first = {trials[0].name: {'val': {'params': {'psnr': 30.0}}}}
    sweep = photo_benchmark.choose(bm, trials, first)
    assert sweep['kd']['pending'] == ['1'] and 'chosen' not in sweep['kd']
    assert photo_benchmark.swept_runs(bm, sweep) == []
    both = {**first, trials[1].name: {'val': {'params': {'psnr': 30.5}}}}
    sweep = photo_benchmark.choose(bm, trials, both)
    assert sweep['kd']['chosen'] == 1.0 and 'pending' not in sweep['kd']
    assert photo_benchmark.swept_runs(bm, sweep) == []  # the shipped weight won: the default rows serve


def test_sweep_note_gives_the_trial_budget_and_the_swept_rows_not_run_yet():
    from photo_bench.report import sweep_text

    trial = {'iters': 1200, 'seed': 0, 'key': 'k', 'val_psnr': {'1': 30.0, '3': 30.1}}
    summary = {'iters': 4800, 'rows': {'kd': {}, 'kd (swept)': {}, 'fitnet': {}, 'mipkd (swept)': {}},
               'sweep': {'kd': {**trial, 'chosen': 3.0}, 'fitnet': {**trial, 'chosen': 1.0},
                         'mipkd': {**trial, 'chosen': 1.0}, 'at': {**trial, 'pending': ['3']}}}
    text = sweep_text(summary)
    assert text.startswith('Each trial: 1200 iterations, seed 0,') and '(4800 iterations, the same seeds)' in text
    assert text.endswith('Swept rows not run yet: fitnet.')  # at chose nothing yet; kd and mipkd have rows
    assert sweep_text({**summary, 'rows': {**summary['rows'], 'fitnet (swept)': {}}}).endswith('the same seeds).')
    partial = {**summary, 'seeds': [0, 1, 2], 'rows': {**summary['rows'], 'kd (swept)': {'seeds': [0, 1, 2]},
                                                         'mipkd (swept)': {'seeds': [1]}}}
    assert sweep_text(partial).endswith('not run yet: fitnet. Swept rows with seeds still to run: mipkd (1 of 3).')


def test_row_labels_and_run_names_name_the_swept_runs():
    from photo_bench.config import parse_row_label, row_label, run_name

    assert (row_label('kd'), row_label('kd', swept=True)) == ('kd', 'kd (swept)')
    assert parse_row_label('mipkd_lite (swept)') == ('mipkd_lite', True) and parse_row_label('kd') == ('kd', False)
    assert (run_name('kd', 2), run_name('kd', 2, swept=True)) == ('kd_s2', 'kd_swept_s2')


def test_a_resumed_run_counts_the_training_time_of_its_earlier_processes(tmp_path):
    from photo_bench.config import load_benchmark
    from photo_bench.runner import Driver, Run

    data = make_photo_set(str(tmp_path))
    bm = load_benchmark(make_config(str(tmp_path), data, methods=('scratch', 'kd')))
    driver = Driver(bm, str(tmp_path / 'out'), str(tmp_path / 'work'), skip_done=True, jobs=1)
    run = Run('kd_s0', 'kd', 0, 100)
    folder = tmp_path / 'work' / 'experiments' / 'kd_s0'
    os.makedirs(folder / 'training_states')
    (folder / 'train_kd_s0_20261207_100000.log').write_text(
        '2026-12-07 10:00:00,000 INFO: start\n  total_iter: 100\n'
        '2026-12-07 10:01:40,500 INFO: [kd_s0..][epoch:  0, iter:      50, lr:(1.0e-03,)]\n\t # psnr: 30.0\n')
    (folder / 'train_kd_s0_20261207_110000.log').write_text(
        '2026-12-07 11:00:00,000 INFO: resume\n2026-12-07 11:00:30,000 INFO: End of training.\n')
    (folder / 'train_kd_s0_20261207_120000.log').write_text('2026-12-07 12:00:00,000 INFO: one record\n')
    assert driver.earlier_train_s(run) == 0.0  # no training state: BasicSR starts afresh, the logs are archived
    (folder / 'training_states' / '50.state').write_bytes(b'')
    assert driver.earlier_train_s(run) == pytest.approx(130.5)
    assert Driver(bm, str(tmp_path / 'out'), str(tmp_path / 'work'), skip_done=False, jobs=1).earlier_train_s(run) == 0


def test_figures_leave_out_skipped_rows_and_swept_rows_that_kept_the_shipped_weight():
    import photo_benchmark

    summary = {'rows': {'scratch': {}, 'kd': {}, 'mtkd': {'skipped': 'one teacher'}, 'kd (swept)': {},
                        'mipkd': {}, 'mipkd (swept)': {}},
               'sweep': {'kd': {'chosen': 3.0, 'shipped': 1.0}, 'mipkd': {'chosen': 1.0, 'shipped': 1.0}}}
    assert photo_benchmark.plotted_rows(summary) == ['scratch', 'kd', 'kd (swept)', 'mipkd']


def test_a_run_json_from_another_work_folder_is_recognised_by_its_options(tmp_path):
    import hashlib

    from photo_bench.config import load_benchmark
    from photo_bench.runner import Driver, digest

    data = make_photo_set(str(tmp_path))
    bm = load_benchmark(make_config(str(tmp_path), data, methods=('scratch', 'kd')))
    here, there = (Driver(bm, str(tmp_path / 'out'), str(tmp_path / w), skip_done=True, jobs=1) for w in ('w', 'w2'))

    def opt(driver: Driver, weight: float = 1.0) -> dict:  # the work folder enters like MTKD's aggregator path
        return {'aggregator': {'pretrain': f'{driver.work}/experiments/mtkd1_s0/models/net_g_latest.pth'},
                'cache': driver.work, 'other': str(tmp_path / 'w_not_it' / 'x'), 'train': {'w': weight}}
    assert (digest(here.options_text(opt(here))) == digest(there.options_text(opt(there)))
            != digest(here.options_text(opt(here, 2.0))))
    assert f'{here.work}_not_it' in here.options_text(opt(here))  # a longer sibling path stays as it is

    def store(driver: Driver, sha: str) -> None:
        with open(here.result_path('kd_s0'), 'w', encoding='utf-8') as f:
            json.dump({'options': f'{driver.work}/options/kd_s0.yml', 'options_sha256': sha}, f)
    store(there, digest(there.options_text(opt(there))))  # a digest naming <work>
    assert here.done('kd_s0', here.options_text(opt(here))) is not None
    legacy = hashlib.sha256(json.dumps(opt(there), sort_keys=True).encode()).hexdigest()
    store(there, legacy)  # written before digests named <work>: the absolute folder it ran in
    assert here.done('kd_s0', here.options_text(opt(here))) is not None
    assert here.done('kd_s0', here.options_text(opt(here, 2.0))) is None
    store(here, legacy)  # the same digest said to come from this folder: other options
    assert here.done('kd_s0', here.options_text(opt(here))) is None


# --------------------------------------------------------------------------------------- MTKD aggregator
def test_stage_two_without_any_aggregator_checkpoint_is_a_clear_error(tmp_path):
    from photo_bench.config import load_benchmark
    from photo_bench.runner import Driver

    data = make_photo_set(str(tmp_path))
    bm = load_benchmark(make_config(str(tmp_path), data, n_teachers=2, methods=('scratch', 'mtkd')))
    driver = Driver(bm, str(tmp_path / 'out'), str(tmp_path / 'work'), skip_done=True, jobs=1)
    with pytest.raises(FileNotFoundError, match='delete .*mtkd1_s0.json to retrain it'):
        driver.restore_aggregator()
    kept = driver.kept_aggregator()
    os.makedirs(osp.dirname(kept))
    with open(kept, 'wb') as f:
        f.write(b'weights')
    driver.restore_aggregator()
    with open(driver.ckpt('mtkd1_s0'), 'rb') as f:
        assert f.read() == b'weights'


def test_a_seed_subset_reuses_the_aggregator_of_the_configs_first_seed(tmp_path):
    import photo_benchmark
    from photo_bench.config import load_benchmark
    from photo_bench.runner import Driver

    data = make_photo_set(str(tmp_path))
    bm = load_benchmark(make_config(str(tmp_path), data, n_teachers=2, methods=('scratch', 'mtkd')))
    assert bm.seeds[0] == 0
    bm.seeds = [1]  # --seeds 1: completing one seed must not train a second aggregator (mtkd1_s1)
    runs, _ = photo_benchmark.plan(bm, ['mtkd'])
    assert [(r.name, r.seed, r.needs) for r in runs] == [('mtkd1_s0', 0, []), ('mtkd_s1', 1, ['mtkd1_s0'])]
    driver = Driver(bm, str(tmp_path / 'out'), str(tmp_path / 'work'), skip_done=True, jobs=1)
    assert driver.aggregator_name() == 'mtkd1_s0'
    assert driver.options(runs[1], None)['aggregator']['pretrain'] == driver.ckpt('mtkd1_s0')


@pytest.mark.slow
@pytest.mark.subprocess
def test_mtkd_stage_two_resumes_from_the_kept_aggregator_after_a_lost_work_folder(tmp_path):
    import shutil

    data = make_photo_set(str(tmp_path))
    cfg = make_config(str(tmp_path), data, n_teachers=2, methods=('scratch', 'mtkd'))
    out = tmp_path / 'out'
    run_bench('--config', cfg, '--out', str(out), '--skip-done', cwd=str(tmp_path))
    assert (out / 'aggregator' / 'mtkd1_s0.pth').is_file()
    shutil.rmtree(out / 'work' / 'experiments')
    (out / 'work' / 'results' / 'mtkd_s1.json').unlink()
    proc = run_bench('--config', cfg, '--out', str(out), '--skip-done', cwd=str(tmp_path))
    assert 'mtkd1_s0: done, kept' in proc.stdout and 'mtkd_s1: training' in proc.stdout
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['trained_this_call'] == ['mtkd_s1'] and summary['rows']['mtkd']['seeds'] == [0, 1]


# --------------------------------------------------------------------------------------- data-limited subset
def test_train_subset_keeps_the_first_photos_and_links_val_and_test(tmp_path):
    sys.path.insert(0, osp.join(BENCH, 'photo'))
    import lmdb
    from train_subset import make_subset

    data = make_photo_set(str(tmp_path))
    out = str(tmp_path / 'subset')
    with pytest.raises(ValueError, match='--photos must be in 1..1'):
        make_subset(data, out, 2)
    rec = make_subset(data, out, 1)
    assert rec['photos'] == ['astronaut'] and rec['sub_images'] == rec['of_sub_images'] == 16
    for name in ('DIV2K_train_HR_sub.lmdb', 'DIV2K_train_LR_bicubic_X4_sub.lmdb'):
        with lmdb.open(osp.join(out, 'train', name), readonly=True, lock=False) as env:
            assert env.stat()['entries'] == 16
    assert osp.realpath(osp.join(out, 'test')) == osp.realpath(osp.join(data, 'test'))
    with pytest.raises(FileExistsError, match='pass --overwrite'):
        make_subset(data, out, 1)
    with pytest.raises(ValueError, match='must differ'):
        make_subset(data, data, 1)
