"""MTKD models: stage 1 / stage 2 training runs, teacher-order checks, public checkpoints, DDP, shipped YAMLs.

Target caches: ``tests/core/test_cached_target_dataset.py`` (dataset, logits KD) and
``tests/tools/test_cache_teacher_outputs.py`` (the cache tool, MTKD training from caches).
"""
import glob
import os.path as osp

import pytest
import torch
from basicsr.archs import build_network

from kdsr_plugins.core.checkpoints import CheckpointError
from kdsr_plugins.methods.mtkd.aggregator import TeacherOrderError
from kdsr_plugins.methods.mtkd.mtkd_loss import KDWaveletLoss
from kdsr_testutils import (
    MTKD_SCALE,
    ROOT,
    build_model_from_opt,
    edsr,
    logged_run,
    model_file,
    mtkd_aggregator,
    mtkd_stage1_opt,
    mtkd_stage2_opt,
    run_ddp_check,
)


# ------------------------------------------------------------------------------------ stage 1 / 2 runs
@pytest.mark.slow
def test_stage1_run_saves_kd_meta_and_validates_with_teachers(mtkd_stage1):
    ckpt = torch.load(mtkd_stage1['ckpt'], weights_only=True)
    assert set(ckpt) == {'params', 'params_ema', 'kd_meta'}
    assert ckpt['kd_meta'] == {'teacher_order': ['edsr', 'swinir'], 'teacher_types': ['EDSR', 'SwinIR'],
                               'num_teachers': 2, 'scale': 4, 'output_convention': 'image', 'mask_mode': 'reference'}
    log = mtkd_stage1['log']
    assert 'l_pix:' in log and 'l_kd' not in log
    assert '# psnr:' in log  # validation ran: LR -> both teachers (SwinIR padded) -> aggregator


@pytest.mark.slow
def test_stage2_run_loads_stage1_checkpoint(mtkd_stage1, workdir, demo_data, mtkd_ckpts):
    opt = mtkd_stage2_opt('mtkd_s2', demo_data, mtkd_ckpts, mtkd_stage1['ckpt'], total_iter=2, val_freq=2)
    log = logged_run(opt, workdir)
    assert 'l_kd:' in log and 'l_pix:' in log and '# psnr:' in log
    assert "teacher order ['edsr', 'swinir']" in log
    assert set(torch.load(model_file(workdir, 'mtkd_s2', 'net_g', 'latest'))) == {'params', 'params_ema'}


@pytest.mark.slow
def test_stage2_step_frozen_target_and_loss_values(mtkd_stage1, tmp_path, demo_data, mtkd_ckpts):
    opt = mtkd_stage2_opt('s2_step', demo_data, mtkd_ckpts, mtkd_stage1['ckpt'])
    model = build_model_from_opt(opt, tmp_path)
    agg = model.aggregator
    frozen = {k: v.clone() for k, v in agg.state_dict().items()}
    assert not agg.training and all(not p.requires_grad for p in agg.parameters())
    assert all(p is not q for p in agg.parameters() for q in model.net_g.parameters())
    g = torch.Generator().manual_seed(0)
    batch = {'lq': torch.rand(2, 3, 12, 12, generator=g), 'gt': torch.rand(2, 3, 48, 48, generator=g)}
    model.feed_data(batch)
    # hand-made target: teachers (SwinIR padded to its window 4 is a no-op at 12) -> params_ema aggregator
    ref = build_network(mtkd_aggregator()).eval()
    ref.load_state_dict(torch.load(mtkd_stage1['ckpt'])['params_ema'])
    with torch.no_grad():
        t_out = [model.teachers[n](batch['lq']) for n in ('edsr', 'swinir')]
        target = ref(torch.cat(t_out, 1))
        losses = model.compute_losses(1)
        out = model.net_g(batch['lq'])
    assert list(losses) == ['l_pix', 'l_kd']
    assert losses['l_kd'].item() == pytest.approx(KDWaveletLoss(levels=1)(out, target).item(), rel=1e-5)
    assert losses['l_pix'].item() == pytest.approx(0.1 * (out - batch['gt']).abs().mean().item(), rel=1e-5)
    for it in (1, 2):
        agg.train()  # a stray .train() must not survive into the step
        model.optimize_parameters(it)
        assert not agg.training
    assert all(p.grad is None for p in agg.parameters())
    assert all(p.grad is None for t in model.teachers.values() for p in t.parameters())
    assert all(torch.equal(v, frozen[k]) for k, v in agg.state_dict().items())


