"""Stage runners (kd_core.md §5): head / stages / tail reproduce ``net(x)`` exactly."""
import kdsr_plugins  # noqa: F401  (shims + basicsr; must come first)

import pytest
import torch
from basicsr.archs.srresnet_arch import MSRResNet
from torch import nn

from kdsr_plugins.core.stage_runners import (
    EDSRStageRunner,
    RCANStageRunner,
    StageContext,
    SwinIRStageRunner,
    build_stage_runner,
    feature_channels,
    num_units,
    unit_module_path,
)
from kdsr_testutils import edsr, rcan, swinir, tiny_net

TOL = 1e-6


pytestmark = pytest.mark.usefixtures('single_thread')


def _edsr(scale=2, num_feat=8, num_block=4):
    return tiny_net(edsr(num_feat, num_block, scale), seed=None)


def _rcan(scale=3, num_feat=16, num_group=3):
    return tiny_net(rcan(num_feat, num_group, 2, scale), seed=None)


def _swinir(upsampler='pixelshuffle', scale=2, embed_dim=12, depths=(2, 2, 2), **kw):
    return tiny_net(swinir(scale, embed_dim, depths, upsampler=upsampler, **kw), seed=None)


def _make(name):
    torch.manual_seed(0)
    net = {
        'edsr_x2': lambda: _edsr(2),
        'edsr_x3': lambda: _edsr(3),
        'rcan_x3': lambda: _rcan(3),
        'rcan_x4': lambda: _rcan(4),
        'swinir_ps_x2': lambda: _swinir('pixelshuffle', 2),
        'swinir_ps_x3': lambda: _swinir('pixelshuffle', 3),
        'swinir_psd_x2': lambda: _swinir('pixelshuffledirect', 2),
        'swinir_psd_x4': lambda: _swinir('pixelshuffledirect', 4),
        # variants: absolute pos-embed, no patch norm, 3conv residual connections
        'swinir_ps_ape': lambda: _swinir('pixelshuffle', 2, ape=True),
        'swinir_psd_nonorm_3conv': lambda: _swinir('pixelshuffledirect', 2, patch_norm=False,
                                                   resi_connection='3conv'),
    }[name]()
    _perturb(net)
    return net.eval()


