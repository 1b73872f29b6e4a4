"""DCTSwin knowledge-aggregation network of MTKD (docs/mtkd.md, "2. Stage 1 — `MTKDAggregatorModel`").

Input: the N teacher SR outputs stacked along channels (``B x 3N x H x W`` at HR, in canonical
teacher order, values ~[0, 1]); output: one aggregated HR image ``B x 3 x H x W``. The layout is
SwinIR's (BasicSR ``swinir_arch`` RSTB / BasicLayer / WindowAttention are reused, so parameter
names match SwinIR and the reference checkpoints) with a ``PixelUnshuffle(upscale)`` in front
and DCT-Swin blocks: every 8x8 window is moved to the 2-D DCT domain before window attention and
back afterwards.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple, Union

import torch
from basicsr.archs.arch_util import trunc_normal_
from basicsr.archs.swinir_arch import (
    RSTB,
    PatchEmbed,
    PatchUnEmbed,
    SwinTransformerBlock,
    Upsample,
    window_partition,
    window_reverse,
)
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from kdsr_plugins.core.schema import check_choice
from kdsr_plugins.methods.mtkd.dct import dct_matrix, idct_matrix, pad_to_multiple

__all__ = ['MTKDDCTSwin', 'DCTSwinBlock', 'RGB_MEAN', 'OUTPUT_CONVENTIONS', 'MASK_MODES', 'DEFAULT_MASK_MODE']

RGB_MEAN = (0.4488, 0.4371, 0.4040)
OUTPUT_CONVENTIONS = ('image', 'mean255')
#: ``reference``: the public code's masks (every block masked when the feature size differs from
#: ``img_size``); ``dct_label``: shifted blocks only; ``none``: no mask. See docs/mtkd.md, "Attention masks".
MASK_MODES = ('reference', 'dct_label', 'none')
DEFAULT_MASK_MODE = 'reference'
_MASK_EQ_TOL = 1e-6
_MASK_CACHE_SIZE = 8


class DCTSwinBlock(SwinTransformerBlock):
    """Swin block whose window attention runs on per-window 2-D DCT coefficients.

    Identical to BasicSR's ``SwinTransformerBlock`` (same submodules and parameter names) except
    that each window is DCT-transformed (unnormalised DCT-II, per channel, token index =
    vertical frequency * ws + horizontal frequency) before the attention and inverse-transformed
    after it. The attention mask is built by sending the Swin region-label image through the
    same DCT partition. ``mask_mode``:

    * ``'reference'`` (default): as the public MTKD code. When the feature size differs from
      ``input_resolution`` (the nominal ``img_size``), every block recomputes that mask, the
      regular ones included: their label image is constant, so the mask isolates the DC token
      from the other ``ws² - 1`` tokens. At ``input_resolution`` a regular block is unmasked.
    * ``'dct_label'``: shifted blocks masked, regular blocks never.
    * ``'none'``: no mask.

    No mask is stored in the state dict; masks are cached per (H, W, device). The DCT matrices
    are applied in the input's dtype (built in float64, cached per dtype and device).

    Args:
        dim: Channels. input_resolution: nominal resolution (as in SwinIR: shrinks the window
        when ``min(input_resolution) <= window_size``, and decides the ``'reference'`` masks).
        Other args: see ``SwinTransformerBlock``. mask_mode: one of ``MASK_MODES``.
    """

    def __init__(self,
                 dim: int,
                 input_resolution: Tuple[int, int],
                 num_heads: int,
                 window_size: int = 8,
                 shift_size: int = 0,
                 mlp_ratio: float = 2.,
                 qkv_bias: bool = True,
                 qk_scale: Optional[float] = None,
                 drop: float = 0.,
                 attn_drop: float = 0.,
                 drop_path: float = 0.,
                 act_layer: type = nn.GELU,
                 norm_layer: type = nn.LayerNorm,
                 mask_mode: str = DEFAULT_MASK_MODE) -> None:
        # build with shift 0 so that the parent does not compute/store a spatial mask buffer
        super().__init__(
            dim=dim,
            input_resolution=input_resolution,
            num_heads=num_heads,
            window_size=window_size,
            shift_size=0,
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            qk_scale=qk_scale,
            drop=drop,
            attn_drop=attn_drop,
            drop_path=drop_path,
            act_layer=act_layer,
            norm_layer=norm_layer)
        # the parent may have shrunk self.window_size; it then disables the shift (SwinIR rule)
        self.shift_size = 0 if min(input_resolution) <= window_size else shift_size
        assert 0 <= self.shift_size < self.window_size, 'shift_size must in 0-window_size'
        check_choice(mask_mode, MASK_MODES, f'mask_mode must be one of {MASK_MODES}, got {mask_mode!r}')
        self.mask_mode = mask_mode
        self._mask_cache: Dict[Tuple[int, int, str], torch.Tensor] = {}
        self._dct_cache: Dict[Tuple[torch.dtype, str], Tuple[torch.Tensor, torch.Tensor]] = {}

    # ---------------------------------------------------------------- window DCT
    @staticmethod
    def _window_transform(windows: torch.Tensor, mat: torch.Tensor) -> torch.Tensor:
        # windows: n x ws x ws x c; returns mat @ w @ mat.T over the two spatial axes, per channel
        return torch.einsum('kh,nhwc,lw->nklc', mat, windows, mat)

    def dct_matrices(self, dtype: torch.dtype, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
        """(DCT, inverse DCT) matrices of the window in ``dtype`` on ``device``, cast from float64 once."""
        key = (dtype, str(device))
        mats = self._dct_cache.get(key)
        if mats is None:
            ws = self.window_size
            mats = (dct_matrix(ws, None, dtype=dtype, device=device), idct_matrix(ws, None, dtype=dtype, device=device))
            self._dct_cache[key] = mats
        return mats

    def dct_window_partition(self, x: torch.Tensor) -> torch.Tensor:
        """``b x h x w x c`` -> ``(nw*b) x ws x ws x c`` DCT coefficients of each window."""
        mat = self.dct_matrices(x.dtype, x.device)[0]
        return self._window_transform(window_partition(x, self.window_size), mat)

    def dct_window_reverse(self, coeffs: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Inverse of :meth:`dct_window_partition` -> ``b x h x w x c``."""
        minv = self.dct_matrices(coeffs.dtype, coeffs.device)[1]
        return window_reverse(self._window_transform(coeffs, minv), self.window_size, h, w)

    # ---------------------------------------------------------------- mask
    def calculate_mask(self, x_size: Tuple[int, int]) -> torch.Tensor:
        """Window mask (``nw x ws² x ws²``, 0 / -100) from the DCT of the Swin region labels.

        Computed in float64 on the CPU; transformed label values closer than 1e-6 count as equal.
        With ``shift_size`` 0 the label slices reduce to one region (as in the public code), so
        every window gets the DC-isolating pattern.
        """
        h, w = x_size
        ws, ss = self.window_size, self.shift_size
        img_mask = torch.zeros((1, h, w, 1), dtype=torch.float64)
        slices = (slice(0, -ws), slice(-ws, -ss), slice(-ss, None))
        cnt = 0
        for hs in slices:
            for wsl in slices:
                img_mask[:, hs, wsl, :] = cnt
                cnt += 1
        windows = self._window_transform(window_partition(img_mask, ws), dct_matrix(ws, None))
        windows = windows.reshape(-1, ws * ws)
        diff = windows.unsqueeze(1) - windows.unsqueeze(2)
        mask = torch.zeros_like(diff, dtype=torch.float32)
        return mask.masked_fill(diff.abs() >= _MASK_EQ_TOL, -100.0)

    def uses_mask(self, x_size: Tuple[int, int]) -> bool:
        """Whether this block masks its attention at feature size ``x_size`` (see ``mask_mode``)."""
        if self.mask_mode == 'none':
            return False
        if self.shift_size > 0:
            return True
        return self.mask_mode == 'reference' and tuple(int(s) for s in x_size) != tuple(self.input_resolution)

    def get_attn_mask(self, x_size: Tuple[int, int], device: torch.device) -> Optional[torch.Tensor]:
        """The attention mask used for feature size ``x_size`` (None where the block is unmasked)."""
        if not self.uses_mask(x_size):
            return None
        key = (int(x_size[0]), int(x_size[1]), str(device))
        mask = self._mask_cache.get(key)
        if mask is None:
            if len(self._mask_cache) >= _MASK_CACHE_SIZE:
                self._mask_cache.clear()
            mask = self.calculate_mask(x_size).to(device)
            self._mask_cache[key] = mask
        return mask

    def __getstate__(self):  # keep pickles/deepcopies (EMA copies) free of cached masks
        state = self.__dict__.copy()
        state['_mask_cache'] = {}
        state['_dct_cache'] = {}
        return state

    # ---------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor, x_size: Tuple[int, int]) -> torch.Tensor:
        h, w = x_size
        b, _, c = x.shape
        ws = self.window_size

        shortcut = x
        x = self.norm1(x).view(b, h, w, c)
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))

        x_windows = self.dct_window_partition(x).reshape(-1, ws * ws, c)
        mask = self.get_attn_mask(x_size, x.device)
        if mask is not None:
            mask = mask.to(x.dtype)
        attn_windows = self.attn(x_windows, mask=mask).view(-1, ws, ws, c)
        x = self.dct_window_reverse(attn_windows, h, w)

        if self.shift_size > 0:
            x = torch.roll(x, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        x = x.reshape(b, h * w, c)

        x = shortcut + self.drop_path(x)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x

    def extra_repr(self) -> str:
        return super().extra_repr() + f', mask_mode={self.mask_mode}, dct=unnormalised'


@ARCH_REGISTRY.register()
class MTKDDCTSwin(nn.Module):
    """DCTSwin multi-teacher knowledge aggregator (MTKD stage 1; frozen target generator in stage 2).

    Forward: ``X`` (``B x 3N x H x W``, the N teacher outputs concatenated in canonical order, or a
    sequence of N ``B x 3 x H x W`` tensors) -> reflect-pad bottom/right to multiples of
    ``window_size * upscale`` -> ``PixelUnshuffle(upscale)`` -> ``conv_first`` -> 2 RSTBs of
    DCT-Swin blocks (+ long skip) -> ``conv_before_upsample`` (LeakyReLU 0.01) -> pixel-shuffle
    upsampler -> ``conv_last`` -> crop to ``H x W``. No skip from the teacher images.

    Output (``output_convention``): ``'image'`` (default) returns the image in [0, 1] scale
    directly; ``'mean255'`` returns ``O / 255 + RGB_MEAN`` of the raw network output ``O`` (the
    reference-code parametrisation, required for reference checkpoints). Both return the image.

    Args:
        num_teachers: N; ``in_chans`` defaults to ``3 * num_teachers``.
        in_chans: Input channels (must equal ``3 * num_teachers`` when both are given).
        num_out_ch: Output channels.
        upscale: PixelUnshuffle / upsampler factor (SR scale).
        img_size: Nominal size, as SwinIR's (only decides window shrinking / ``ape`` size).
        patch_size, embed_dim, depths, num_heads, window_size, mlp_ratio, qkv_bias, qk_scale,
        drop_rate, attn_drop_rate, drop_path_rate, ape, patch_norm, resi_connection: as SwinIR.
        img_range: Input scaling, as SwinIR (with ``in_chans != 3`` the mean is zero).
        upsampler: Only ``'pixelshuffle'``.
        num_feat: Reconstruction channels.
        output_convention: ``'image'`` or ``'mean255'``.
        mask_mode: Attention masks: ``'reference'`` (default, the public code's: every block masked
            when the feature size differs from ``img_size``), ``'dct_label'`` (shifted blocks
            only) or ``'none'``.
    """

    def __init__(self,
                 num_teachers: int = 3,
                 in_chans: Optional[int] = None,
                 num_out_ch: int = 3,
                 upscale: int = 4,
                 img_size: int = 256,
                 patch_size: int = 1,
                 embed_dim: int = 96,
                 depths: Sequence[int] = (4, 4),
                 num_heads: Sequence[int] = (6, 6),
                 window_size: int = 8,
                 mlp_ratio: float = 2.,
                 qkv_bias: bool = True,
                 qk_scale: Optional[float] = None,
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 drop_path_rate: float = 0.1,
                 ape: bool = False,
                 patch_norm: bool = True,
                 img_range: float = 1.,
                 upsampler: str = 'pixelshuffle',
                 resi_connection: str = '1conv',
                 num_feat: int = 64,
                 output_convention: str = 'image',
                 mask_mode: str = DEFAULT_MASK_MODE) -> None:
        super().__init__()
        if in_chans is None:
            in_chans = 3 * int(num_teachers)
        elif in_chans != 3 * int(num_teachers):
            raise ValueError(f'in_chans={in_chans} does not match num_teachers={num_teachers} (3 channels each)')
        check_choice(output_convention, OUTPUT_CONVENTIONS,
                     f'output_convention must be one of {OUTPUT_CONVENTIONS}, got {output_convention!r}')
        check_choice(mask_mode, MASK_MODES, f'mask_mode must be one of {MASK_MODES}, got {mask_mode!r}')
        if upsampler != 'pixelshuffle':
            raise ValueError(f"MTKDDCTSwin supports only upsampler='pixelshuffle', got {upsampler!r}")
        if len(depths) != len(num_heads):
            raise ValueError('depths and num_heads must have the same length')

        self.num_teachers = int(num_teachers)
        self.in_chans = in_chans
        self.num_out_ch = num_out_ch
        self.upscale = int(upscale)
        self.window_size = int(window_size)
        self.img_range = img_range
        self.upsampler = upsampler
        self.output_convention = output_convention
        self.mask_mode = mask_mode
        self.ape = ape
        self.patch_norm = patch_norm
        self.embed_dim = embed_dim
        self.num_features = embed_dim
        self.mlp_ratio = mlp_ratio
        # SwinIR's normalisation rule (mean only for 3-channel input); not part of the state dict
        in_mean = torch.tensor(RGB_MEAN).view(1, 3, 1, 1) if in_chans == 3 else torch.zeros(1, 1, 1, 1)
        self.register_buffer('in_mean', in_mean, persistent=False)
        self.register_buffer('out_mean', torch.tensor(RGB_MEAN[:num_out_ch] if num_out_ch == 3 else
                                                      [0.0] * num_out_ch).view(1, num_out_ch, 1, 1),
                             persistent=False)

        # 1. shallow features
        self.pixel_unshuffle = nn.PixelUnshuffle(self.upscale)
        self.conv_first = nn.Conv2d(in_chans * self.upscale**2, embed_dim, 3, 1, 1)

        # 2. deep features
        norm_layer = nn.LayerNorm
        self.patch_embed = PatchEmbed(
            img_size=img_size,
            patch_size=patch_size,
            in_chans=embed_dim,
            embed_dim=embed_dim,
            norm_layer=norm_layer if patch_norm else None)
        patches_resolution = self.patch_embed.patches_resolution
        self.patches_resolution = patches_resolution
        self.patch_unembed = PatchUnEmbed(
            img_size=img_size,
            patch_size=patch_size,
            in_chans=embed_dim,
            embed_dim=embed_dim,
            norm_layer=norm_layer if patch_norm else None)
        if ape:
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches, embed_dim))
            trunc_normal_(self.absolute_pos_embed, std=.02)
        self.pos_drop = nn.Dropout(p=drop_rate)

        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, sum(depths))]
        resolution = (patches_resolution[0], patches_resolution[1])
        self.layers = nn.ModuleList()
        for i_layer, depth in enumerate(depths):
            layer = RSTB(  # built empty, then filled with DCT-Swin blocks (same parameter names)
                dim=embed_dim,
                input_resolution=resolution,
                depth=0,
                num_heads=num_heads[i_layer],
                window_size=window_size,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                qk_scale=qk_scale,
                drop=drop_rate,
                attn_drop=attn_drop_rate,
                drop_path=0.,
                norm_layer=norm_layer,
                downsample=None,
                use_checkpoint=False,
                img_size=img_size,
                patch_size=patch_size,
                resi_connection=resi_connection)
            layer_dpr = dpr[sum(depths[:i_layer]):sum(depths[:i_layer + 1])]
            layer.residual_group.blocks = nn.ModuleList([
                DCTSwinBlock(
                    dim=embed_dim,
                    input_resolution=resolution,
                    num_heads=num_heads[i_layer],
                    window_size=window_size,
                    shift_size=0 if (j % 2 == 0) else window_size // 2,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    qk_scale=qk_scale,
                    drop=drop_rate,
                    attn_drop=attn_drop_rate,
                    drop_path=layer_dpr[j],
                    norm_layer=norm_layer,
                    mask_mode=mask_mode) for j in range(depth)
            ])
            layer.residual_group.depth = depth
            self.layers.append(layer)
        self.norm = norm_layer(self.num_features)

        if resi_connection == '1conv':
            self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1)
        elif resi_connection == '3conv':
            self.conv_after_body = nn.Sequential(
                nn.Conv2d(embed_dim, embed_dim // 4, 3, 1, 1), nn.LeakyReLU(negative_slope=0.2, inplace=True),
                nn.Conv2d(embed_dim // 4, embed_dim // 4, 1, 1, 0), nn.LeakyReLU(negative_slope=0.2, inplace=True),
                nn.Conv2d(embed_dim // 4, embed_dim, 3, 1, 1))
        else:
            raise ValueError(f"resi_connection must be '1conv' or '3conv', got {resi_connection!r}")

        # 3. reconstruction
        self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, num_feat, 3, 1, 1), nn.LeakyReLU(inplace=True))
        self.upsample = Upsample(self.upscale, num_feat)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)

        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        return {'absolute_pos_embed'}

    @torch.jit.ignore
    def no_weight_decay_keywords(self) -> set:
        return {'relative_position_bias_table'}

    @property
    def pad_multiple(self) -> int:
        """HR sizes are padded to multiples of this (``window_size * upscale``)."""
        return self.window_size * self.upscale

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x_size = (x.shape[2], x.shape[3])
        x = self.patch_embed(x)
        if self.ape:
            x = x + self.absolute_pos_embed
        x = self.pos_drop(x)
        for layer in self.layers:
            x = layer(x, x_size)
        x = self.norm(x)
        return self.patch_unembed(x, x_size)

    def forward_raw(self, x: torch.Tensor) -> torch.Tensor:
        """Raw network output ``O`` on a padded input (sizes multiples of :attr:`pad_multiple`)."""
        x = (x - self.in_mean.to(x.dtype)) * self.img_range
        x = self.conv_first(self.pixel_unshuffle(x))
        x = self.conv_after_body(self.forward_features(x)) + x
        x = self.conv_last(self.upsample(self.conv_before_upsample(x)))
        return x / self.img_range + self.in_mean.to(x.dtype)

    def forward(self, x: Union[torch.Tensor, Sequence[torch.Tensor]]) -> torch.Tensor:
        """Aggregate the teacher outputs.

        Args:
            x: ``B x 3N x H x W`` stacked teacher SR images (canonical order), or a list/tuple of N
                ``B x 3 x H x W`` tensors; any ``H x W``.

        Returns:
            ``B x num_out_ch x H x W`` aggregated image (``[0, 1]`` scale for both conventions).
        """
        if isinstance(x, (list, tuple)):
            x = torch.cat(list(x), dim=1)
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f'MTKDDCTSwin expects B x {self.in_chans} x H x W '
                             f'({self.num_teachers} teachers), got {tuple(x.shape)}')
        h, w = x.shape[-2:]
        out = self.forward_raw(pad_to_multiple(x, self.pad_multiple, 'reflect'))[..., :h, :w]
        if self.output_convention == 'mean255':
            out = out / 255. + self.out_mean.to(out.dtype)
        return out

    def extra_repr(self) -> str:
        return (f'num_teachers={self.num_teachers}, upscale={self.upscale}, window_size={self.window_size}, '
                f'output_convention={self.output_convention}, mask_mode={self.mask_mode}')
