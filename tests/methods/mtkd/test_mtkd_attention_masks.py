"""MTKD DCT-Swin attention masks (``mask_mode``) and working-precision DCT (docs/mtkd.md, "Attention masks").

The public MTKD code masks every block when the feature size differs from ``img_size``; for a
regular (unshifted) block the label image is constant, so the mask isolates the DC token. These
tests pin that pattern, compare whole blocks with an independent per-window implementation
(float64, to 1e-12), check that ``dct_label`` keeps the former behaviour (regular blocks
unmasked) and that a ``public_mtkd`` aggregator checkpoint is loaded with the public masks.
"""
from __future__ import annotations

import math

import pytest
import torch
from basicsr.archs import build_network
from basicsr.archs.swinir_arch import window_partition, window_reverse

from kdsr_plugins.core.teachers import TeacherSpec
from kdsr_plugins.methods.mtkd.aggregator import load_aggregator
from kdsr_plugins.methods.mtkd.mtkd_dctswin_arch import (
    DEFAULT_MASK_MODE,
    DCTSwinBlock,
    MTKDDCTSwin,
)

CPU = torch.device('cpu')
WS = 4


def dc_isolation_pattern(ws: int) -> torch.Tensor:
    """Expected regular-block mask of one window: -100 between the DC token and each other token."""
    pattern = torch.zeros(ws * ws, ws * ws)
    pattern[0, 1:] = -100.0
    pattern[1:, 0] = -100.0
    return pattern


def block(shift: int, mask_mode: str, resolution: int = 32, ws: int = WS, dim: int = 8) -> DCTSwinBlock:
    torch.manual_seed(7 + shift)
    blk = DCTSwinBlock(dim=dim, input_resolution=(resolution, resolution), num_heads=2, window_size=ws,
                       shift_size=shift, mask_mode=mask_mode)
    # non-trivial relative-position bias so that a wrong token order or mask shows
    torch.nn.init.normal_(blk.attn.relative_position_bias_table, std=0.5)
    return blk.eval()


