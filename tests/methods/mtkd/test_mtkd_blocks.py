"""Fast tests of MTKD building blocks: DCT, Haar, distillation losses, DCTSwin aggregator."""
import copy
import math

import kdsr_plugins  # noqa: F401  (shims, basicsr, registration)

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from basicsr.archs import build_network
from basicsr.archs.swinir_arch import window_partition, window_reverse
from basicsr.utils.registry import ARCH_REGISTRY, LOSS_REGISTRY

from kdsr_plugins.methods.mtkd.dct import (
    block_dct_2d,
    block_idct_2d,
    dct_2d,
    dct_matrix,
    idct_2d,
    idct_matrix,
    pad_to_multiple,
)
from kdsr_plugins.methods.mtkd.haar import haar_dwt, haar_dwt2d, haar_idwt, haar_idwt2d
from kdsr_plugins.methods.mtkd.mtkd_dctswin_arch import RGB_MEAN, DCTSwinBlock, MTKDDCTSwin
from kdsr_plugins.methods.mtkd.mtkd_loss import KDDCTLoss, KDFFTLoss, KDWaveletLoss
from kdsr_plugins.methods.mtkd.public_checkpoint import convert_public_mtkd_aggregator
from kdsr_testutils import aggregator, tiny_net


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _rand(*shape, seed=0, dtype=torch.float64):
    return torch.rand(*shape, generator=_gen(seed), dtype=dtype)


# ------------------------------------------------------------------------------------- numpy refs
def np_dct2_block(x, ortho=False):
    """Explicit 2-D DCT-II of one n x m block with python loops."""
    n, m = x.shape
    out = np.zeros((n, m))
    for k in range(n):
        for q in range(m):
            acc = 0.0
            for i in range(n):
                for j in range(m):
                    acc += x[i, j] * math.cos(math.pi * k * (2 * i + 1) / (2 * n)) * math.cos(
                        math.pi * q * (2 * j + 1) / (2 * m))
            if ortho:
                ck = math.sqrt((1 if k == 0 else 2) / n)
                cq = math.sqrt((1 if q == 0 else 2) / m)
                out[k, q] = ck * cq * acc
            else:
                out[k, q] = 4.0 * acc
    return out


def np_haar_level(x):
    """One Haar level of a 2-D array with explicit 2x2 loops (zero pad to even first)."""
    h, w = x.shape
    x = np.pad(x, ((0, h % 2), (0, w % 2)))
    hh, ww = x.shape[0] // 2, x.shape[1] // 2
    ll = np.zeros((hh, ww))
    hi = np.zeros((3, hh, ww))
    for i in range(hh):
        for j in range(ww):
            a, b = x[2 * i, 2 * j], x[2 * i, 2 * j + 1]
            c, d = x[2 * i + 1, 2 * j], x[2 * i + 1, 2 * j + 1]
            ll[i, j] = (a + b + c + d) / 2
            hi[0, i, j] = (a - b + c - d) / 2
            hi[1, i, j] = (a + b - c - d) / 2
            hi[2, i, j] = (a - b - c + d) / 2
    return ll, hi


def np_haar(x, levels):
    """Multi-level numpy Haar of a B x C x H x W array -> (ll, [high_j])."""
    bsz, ch = x.shape[:2]
    lls = [[x[b, c] for c in range(ch)] for b in range(bsz)]
    highs = []
    for _ in range(levels):
        res = [[np_haar_level(lls[b][c]) for c in range(ch)] for b in range(bsz)]
        lls = [[res[b][c][0] for c in range(ch)] for b in range(bsz)]
        highs.append(np.array([[res[b][c][1] for c in range(ch)] for b in range(bsz)]))
    return np.array(lls), highs