def test_default_stage2_losses_and_fixed_teacher_weights(tmp_path, demo_data, mtkd_ckpts):
    opt = mtkd_stage2_opt('fixed', demo_data, mtkd_ckpts, None)
    opt['aggregator'] = None
    del opt['train']['kd_opt'], opt['train']['pixel_opt']  # defaults: KDWaveletLoss 1.0 (levels 1), L1 0.1
    opt['train']['fixed_teacher_weights'] = [0.3, 0.7]
    model = build_model_from_opt(opt, tmp_path)
    assert isinstance(model.cri_kd, KDWaveletLoss) and model.cri_kd.levels == 1
    assert model.cri_pix.loss_weight == pytest.approx(0.1)
    g = torch.Generator().manual_seed(1)
    model.feed_data({'lq': torch.rand(2, 3, 8, 8, generator=g), 'gt': torch.rand(2, 3, 32, 32, generator=g)})
    losses = model.compute_losses(1)
    assert list(losses) == ['l_pix', 'l_kd_edsr', 'l_kd_swinir']
    with torch.no_grad():
        out = model.net_g(model.lq)
        t_sw = model.teachers['swinir'](model.lq)
    assert losses['l_kd_swinir'].item() == pytest.approx(0.7 * KDWaveletLoss()(out, t_sw).item(), rel=1e-5)
    model.optimize_parameters(1)
    bad = dict(opt, train=dict(opt['train'], fixed_teacher_weights=[1.0]))
    with pytest.raises(ValueError, match='1 weights for 2 teachers'):
        build_model_from_opt(bad, tmp_path)


# ------------------------------------------------------------------------------------ teacher order
def test_teacher_order_mismatch_is_a_clear_error(mtkd_stage1, tmp_path, demo_data, mtkd_ckpts):
    opt = mtkd_stage2_opt('order', demo_data, mtkd_ckpts, mtkd_stage1['ckpt'], order=('swinir', 'edsr'))
    with pytest.raises(TeacherOrderError, match=r"order \['edsr', 'swinir'\].*teachers list is \['swinir', 'edsr'\]"):
        build_model_from_opt(opt, tmp_path)
    opt['aggregator']['teacher_order_check'] = 'warn'
    model = build_model_from_opt(opt, tmp_path)  # proceeds, with a warning
    assert list(model.teachers) == ['swinir', 'edsr']
    # same names, other archs under them
    opt = mtkd_stage2_opt('types', demo_data, mtkd_ckpts, mtkd_stage1['ckpt'])
    opt['teachers'][1] = {'name': 'swinir', 'network': edsr(8, 1, MTKD_SCALE), 'pretrain': mtkd_ckpts['edsr']}
    with pytest.raises(TeacherOrderError, match=r"archs \['EDSR', 'SwinIR'\]"):
        build_model_from_opt(opt, tmp_path)
    # declared order contradicting kd_meta
    opt = mtkd_stage2_opt('decl', demo_data, mtkd_ckpts, mtkd_stage1['ckpt'])
    opt['aggregator']['teacher_order'] = ['swinir', 'edsr']
    with pytest.raises(TeacherOrderError, match='contradicts'):
        build_model_from_opt(opt, tmp_path)
    # output convention differing from kd_meta
    opt = mtkd_stage2_opt('conv', demo_data, mtkd_ckpts, mtkd_stage1['ckpt'])
    opt['aggregator']['network'] = mtkd_aggregator(output_convention='mean255')
    with pytest.raises(ValueError, match="output_convention = 'image'"):
        build_model_from_opt(opt, tmp_path)


def test_stage1_test_mode_checks_order_of_loaded_aggregator(mtkd_stage1, tmp_path, demo_data, mtkd_ckpts):
    opt = mtkd_stage1_opt('s1_test', demo_data, mtkd_ckpts, order=('swinir', 'edsr'))
    opt['path']['pretrain_network_g'] = mtkd_stage1['ckpt']
    opt['path']['param_key_g'] = 'params_ema'
    with pytest.raises(TeacherOrderError, match='Teacher order mismatch'):
        build_model_from_opt(opt, tmp_path, is_train=False)
    opt = mtkd_stage1_opt('s1_test', demo_data, mtkd_ckpts)
    opt['path'].update(pretrain_network_g=mtkd_stage1['ckpt'], param_key_g='params_ema')
    model = build_model_from_opt(opt, tmp_path, is_train=False)
    assert list(model.teachers) == ['edsr', 'swinir']
    model.feed_data({'lq': torch.rand(1, 3, 10, 13), 'gt': torch.rand(1, 3, 40, 52)})
    model.test()  # 10 x 13: SwinIR teacher padded to 12 x 16 and cropped; aggregator pads itself
    assert model.output.shape == (1, 3, 40, 52)