def _perturb(net):
    """Make LayerNorm affine params / biases non-trivial so that every path matters."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.add_(0.1 * torch.randn_like(m.weight))
                m.bias.add_(0.1 * torch.randn_like(m.bias))


ARCHS = ['edsr_x2', 'edsr_x3', 'rcan_x3', 'rcan_x4', 'swinir_ps_x2', 'swinir_ps_x3',
         'swinir_psd_x2', 'swinir_psd_x4', 'swinir_ps_ape', 'swinir_psd_nonorm_3conv']

# boundary sets for nets with 4 units (EDSR) or 3 units (RCAN, SwinIR)
BOUNDS_4 = [[], [0], [3], [1, 3], [0, 2], [0, 1, 2, 3], [2], [0, 3]]
BOUNDS_3 = [[], [0], [2], [0, 2], [1], [0, 1], [0, 1, 2], [1, 2]]


def _bounds(name):
    return BOUNDS_4 if name.startswith('edsr') else BOUNDS_3


def _input(name, b=2, h=16, w=12):
    if name.endswith('ape'):  # absolute pos-embed fixes the size to img_size
        h = w = 16
    torch.manual_seed(1)
    return torch.rand(b, 3, h, w)


def _max_diff(a, b):
    return (a - b).abs().max().item()


@pytest.mark.parametrize('name', ARCHS)
def test_invariant_tail_of_stages_equals_forward(name):
    net = _make(name)
    x = _input(name)
    with torch.no_grad():
        ref = net(x)
        for bounds in _bounds(name):
            runner = build_stage_runner(net, bounds)
            ctx = runner.head(x)
            f = ctx.f0
            for k in range(1, runner.num_stages + 1):
                f = runner.stage(k, f, ctx)
            y = runner.tail(f, ctx, h0=ctx.h0)
            assert y.shape == ref.shape
            assert _max_diff(y, ref) <= TOL, (name, bounds)
            # run_all gives the same output and K features
            y2, feats, ctx2 = runner.run_all(x)
            assert len(feats) == len(bounds)
            assert _max_diff(y2, ref) <= TOL
            assert isinstance(ctx2, StageContext)


@pytest.mark.parametrize('name', ['edsr_x2', 'rcan_x3', 'swinir_ps_x2', 'swinir_psd_x2'])
def test_square_input_at_img_size(name):
    # SwinIR: x_size == input_resolution takes the precomputed-mask branch
    net = _make(name)
    x = _input(name, h=16, w=16)
    with torch.no_grad():
        y, _, _ = build_stage_runner(net, [0, 1]).run_all(x)
        assert _max_diff(y, net(x)) <= TOL


@pytest.mark.parametrize('name', ['edsr_x2', 'rcan_x4', 'swinir_ps_x3', 'swinir_psd_x2'])
def test_boundary_features_match_unit_outputs(name):
    """f_k equals the output of module `unit_module_path(net, b_k)` in net(x)."""
    net = _make(name)
    x = _input(name)
    bounds = [0, 2]
    runner = build_stage_runner(net, bounds)
    captured = {}
    modules = dict(net.named_modules())
    handles = [modules[unit_module_path(net, b)].register_forward_hook(
        lambda m, i, o, b=b: captured.__setitem__(b, o.clone())) for b in bounds]
    with torch.no_grad():
        net(x)
        _, feats, ctx = runner.run_all(x)
    for h in handles:
        h.remove()
    for b, f in zip(bounds, feats):
        assert _max_diff(f, captured[b]) <= TOL
    assert tuple(runner.to_map(feats[0], ctx).shape) == (2, feature_channels(net), 16, 12)


@pytest.mark.parametrize('name', ['edsr_x3', 'rcan_x3', 'swinir_ps_x2', 'swinir_psd_x4'])
def test_forward_from_equivalence(name):
    net = _make(name)
    x = _input(name)
    bounds = [0, 1] if not name.startswith('edsr') else [0, 2]
    runner = build_stage_runner(net, bounds)
    with torch.no_grad():
        ref = net(x)
        y, feats, ctx = runner.run_all(x)
        starts = [ctx.f0] + feats
        for k, f in enumerate(starts):
            assert _max_diff(runner.forward_from(k, f, ctx), ref) <= TOL, k
            assert _max_diff(runner.forward_from(k, f, ctx, h0=ctx.h0), ref) <= TOL, k


@pytest.mark.parametrize('name', ['edsr_x2', 'rcan_x3', 'swinir_ps_x2', 'swinir_psd_x2'])
def test_to_map_to_tokens_round_trip(name):
    net = _make(name)
    x = _input(name)
    runner = build_stage_runner(net, [0, 1])
    with torch.no_grad():
        ref = net(x)
        _, feats, ctx = runner.run_all(x)
        for f in [ctx.f0] + feats:
            m = runner.to_map(f, ctx)
            assert m.dim() == 4 and tuple(m.shape[2:]) == ctx.x_size
            assert m.shape[1] == feature_channels(net)
            assert torch.equal(runner.to_tokens(m, ctx), f)
        # a converted-and-back feature continues the forward exactly
        f1 = runner.to_tokens(runner.to_map(feats[0], ctx), ctx)
        assert _max_diff(runner.forward_from(1, f1, ctx), ref) <= TOL
    if name.startswith('swinir'):
        b, hw, c = feats[0].shape
        h, w = ctx.x_size
        assert hw == h * w and c == feature_channels(net)
        m = runner.to_map(feats[0], ctx)
        # spec form: t.transpose(1, 2).reshape(B, C, H, W), token index = row * W + col
        assert torch.equal(m[:, :, 1, 2], feats[0][:, 1 * w + 2, :])
    else:
        assert runner.to_map(feats[0], ctx) is feats[0]


@pytest.mark.parametrize('name', ['edsr_x2', 'rcan_x3', 'swinir_ps_x2', 'swinir_psd_x2'])
def test_no_in_place_on_h0_or_returned_tensors(name):
    net = _make(name)
    x = _input(name)
    for bounds in ([], [0], [0, 2]):
        runner = build_stage_runner(net, bounds)
        with torch.no_grad():
            ctx = runner.head(x)
            h0_ref = ctx.h0.clone()
            f0_ref = ctx.f0.clone()
            feats = []
            f = ctx.f0
            for k in range(1, runner.num_stages + 1):
                f = runner.stage(k, f, ctx)
                feats.append(f)
            feats_ref = [t.clone() for t in feats]
            y1 = runner.tail(f, ctx)
            y1_ref = y1.clone()
            # the same h0 / features feed a second tail and a forward_from
            y2 = runner.tail(f, ctx, h0=ctx.h0)
            runner.forward_from(0, ctx.f0, ctx)
        assert torch.equal(ctx.h0, h0_ref)
        assert torch.equal(ctx.f0, f0_ref)
        for t, t_ref in zip(feats, feats_ref):
            assert torch.equal(t, t_ref)
        assert torch.equal(y1, y1_ref)
        assert torch.equal(y1, y2)


@pytest.mark.parametrize('name', ['edsr_x2', 'rcan_x3', 'swinir_ps_x2', 'swinir_psd_x2'])
def test_gradient_through_frozen_tail(name):
    net = _make(name)
    for p in net.parameters():
        p.requires_grad_(False)
    x = _input(name)
    runner = build_stage_runner(net, [0, 1])
    with torch.no_grad():
        _, feats, ctx = runner.run_all(x)
    # feature from boundary 1 (continues through stage 2 + tail) and boundary 2 (tail only)
    for k in (1, 2):
        f = feats[k - 1].clone().requires_grad_(True)
        h0 = ctx.h0.clone().requires_grad_(True)
        y = runner.forward_from(k, f, ctx, h0=h0)
        assert y.requires_grad
        y.abs().mean().backward()
        assert f.grad is not None and f.grad.abs().sum() > 0
        assert h0.grad is not None and h0.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())


def test_gradient_reaches_params_when_trainable():
    net = _make('swinir_ps_x2')
    runner = build_stage_runner(net, [1])
    y, _, _ = runner.run_all(_input('swinir_ps_x2'))
    y.mean().backward()
    assert net.conv_first.weight.grad is not None
    assert net.layers[0].residual_group.blocks[0].attn.qkv.weight.grad is not None


@pytest.mark.parametrize('pair', [('edsr_x2', lambda: _edsr(2, num_feat=8, num_block=6)),
                                  ('rcan_x3', lambda: _rcan(3, num_feat=16, num_group=4)),
                                  ('swinir_ps_x2', lambda: _swinir('pixelshuffle', 2,
                                                                   depths=(2, 2, 2, 2))),
                                  ('swinir_psd_x2', lambda: _swinir('pixelshuffledirect', 2,
                                                                    depths=(2, 2)))])
def test_mixing_tail_of_other_network(pair):
    """A feature of network A continues in network B with B's own h0 (equal widths)."""
    name_a, make_b = pair
    net_a = _make(name_a)
    torch.manual_seed(123)
    net_b = make_b().eval()
    assert feature_channels(net_a) == feature_channels(net_b)
    x = _input(name_a)
    runner_a = build_stage_runner(net_a, [0, 1])
    n_b = num_units(net_b)
    runner_b = build_stage_runner(net_b, [n_b // 2 - 1, n_b - 1] if n_b > 2 else [0, 1])
    with torch.no_grad():
        ref_b = net_b(x)
        y_a, feats_a, ctx_a = runner_a.run_all(x)
        ctx_b = runner_b.head(x)
        # sanity: B's own features through B reproduce B
        _, feats_b, _ = runner_b.run_all(x)
        assert _max_diff(runner_b.forward_from(1, feats_b[0], ctx_b, h0=ctx_b.h0), ref_b) <= TOL
        for k in (1, 2):
            y_mix = runner_b.forward_from(k, feats_a[k - 1], ctx_b, h0=ctx_b.h0)
            assert y_mix.shape == ref_b.shape and torch.isfinite(y_mix).all()
            # ctx of A works as well as long as h0 is B's (same x_size)
            y_mix2 = runner_b.forward_from(k, feats_a[k - 1], ctx_a, h0=ctx_b.h0)
            assert _max_diff(y_mix, y_mix2) <= TOL
        y_tail = runner_b.tail(feats_a[1], ctx_b, h0=ctx_b.h0)
        assert y_tail.shape == ref_b.shape
        # A's tail with B's h0 differs from A's output (h0 really is used)
        assert _max_diff(runner_a.tail(feats_a[1], ctx_a, h0=ctx_b.h0), y_a) > 1e-4


def test_mixing_gradient_into_mixer_through_frozen_teacher():
    """MiPKD teacher route: frozen teacher stages + tail on a trainable mixer output."""
    teacher = _make('edsr_x2')
    for p in teacher.parameters():
        p.requires_grad_(False)
    student = _edsr(2, num_feat=8, num_block=2)
    mixer = nn.Conv2d(8, 8, 3, 1, 1)
    x = _input('edsr_x2')
    rt = build_stage_runner(teacher, [1, 3])
    rs = build_stage_runner(student, [0, 1])
    with torch.no_grad():
        _, _, ctx_t = rt.run_all(x)
    _, feats_s, _ = rs.run_all(x)
    u = mixer(feats_s[0])
    y = rt.forward_from(1, u, ctx_t, h0=ctx_t.h0)
    y.abs().mean().backward()
    assert mixer.weight.grad is not None and mixer.weight.grad.abs().sum() > 0
    assert student.body[0].conv1.weight.grad is not None
    assert all(p.grad is None for p in teacher.parameters())


def test_helpers_and_stage_ranges():
    edsr, rcan, swin = _make('edsr_x2'), _make('rcan_x3'), _make('swinir_ps_x2')
    assert (num_units(edsr), num_units(rcan), num_units(swin)) == (4, 3, 3)
    assert unit_module_path(edsr, 3) == 'body.3'
    assert unit_module_path(rcan, 0) == 'body.0'
    assert unit_module_path(swin, 2) == 'layers.2'
    for net in (edsr, rcan, swin):
        names = dict(net.named_modules())
        assert all(unit_module_path(net, i) in names for i in range(num_units(net)))
    assert (feature_channels(edsr), feature_channels(rcan), feature_channels(swin)) == (8, 16, 12)
    with pytest.raises(ValueError, match='0..3'):
        unit_module_path(edsr, 4)
    with pytest.raises(ValueError):
        unit_module_path(edsr, -1)

    assert isinstance(build_stage_runner(edsr, [1]), EDSRStageRunner)
    assert isinstance(build_stage_runner(rcan, [1]), RCANStageRunner)
    assert isinstance(build_stage_runner(swin, [1]), SwinIRStageRunner)

    r = build_stage_runner(edsr, [0, 2])
    assert r.num_stages == 2
    assert list(r.stage_units(1)) == [0] and list(r.stage_units(2)) == [1, 2]
    assert list(r.tail_units) == [3]
    assert list(build_stage_runner(edsr, []).tail_units) == [0, 1, 2, 3]
    assert list(build_stage_runner(edsr, [3]).tail_units) == []
    assert 'EDSR' in repr(r)
    # tuple and numpy-int boundaries are accepted
    np = pytest.importorskip('numpy')
    assert build_stage_runner(edsr, (np.int64(1), 2)).boundaries == (1, 2)


def test_ddp_like_wrapper_is_unwrapped():
    net = _make('edsr_x2')
    wrapped = nn.DataParallel(net)
    r = build_stage_runner(wrapped, [1])
    assert r.net is net
    assert num_units(wrapped) == 4


@pytest.mark.parametrize('bounds, exc, msg', [
    ([2, 1], ValueError, 'strictly increasing'),
    ([1, 1], ValueError, 'strictly increasing'),
    ([4], ValueError, 'out of range'),
    ([0, 5], ValueError, 'out of range'),
    ([-1], ValueError, 'out of range'),
    ([1.5], TypeError, 'ints'),
    ([True], TypeError, 'ints'),
    (['1'], TypeError, 'ints'),
    (3, TypeError, 'sequence'),
])
def test_invalid_boundaries(bounds, exc, msg):
    with pytest.raises(exc, match=msg):
        build_stage_runner(_make('edsr_x2'), bounds)


def test_invalid_stage_and_forward_from_indices():
    net = _make('edsr_x2')
    r = build_stage_runner(net, [0, 2])
    x = _input('edsr_x2')
    ctx = r.head(x)
    with pytest.raises(ValueError, match='1..2'):
        r.stage(0, ctx.f0, ctx)
    with pytest.raises(ValueError, match='1..2'):
        r.stage(3, ctx.f0, ctx)
    with pytest.raises(ValueError, match='0..2'):
        r.forward_from(3, ctx.f0, ctx)
    with pytest.raises(ValueError, match='0..2'):
        r.forward_from(-1, ctx.f0, ctx)


def test_unsupported_arch():
    with pytest.raises(TypeError, match='MSRResNet.*EDSR, RCAN, SwinIR'):
        build_stage_runner(MSRResNet(num_feat=8, num_block=2), [0])
    with pytest.raises(TypeError, match='EDSR, RCAN, SwinIR'):
        num_units(nn.Conv2d(3, 3, 3))


@pytest.mark.parametrize('upsampler', ['', 'nearest+conv'])
def test_unsupported_upsampler(upsampler):
    net = _swinir(upsampler, 4, depths=(2,))
    with pytest.raises(NotImplementedError, match="pixelshuffle.*pixelshuffledirect"):
        build_stage_runner(net, [0])


def test_swinir_input_not_multiple_of_window():
    net = _make('swinir_ps_x2')
    r = build_stage_runner(net, [0])
    with pytest.raises(ValueError, match='multiple of window_size 4'):
        r.head(torch.rand(1, 3, 16, 10))
    with pytest.raises(ValueError, match='ape=True'):
        build_stage_runner(_make('swinir_ps_ape'), [0]).head(torch.rand(1, 3, 16, 12))


def test_wrong_feature_form_raises():
    swin = build_stage_runner(_make('swinir_ps_x2'), [0, 1])
    x = _input('swinir_ps_x2')
    with torch.no_grad():
        ctx = swin.head(x)
        with pytest.raises(ValueError, match='to_tokens'):
            swin.stage(1, ctx.h0, ctx)  # a map instead of tokens
        with pytest.raises(ValueError, match='to_tokens'):
            swin.tail(ctx.h0, ctx)
        with pytest.raises(ValueError, match='map'):
            swin.to_tokens(ctx.f0, ctx)
    edsr = build_stage_runner(_make('edsr_x2'), [0])
    ctx = edsr.head(_input('edsr_x2'))
    with pytest.raises(ValueError, match='map'):
        edsr.tail(ctx.f0.flatten(2), ctx)