# ------------------------------------------------------------------------------------- DCT
def test_dct_matrix_formula_and_inverse():
    m = dct_matrix(8).numpy()
    for k in range(8):
        for n in range(8):
            assert m[k, n] == pytest.approx(2 * math.cos(math.pi * k * (2 * n + 1) / 16), abs=1e-12)
    for norm in (None, 'ortho'):
        assert torch.allclose(idct_matrix(8, norm) @ dct_matrix(8, norm), torch.eye(8, dtype=torch.float64),
                              atol=1e-12)
    mo = dct_matrix(8, 'ortho')
    assert torch.allclose(mo @ mo.t(), torch.eye(8, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(idct_matrix(8, 'ortho'), mo.t())


@pytest.mark.parametrize('norm', [None, 'ortho'])
def test_dct_2d_one_block_against_loops(norm):
    x = _rand(8, 8, seed=1)
    ref = np_dct2_block(x.numpy(), ortho=norm == 'ortho')
    got = dct_2d(x.view(1, 1, 8, 8), norm)[0, 0].numpy()
    np.testing.assert_allclose(got, ref, atol=1e-10)
    # float32 path to 1e-6 relative accuracy of the round trip
    x32 = x.float().view(1, 1, 8, 8)
    assert torch.allclose(idct_2d(dct_2d(x32, norm), norm), x32, atol=1e-6)
    if norm == 'ortho':  # orthonormality: Parseval
        assert float((dct_2d(x.view(1, 1, 8, 8), 'ortho')**2).sum()) == pytest.approx(float((x**2).sum()))


def test_dct_2d_round_trip_non_square():
    x = _rand(2, 3, 5, 7, seed=2)
    for norm in (None, 'ortho'):
        assert torch.allclose(idct_2d(dct_2d(x, norm), norm), x, atol=1e-12)
    # dims argument: windows laid out n x ws x ws x c
    y = _rand(4, 8, 8, 3, seed=3)
    a = dct_2d(y, dims=(1, 2))
    b = dct_2d(y.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    assert torch.allclose(a, b, atol=1e-12)


def test_block_dct_against_loops_and_padding():
    x = _rand(1, 2, 13, 17, seed=4)
    coeffs = block_dct_2d(x, 8)
    assert coeffs.shape == (1, 2, 16, 24)
    xp = pad_to_multiple(x, 8, 'reflect')
    # padding rule: reflect at bottom/right, original kept in the top-left corner
    assert torch.equal(xp[..., :13, :17], x)
    assert torch.equal(xp[..., 13:16, :17], x[..., [11, 10, 9], :])
    for bi in range(2):
        for bj in range(3):
            ref = np_dct2_block(xp[0, 1, 8 * bi:8 * bi + 8, 8 * bj:8 * bj + 8].numpy())
            np.testing.assert_allclose(coeffs[0, 1, 8 * bi:8 * bi + 8, 8 * bj:8 * bj + 8].numpy(), ref, atol=1e-10)
    back = block_idct_2d(coeffs, 8, out_size=(13, 17))
    assert torch.allclose(back, x, atol=1e-12)
    for norm in (None, 'ortho'):
        assert torch.allclose(block_idct_2d(block_dct_2d(xp, 8, norm), 8, norm), xp, atol=1e-12)
    with pytest.raises(ValueError):
        block_dct_2d(x, 8, pad_mode=None)


def test_pad_to_multiple_reflect_large_pads():
    x = _rand(1, 3, 13, 17, seed=5)
    y = pad_to_multiple(x, 32)
    assert y.shape == (1, 3, 32, 32)
    assert torch.equal(y[..., :13, :17], x)
    small = pad_to_multiple(x, (16, 24))
    assert torch.equal(small, F.pad(x, (0, 7, 0, 3), mode='reflect'))
    assert pad_to_multiple(_rand(1, 1, 1, 3), 4).shape == (1, 1, 4, 4)
    assert torch.equal(pad_to_multiple(x, (13, 17)), x)


# ------------------------------------------------------------------------------------- Haar
def test_haar_against_direct_blocks_and_energy():
    x = _rand(2, 3, 6, 8, seed=6)
    ll, high = haar_dwt2d(x)
    ref_ll, ref_high = np_haar(x.numpy(), 1)
    np.testing.assert_allclose(ll.numpy(), ref_ll, atol=1e-12)
    np.testing.assert_allclose(high.numpy(), ref_high[0], atol=1e-12)
    assert high.shape == (2, 3, 3, 3, 4)
    energy = (ll**2).sum() + (high**2).sum()
    assert float(energy) == pytest.approx(float((x**2).sum()), rel=1e-12)
    # hand-made 4x4 image: a constant 2x2 block has only LL
    img = torch.tensor([[1., 1., 1., 2.], [1., 1., 3., 4.], [0., 0., 0., 0.], [5., 5., 0., 0.]]).view(1, 1, 4, 4)
    ll, high = haar_dwt2d(img)
    assert torch.allclose(ll[0, 0], torch.tensor([[2., 5.], [5., 0.]]))
    assert torch.allclose(high[0, 0, :, 0, 0], torch.zeros(3))
    assert torch.allclose(high[0, 0, :, 0, 1], torch.tensor([-1., -2., 0.]))
    assert torch.allclose(high[0, 0, :, 1, 0], torch.tensor([0., -5., 0.]))


def test_haar_multilevel_round_trip_and_odd_sizes():
    x = _rand(2, 3, 13, 17, seed=7)
    ll, highs = haar_dwt(x, 3)
    ref_ll, ref_highs = np_haar(x.numpy(), 3)
    np.testing.assert_allclose(ll.numpy(), ref_ll, atol=1e-12)
    for got, ref in zip(highs, ref_highs):
        np.testing.assert_allclose(got.numpy(), ref, atol=1e-12)
    assert [h.shape[-2:] for h in highs] == [(7, 9), (4, 5), (2, 3)]
    # energy preserved (zero padding adds nothing)
    energy = (ll**2).sum() + sum((h**2).sum() for h in highs)
    assert float(energy) == pytest.approx(float((x**2).sum()), rel=1e-12)
    assert torch.allclose(haar_idwt(ll, highs, sizes=[(13, 17), (7, 9), (4, 5)]), x, atol=1e-12)
    rec = haar_idwt(ll, highs)  # without sizes: only the level-0 padding remains
    assert rec.shape[-2:] == (14, 18)
    assert torch.allclose(rec[..., :13, :17], x, atol=1e-12)
    assert torch.allclose(rec[..., 13, :], torch.zeros(1, dtype=x.dtype), atol=1e-12)
    y = _rand(1, 2, 16, 8, seed=8)
    ll, highs = haar_dwt(y, 2)
    assert torch.allclose(haar_idwt(ll, highs), y, atol=1e-12)
    assert torch.allclose(haar_idwt2d(*haar_dwt2d(y)), y, atol=1e-12)


# ------------------------------------------------------------------------------------- losses
def _hand_wavelet(pred, target, levels, include_ll=True, ll_sample=None):
    llp, hp = np_haar(pred.detach().numpy(), levels)
    llt, ht = np_haar(target.numpy(), levels)
    val = sum(np.abs(t - p).mean() for t, p in zip(ht, hp))
    if include_ll:
        if ll_sample is None:
            val += np.abs(llt - llp).mean()
        else:
            val += np.abs(llt[ll_sample] - llp[ll_sample]).mean()
    return val


@pytest.mark.parametrize('levels', [1, 2])
def test_wavelet_loss_hand_value(levels):
    pred = _rand(3, 3, 8, 10, seed=9).requires_grad_()
    target = _rand(3, 3, 8, 10, seed=10)
    loss = KDWaveletLoss(loss_weight=0.7, levels=levels)(pred, target)
    assert loss.dim() == 0 and loss.requires_grad
    assert float(loss.detach()) == pytest.approx(0.7 * _hand_wavelet(pred, target, levels), rel=1e-10)
    loss.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    hf = KDWaveletLoss(levels=levels, include_ll=False)(pred, target)
    assert float(hf) == pytest.approx(_hand_wavelet(pred, target, levels, include_ll=False), rel=1e-10)


def test_wavelet_loss_level1_equals_band_means_and_odd_size():
    pred, target = _rand(2, 3, 7, 9, seed=11), _rand(2, 3, 7, 9, seed=12)
    llp, hp = haar_dwt2d(pred)
    llt, ht = haar_dwt2d(target)
    expected = (llt - llp).abs().mean() + (ht - hp).abs().mean()
    assert torch.allclose(KDWaveletLoss()(pred, target), expected)
    summed = KDWaveletLoss(reduction='sum')(pred, target)
    assert torch.allclose(summed, (llt - llp).abs().sum() + (ht - hp).abs().sum())
    assert float(KDWaveletLoss()(pred, pred.clone())) == 0.0


def test_wavelet_loss_ll_batch_bug():
    pred, target = _rand(4, 3, 16, 16, seed=13), _rand(4, 3, 16, 16, seed=14)
    for levels in (1, 2, 4):
        full = KDWaveletLoss(levels=levels)(pred, target)
        bug = KDWaveletLoss(levels=levels, ll_batch_bug=True)(pred, target)
        assert float(bug) == pytest.approx(_hand_wavelet(pred, target, levels, ll_sample=levels - 1), rel=1e-10)
        assert abs(float(bug) - float(full)) > 1e-6
    # batch 1: the quirk and the fixed loss coincide for J = 1
    assert torch.allclose(
        KDWaveletLoss(ll_batch_bug=True)(pred[:1], target[:1]), KDWaveletLoss()(pred[:1], target[:1]))
    with pytest.raises(IndexError):
        KDWaveletLoss(levels=4, ll_batch_bug=True)(pred[:3], target[:3])
    with pytest.raises(ValueError):
        KDWaveletLoss(wavelet='db2')


def test_dct_and_fft_loss_values():
    pred = _rand(2, 3, 6, 5, seed=15).requires_grad_()
    target = _rand(2, 3, 6, 5, seed=16)
    # DCT: unnormalised full-image DCT-II, explicit loops
    p, t = pred.detach().numpy(), target.numpy()
    ref = np.mean([np.abs(np_dct2_block(t[b, c]) - np_dct2_block(p[b, c])).mean() for b in range(2) for c in range(3)])
    loss = KDDCTLoss(loss_weight=2.0)(pred, target)
    assert loss.dim() == 0 and loss.requires_grad
    assert float(loss.detach()) == pytest.approx(2.0 * ref, rel=1e-10)
    ref_o = np.mean([
        np.abs(np_dct2_block(t[b, c], True) - np_dct2_block(p[b, c], True)).mean() for b in range(2) for c in range(3)
    ])
    assert float(KDDCTLoss(norm='ortho')(pred, target)) == pytest.approx(ref_o, rel=1e-10)
    # FFT: mean |d real| and |d imag| over the stacked parts
    ft, fp = np.fft.fft2(t), np.fft.fft2(p)
    ref_f = np.concatenate([np.abs(ft.real - fp.real).ravel(), np.abs(ft.imag - fp.imag).ravel()]).mean()
    floss = KDFFTLoss(loss_weight=0.5)(pred, target)
    assert floss.dim() == 0 and floss.requires_grad
    assert float(floss.detach()) == pytest.approx(0.5 * ref_f, rel=1e-10)
    (loss + floss).backward()
    assert pred.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        KDFFTLoss()(pred, target[:, :, :5])


# ------------------------------------------------------------------------------------- aggregator
def _tiny_opt(num_teachers=3, upscale=4, **kw):
    return aggregator(num_teachers, upscale, depths=(2, 2), **kw)


def _tiny(**kw):
    return tiny_net(_tiny_opt(**kw), seed=0)


def test_registry_and_build_network():
    assert 'MTKDDCTSwin' in ARCH_REGISTRY
    for name in ('KDWaveletLoss', 'KDDCTLoss', 'KDFFTLoss'):
        assert name in LOSS_REGISTRY
    names = kdsr_plugins.registered_names()
    assert 'MTKDDCTSwin' in names['ARCH'] and 'KDWaveletLoss' in names['LOSS']
    net = build_network(_tiny_opt(num_teachers=2, upscale=2, output_convention='mean255', mask_mode='none'))
    assert isinstance(net, MTKDDCTSwin)
    assert (net.num_teachers, net.in_chans, net.upscale) == (2, 6, 2)
    assert (net.output_convention, net.mask_mode) == ('mean255', 'none')
    from basicsr.losses import build_loss
    assert isinstance(build_loss({'type': 'KDWaveletLoss', 'loss_weight': 1.0, 'levels': 2}), KDWaveletLoss)
    with pytest.raises(ValueError):
        MTKDDCTSwin(num_teachers=3, in_chans=6)


@pytest.mark.parametrize('num_teachers', [2, 3])
@pytest.mark.parametrize('upscale', [2, 3, 4])
def test_aggregator_shape_and_padding(num_teachers, upscale):
    net = _tiny(num_teachers=num_teachers, upscale=upscale).eval()
    x = torch.rand(2, 3 * num_teachers, 13, 17, generator=_gen(20))
    with torch.no_grad():
        y = net(x)
        assert y.shape == (2, 3, 13, 17)
        # padding: reflect at bottom/right to multiples of window*upscale, then crop
        m = 4 * upscale
        xp = pad_to_multiple(x, m)
        assert xp.shape[-2] % m == 0 and xp.shape[-1] % m == 0
        assert torch.allclose(y, net.forward_raw(xp)[..., :13, :17], atol=1e-6)
        # list input == stacked input
        teachers = list(x.split(3, dim=1))
        assert torch.allclose(net(teachers), y)
    with pytest.raises(ValueError):
        net(x[:, :3])


def test_aggregator_gradients_and_conventions():
    net = _tiny(num_teachers=3, upscale=4).train()
    x = torch.rand(2, 9, 13, 17, generator=_gen(21))
    out = net(x)
    loss = (out - torch.rand_like(out)).abs().mean()
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
    assert net.conv_first.weight.grad.abs().sum() > 0
    assert net.layers[1].residual_group.blocks[1].attn.relative_position_bias_table.grad.abs().sum() > 0
    # mean255 = image-convention output / 255 + mean, on the same weights
    net.eval()
    net255 = copy.deepcopy(net)
    net255.output_convention = 'mean255'
    with torch.no_grad():
        a, b = net(x), net255(x)
    mean = torch.tensor(RGB_MEAN).view(1, 3, 1, 1)
    assert torch.allclose(b, a / 255. + mean, atol=1e-6)
    # the DCT-label mask changes the result compared with no mask
    none = _tiny(num_teachers=3, upscale=4, mask_mode='none').eval()
    none.load_state_dict(net.state_dict())
    with torch.no_grad():
        x2 = torch.rand(1, 9, 40, 56, generator=_gen(22))
        assert not torch.allclose(none(x2), net(x2))


def test_dct_label_mask_and_no_persistent_mask():
    net = _tiny(mask_mode='dct_label')  # shifted blocks only; the default 'reference' also masks regular blocks
    sd = net.state_dict()
    assert not any('attn_mask' in k or 'dct_m' in k or 'mean' in k for k in sd)
    blocks = net.layers[0].residual_group.blocks
    assert blocks[0].shift_size == 0 and blocks[1].shift_size == 2
    assert blocks[0].get_attn_mask((12, 16), torch.device('cpu')) is None
    mask = blocks[1].get_attn_mask((12, 16), torch.device('cpu'))
    assert mask.shape == (12, 16, 16)
    nonzero = (mask != 0).flatten(1).any(1).view(3, 4)
    expected = torch.zeros(3, 4, dtype=torch.bool)
    expected[-1, :] = True
    expected[:, -1] = True
    assert torch.equal(nonzero, expected)  # interior windows: all-zero; border windows: masked
    assert set(mask.unique().tolist()) == {0.0, -100.0}
    assert blocks[1].get_attn_mask((12, 16), torch.device('cpu')) is mask  # cached
    none = _tiny(mask_mode='none')
    assert none.layers[0].residual_group.blocks[1].get_attn_mask((12, 16), torch.device('cpu')) is None
    # released x4 config: 64x64 features -> 8x8 windows, first 7x7 windows unmasked
    full = DCTSwinBlock(dim=12, input_resolution=(256, 256), num_heads=2, window_size=8, shift_size=4)
    m = full.calculate_mask((64, 64))
    nz = (m != 0).flatten(1).any(1).view(8, 8)
    assert not nz[:7, :7].any() and nz[7, :].all() and nz[:, 7].all()


def test_dct_swin_block_matches_explicit_pipeline():
    torch.manual_seed(1)
    blk = DCTSwinBlock(dim=8, input_resolution=(32, 32), num_heads=2, window_size=4, shift_size=2).eval()
    h, w = 8, 12
    x = torch.randn(2, h * w, 8, generator=_gen(23))
    ws = 4
    # explicit per-window unnormalised DCT from the formula (token = ky * ws + kx)
    mat = torch.tensor([[2 * math.cos(math.pi * k * (2 * n + 1) / (2 * ws)) for n in range(ws)] for k in range(ws)])
    minv = torch.linalg.inv(mat.double()).float()
    with torch.no_grad():
        y = blk.norm1(x).view(2, h, w, 8)
        y = torch.roll(y, shifts=(-2, -2), dims=(1, 2))
        win = window_partition(y, ws)  # n ws ws c
        coeff = torch.einsum('kh,nhwc,lw->nklc', mat, win, mat).reshape(-1, ws * ws, 8)
        att = blk.attn(coeff, mask=blk.calculate_mask((h, w))).view(-1, ws, ws, 8)
        back = torch.einsum('kh,nhwc,lw->nklc', minv, att, minv)
        y = torch.roll(window_reverse(back, ws, h, w), shifts=(2, 2), dims=(1, 2)).reshape(2, h * w, 8)
        y = x + y
        ref = y + blk.mlp(blk.norm2(y))
        got = blk(x, (h, w))
    assert torch.allclose(got, ref, atol=1e-5)


def test_released_config_param_counts():
    for upscale, count in ((2, 1094579), (3, 1318099), (4, 1335603)):
        net = MTKDDCTSwin(num_teachers=3, upscale=upscale)
        assert sum(p.numel() for p in net.parameters()) == count


def test_convert_public_checkpoint_strict_load():
    net = _tiny().eval()
    ref_sd = {}
    for k, v in net.state_dict().items():
        ref_sd['module.' + k] = v.clone()
    # reference layout: persistent attn_mask buffers in every shifted block
    for i in range(2):
        ref_sd[f'module.layers.{i}.residual_group.blocks.1.attn_mask'] = torch.zeros(64, 16, 16)
    ckpt = {'params': ref_sd, 'params_ema': ref_sd, 'iter': 1000}
    other = _tiny()
    torch.manual_seed(5)
    for p in other.parameters():
        p.data.normal_()
    with pytest.raises(RuntimeError):
        other.load_state_dict(ref_sd, strict=True)
    converted = convert_public_mtkd_aggregator(ckpt)
    assert not any(k.endswith('attn_mask') or k.startswith('module.') for k in converted)
    other.load_state_dict(converted, strict=True)
    other.load_state_dict(convert_public_mtkd_aggregator(ref_sd), strict=True)
    other.load_state_dict(convert_public_mtkd_aggregator(ckpt, param_key='params'), strict=True)
    x = torch.rand(1, 9, 13, 17, generator=_gen(24))
    with torch.no_grad():
        assert torch.equal(other.eval()(x), net(x))
    with pytest.raises(KeyError):
        convert_public_mtkd_aggregator({'foo.weight': torch.zeros(1)})
