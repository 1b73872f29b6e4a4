"""MiPKD bank: D(Z_mix) and D(Z_T) decoded in one call give the values and gradients of two separate calls."""
from __future__ import annotations

import pytest
import torch

from kdsr_plugins.methods.mipkd.mipkd_mixer_arch import MiPKDMixerBank, MiPKDPlan, random_mask


@pytest.mark.parametrize('enc_type', ['cnn', 'mlp'])
def test_batched_decoder_equals_separate_calls(enc_type):
    torch.manual_seed(0)
    pairs = [(8, 4), (8, 6)]
    bank = MiPKDMixerBank(pairs, bpm_mode='off', enc_type=enc_type, latent_dim=5).double()
    feats_t = [torch.randn(3, c_t, 6, 7, dtype=torch.float64) for c_t, _ in pairs]
    feats_s = [torch.randn(3, c_s, 6, 7, dtype=torch.float64, requires_grad=True) for _, c_s in pairs]
    masks = [random_mask(3, 5, 6, 7, 0.5) for _ in pairs]
    out = bank(feats_t, feats_s, MiPKDPlan(masks=masks))
    total = sum(f.abs().sum() for f in out['feat']) + sum(a.square().sum() for a in out['ae'])
    grads = torch.autograd.grad(total, [*bank.parameters(), *feats_s])

    ref_feat, ref_ae = [], []
    for m, ft, fs, mask in zip(bank.mixers, feats_t, feats_s, masks):
        ref_feat.append(m.decode(m.mix(m.encode_t(ft), m.encode_s(fs), mask)))
        ref_ae.append(m.decode(m.encode_t(ft)))
    ref_total = sum(f.abs().sum() for f in ref_feat) + sum(a.square().sum() for a in ref_ae)
    ref_grads = torch.autograd.grad(ref_total, [*bank.parameters(), *feats_s])
    for got, ref in zip(out['feat'] + out['ae'], ref_feat + ref_ae):
        assert got.shape == ref.shape
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    for got, ref in zip(grads, ref_grads):
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