def explicit_block(blk: DCTSwinBlock, x: torch.Tensor, size: tuple[int, int], mask_regular: bool) -> torch.Tensor:
    """The DCT-Swin block written out: per-window DCT from the formula, masks from the label images."""
    h, w = size
    b, _, c = x.shape
    ws, ss = blk.window_size, blk.shift_size
    dtype = x.dtype
    mat = torch.tensor([[2 * math.cos(math.pi * k * (2 * n + 1) / (2 * ws)) for n in range(ws)] for k in range(ws)],
                       dtype=torch.float64)
    minv = torch.linalg.inv(mat)
    mat, minv = mat.to(dtype), minv.to(dtype)

    def to_dct(win: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return torch.einsum('kh,nhwc,lw->nklc', m, win, m)

    mask = None
    if ss > 0 or mask_regular:
        labels = torch.zeros(1, h, w, 1, dtype=torch.float64)
        if ss > 0:
            cuts = ((0, h - ws, h - ss, h), (0, w - ws, w - ss, w))
            region = 0
            for i in range(3):
                for j in range(3):
                    labels[:, cuts[0][i]:cuts[0][i + 1], cuts[1][j]:cuts[1][j + 1], :] = region
                    region += 1
        else:
            labels += 8  # the public code's label slices collapse to the last region for shift 0
        lw = to_dct(window_partition(labels, ws), mat.double()).reshape(-1, ws * ws)
        mask = torch.where((lw[:, None, :] - lw[:, :, None]).abs() >= 1e-6, -100.0, 0.0).to(dtype)
    y = blk.norm1(x).view(b, h, w, c)
    if ss:
        y = torch.roll(y, shifts=(-ss, -ss), dims=(1, 2))
    coeff = to_dct(window_partition(y, ws), mat).reshape(-1, ws * ws, c)
    att = blk.attn(coeff, mask=mask).view(-1, ws, ws, c)
    y = window_reverse(to_dct(att, minv), ws, h, w)
    if ss:
        y = torch.roll(y, shifts=(ss, ss), dims=(1, 2))
    y = x + y.reshape(b, h * w, c)
    return y + blk.mlp(blk.norm2(y))


def test_default_is_the_public_behaviour():
    assert DEFAULT_MASK_MODE == 'reference'
    assert MTKDDCTSwin(num_teachers=2, upscale=2, img_size=32, window_size=4, embed_dim=12, depths=[2],
                       num_heads=[2], num_feat=8).layers[0].residual_group.blocks[0].mask_mode == 'reference'
    with pytest.raises(ValueError, match='mask_mode'):
        block(0, 'regular')


@pytest.mark.parametrize('ws', [4, 8])
def test_regular_block_mask_pattern_when_feature_size_differs_from_img_size(ws):
    blk = block(0, 'reference', resolution=64, ws=ws)
    h, w = 3 * ws, 2 * ws
    mask = blk.get_attn_mask((h, w), CPU)
    assert mask is not None and mask.shape == (6, ws * ws, ws * ws)
    for window in mask:  # the same DC-isolating pattern in every window
        assert torch.equal(window, dc_isolation_pattern(ws))
    assert int((mask[0] != 0).sum()) == 2 * (ws * ws - 1)  # 126 entries for the released 8x8 windows


def test_regular_block_is_unmasked_at_img_size_and_in_other_modes():
    assert block(0, 'reference', resolution=32).get_attn_mask((32, 32), CPU) is None  # the stored (empty) mask
    assert block(0, 'reference', resolution=32).get_attn_mask((32, 16), CPU) is not None  # one side differs
    for mode in ('dct_label', 'none'):
        assert block(0, mode, resolution=32).get_attn_mask((12, 16), CPU) is None
        assert block(0, mode, resolution=32).get_attn_mask((32, 32), CPU) is None


def test_shifted_block_mask_is_the_same_in_reference_and_dct_label_mode():
    for size in ((12, 16), (32, 32)):
        ref = block(2, 'reference').get_attn_mask(size, CPU)
        old = block(2, 'dct_label').get_attn_mask(size, CPU)
        assert ref is not None and torch.equal(ref, old)
        assert block(2, 'none').get_attn_mask(size, CPU) is None


@pytest.mark.parametrize('mode', ['reference', 'dct_label'])
@pytest.mark.parametrize('shift', [0, 2])
@pytest.mark.parametrize('size', [(8, 12), (32, 32)])
def test_block_equals_explicit_pipeline_in_float64(mode, shift, size):
    blk = block(shift, mode).double()
    x = torch.randn(2, size[0] * size[1], 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    mask_regular = mode == 'reference' and size != (32, 32)
    with torch.no_grad():
        got = blk(x, size)
        ref = explicit_block(blk, x, size, mask_regular)
        wrong = explicit_block(blk, x, size, not mask_regular)
    assert got.dtype == torch.float64
    assert (got - ref).abs().max() < 1e-12
    if shift == 0 and size != (32, 32):  # the regular-block mask matters: the other choice is far off
        assert (got - wrong).abs().max() > 1e-4


def test_dct_matrices_follow_the_input_dtype():
    blk = block(0, 'reference')
    for dtype in (torch.float32, torch.float64):
        m, minv = blk.dct_matrices(dtype, CPU)
        assert m.dtype == minv.dtype == dtype
    x = torch.randn(1, 8, 12, 8, dtype=torch.float64)
    back = blk.dct_window_reverse(blk.dct_window_partition(x), 8, 12)
    assert back.dtype == torch.float64 and (back - x).abs().max() < 1e-13  # float32 matrices give ~1e-7
    x32 = x.float()
    assert blk.dct_window_partition(x32).dtype == torch.float32
    # a module cast to float32 and back keeps full float64 precision (matrices are not stored buffers)
    blk.float().double()
    assert (blk.dct_window_reverse(blk.dct_window_partition(x), 8, 12) - x).abs().max() < 1e-13


def _net(mode: str) -> MTKDDCTSwin:
    torch.manual_seed(0)
    net = MTKDDCTSwin(num_teachers=2, upscale=2, img_size=16, window_size=4, embed_dim=12, depths=[2],
                      num_heads=[2], num_feat=8, mask_mode=mode)
    for name, p in net.named_parameters():
        if 'relative_position_bias_table' in name:
            torch.nn.init.normal_(p, std=0.5)
    return net.eval()


def test_network_modes_agree_only_at_img_size():
    ref, old = _net('reference'), _net('dct_label')
    g = torch.Generator().manual_seed(5)
    at_img_size = torch.rand(1, 6, 32, 32, generator=g)  # features 16x16 = img_size
    other = torch.rand(1, 6, 24, 40, generator=g)
    with torch.no_grad():
        assert torch.equal(ref(at_img_size), old(at_img_size))
        assert (ref(other) - old(other)).abs().max() > 1e-5


def test_public_mtkd_checkpoint_forces_the_public_masks(tmp_path):
    net_opt = {'type': 'MTKDDCTSwin', 'num_teachers': 2, 'upscale': 2, 'img_size': 16, 'window_size': 4,
               'embed_dim': 12, 'depths': [2], 'num_heads': [2], 'num_feat': 8, 'mlp_ratio': 2}
    torch.manual_seed(3)
    public = build_network(dict(net_opt, output_convention='mean255')).state_dict()
    public['layers.0.residual_group.blocks.1.attn_mask'] = torch.zeros(16, 16, 16)
    path = str(tmp_path / 'public.pth')
    torch.save({'params': public}, path)
    specs = [TeacherSpec('edsr', {'type': 'EDSR', 'upscale': 2}, None), TeacherSpec('swinir', {'type': 'SwinIR',
                                                                                                'upscale': 2}, None)]
    block_opt = {'network': net_opt, 'pretrain': path, 'format': 'public_mtkd', 'teacher_order': ['edsr', 'swinir']}
    net, meta, _ = load_aggregator(block_opt, specs, 2)
    assert net.mask_mode == meta['mask_mode'] == 'reference'
    with pytest.raises(ValueError, match="mask_mode 'reference'"):
        load_aggregator(dict(block_opt, network=dict(net_opt, mask_mode='dct_label')), specs, 2)
    # a checkpoint of ours records its mask mode, which must match at load
    ours = build_network(dict(net_opt, mask_mode='dct_label')).state_dict()
    kd_meta = {'teacher_order': ['edsr', 'swinir'], 'teacher_types': ['EDSR', 'SwinIR'], 'num_teachers': 2,
               'scale': 2, 'output_convention': 'image', 'mask_mode': 'dct_label'}
    torch.save({'params': ours, 'kd_meta': kd_meta}, str(tmp_path / 'ours.pth'))
    mine = {'network': dict(net_opt, mask_mode='dct_label'), 'pretrain': str(tmp_path / 'ours.pth')}
    assert load_aggregator(mine, specs, 2)[0].mask_mode == 'dct_label'
    with pytest.raises(ValueError, match="mask_mode = 'dct_label'"):
        load_aggregator(dict(mine, network=net_opt), specs, 2)