# ------------------------------------------------------------------------------------ public checkpoints
@pytest.mark.slow
def test_public_mtkd_checkpoint_loads(tmp_path, demo_data, mtkd_ckpts):
    torch.manual_seed(3)
    ref = build_network(mtkd_aggregator(depths=[2], output_convention='mean255')).eval()
    public = {f'module.{k}': v for k, v in ref.state_dict().items()}
    public['module.layers.0.residual_group.blocks.1.attn_mask'] = torch.zeros(4, 16, 16)
    path = str(tmp_path / 'DCTSwin_public.pth')
    torch.save({'params': public}, path)  # the public code saves BasicSR layout, no kd_meta, no params_ema
    block = {'network': mtkd_aggregator(depths=[2]), 'pretrain': path, 'format': 'public_mtkd',
             'teacher_order': ['edsr', 'swinir']}
    model = build_model_from_opt(mtkd_stage2_opt('pub', demo_data, mtkd_ckpts, None, aggregator=block), tmp_path)
    assert model.aggregator.output_convention == 'mean255'
    x = torch.rand(1, 6, 20, 24)
    with torch.no_grad():
        assert torch.allclose(model.aggregator(x), ref(x), atol=1e-6)
    with pytest.raises(TeacherOrderError, match='teacher_order'):
        build_model_from_opt(mtkd_stage2_opt('pub', demo_data, mtkd_ckpts, None,
                                             aggregator=dict(block, teacher_order=None)),
                             tmp_path)
    with pytest.raises(ValueError, match='mean255'):
        bad = dict(block, network=mtkd_aggregator(depths=[2], output_convention='image'))
        build_model_from_opt(mtkd_stage2_opt('pub', demo_data, mtkd_ckpts, None, aggregator=bad), tmp_path)
    with pytest.raises(CheckpointError, match='format: public_mtkd'):
        build_model_from_opt(mtkd_stage2_opt('pub', demo_data, mtkd_ckpts, None,
                                             aggregator=dict(block, format='basicsr')),
                             tmp_path)


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.ddp
def test_stage2_ddp_two_process_cpu(mtkd_stage1, workdir, demo_data, mtkd_ckpts):
    opt = mtkd_stage2_opt('mtkd_ddp', demo_data, mtkd_ckpts, mtkd_stage1['ckpt'], total_iter=2, save_freq=100)
    result = run_ddp_check(opt, workdir)
    assert result['checksums'][0] == result['checksums'][1]  # identical students on both ranks
    assert 'l_kd' in result['log'] and 'l_pix' in result['log']


# ------------------------------------------------------------------------------------ shipped YAMLs
def test_shipped_mtkd_options_are_consistent():
    import yaml
    from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, MODEL_REGISTRY

    from kdsr_plugins.core.options import check_option_keys
    from kdsr_plugins.core.teachers import parse_teacher_specs
    from kdsr_plugins.methods.mtkd.aggregator import AGGREGATOR_KEYS

    root = ROOT
    train = sorted(glob.glob(osp.join(root, 'options', 'train', 'MTKD', '*.yml')))
    assert len(train) >= 12
    for path in train + sorted(glob.glob(osp.join(root, 'options', 'test', 'MTKD', '*.yml'))):
        opt = yaml.safe_load(open(path))
        assert opt['model_type'] in MODEL_REGISTRY and opt['network_g']['type'] in ARCH_REGISTRY, path
        for ds in opt['datasets'].values():
            assert ds['type'] in DATASET_REGISTRY, path
        if 'teachers' in opt and '_auto_' in osp.basename(path):  # spandrel teachers (docs/auto_teachers.md)
            assert [s.network_opt['type'] for s in parse_teacher_specs(opt)] == ['auto'] * 3, path
        elif 'teachers' in opt:
            assert [s.name for s in parse_teacher_specs(opt)] == ['edsr', 'swinir', 'rcan'], path
            assert opt['teachers'][1]['network']['img_size'] == 64, path  # SwinIR-M DF2K s64w8
        if 'aggregator' in opt:
            check_option_keys(opt['aggregator'], AGGREGATOR_KEYS, 'aggregator')
            assert opt['train']['kd_opt'] == {'type': 'KDWaveletLoss', 'loss_weight': 1.0, 'levels': 1}, path
            assert opt['train']['pixel_opt']['loss_weight'] == 0.1, path
            assert opt['datasets']['train']['gt_size'] == 32 * opt['scale'], path  # LR patch 32
