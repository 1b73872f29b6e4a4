"""Feature-KD losses (FitNet, AT, FAKD, RKD), the FitNet adapter bank and the legacy mapping.

Expected values come either from numbers worked out by hand (in the comments) or from explicit
loop formulations in numpy float64 written independently of the implementation.
"""
import math

import kdsr_plugins  # noqa: F401  (first: shims, BasicSR, registration)

import numpy as np
import pytest
import torch
from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.utils.registry import ARCH_REGISTRY, LOSS_REGISTRY

from kdsr_plugins.core.kd_adapter_arch import KDAdapterBank, KDConvAdapter
from kdsr_plugins.methods.feature_kd import feature_kd_loss as fkd
from kdsr_plugins.methods.feature_kd.feature_kd_loss import (
    KDAffinityLoss,
    KDAttentionLoss,
    KDFitNetLoss,
    KDRelationLoss,
)
from kdsr_plugins.methods.feature_kd.legacy_options import legacy_feature_loss_opt

LOSS_NAMES = ['KDFitNetLoss', 'KDAttentionLoss', 'KDAffinityLoss', 'KDRelationLoss']


def _rand(seed, *shape):
    return np.random.RandomState(seed).randn(*shape)


def _t(a, requires_grad=False):
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=requires_grad)


def _huber(x):
    x = abs(x)
    return 0.5 * x * x if x < 1.0 else x - 0.5


# ----------------------------------------------------------------------------- references (loops)
def ref_fitnet(s, t, distance, mode):
    B, Cs, H, W = s.shape
    if mode == 'channel_mean':
        s = s.mean(axis=1, keepdims=True)
        t = t.mean(axis=1, keepdims=True)
    total, count = 0.0, 0
    for idx in np.ndindex(*s.shape):
        d = s[idx] - t[idx]
        total += abs(d) if distance == 'l1' else d * d
        count += 1
    return total / count


def ref_attention_q(f, p, use_mean):
    B, C, H, W = f.shape
    q = np.zeros((B, H * W))
    for b in range(B):
        a = []
        for h in range(H):
            for w in range(W):
                v = sum(abs(f[b, c, h, w]) ** p for c in range(C))
                a.append(v / C if use_mean else v)
        norm = math.sqrt(sum(x * x for x in a))
        q[b] = [x / (norm + 1e-6) for x in a]
    return q


def ref_attention(s, t, mode, p=2, beta=1000.0):
    qs = ref_attention_q(s, p, mode == 'code')
    qt = ref_attention_q(t, p, mode == 'code')
    B, N = qs.shape
    if mode == 'sr_l1':
        return sum(abs(qs[b, n] - qt[b, n]) for b in range(B) for n in range(N)) / (B * N)
    if mode == 'paper':
        return beta / 2 * sum(math.sqrt(sum((qs[b, n] - qt[b, n]) ** 2 for n in range(N))) for b in range(B)) / B
    return beta * sum((qs[b, n] - qt[b, n]) ** 2 for b in range(B) for n in range(N)) / (B * N)


def ref_affinity_matrix(f):
    B, C, H, W = f.shape
    N = H * W
    cols = f.reshape(B, C, N)
    A = np.zeros((B, N, N))
    for b in range(B):
        norms = [math.sqrt(sum(cols[b, c, i] ** 2 for c in range(C))) for i in range(N)]
        for i in range(N):
            for j in range(N):
                dot = sum(cols[b, c, i] * cols[b, c, j] for c in range(C))
                A[b, i, j] = dot / ((norms[i] + 1e-8) * (norms[j] + 1e-8))
    return A


def ref_affinity(s, t):
    As, At = ref_affinity_matrix(s), ref_affinity_matrix(t)
    B, N, _ = As.shape
    return sum(abs(As[b, i, j] - At[b, i, j]) for b in range(B) for i in range(N) for j in range(N)) / (B * N * N)


def ref_rkd_potentials(f, embed):
    B = f.shape[0]
    emb = [f[b].mean(axis=(1, 2)) if embed == 'avg' else f[b].reshape(-1) for b in range(B)]

    def dist(i, j):
        return math.sqrt(sum((x - y) ** 2 for x, y in zip(emb[i], emb[j])))

    pairs = [(i, j) for i in range(B) for j in range(B) if i != j]
    mu = sum(dist(i, j) for i, j in pairs) / len(pairs)
    psi_d = [dist(i, j) / mu for i, j in pairs]
    psi_a = []
    for i in range(B):
        for j in range(B):
            for k in range(B):
                if len({i, j, k}) < 3:
                    continue
                e_ij = (emb[i] - emb[j]) / dist(i, j)
                e_kj = (emb[k] - emb[j]) / dist(k, j)
                psi_a.append(float(np.dot(e_ij, e_kj)))
    return psi_d, psi_a


def ref_relation(s, t, lambda_d=25.0, lambda_a=50.0, embed='avg', use_angle=True):
    ds, as_ = ref_rkd_potentials(s, embed)
    dt, at = ref_rkd_potentials(t, embed)
    value = lambda_d * sum(_huber(x - y) for x, y in zip(ds, dt)) / len(ds)
    if use_angle:
        value += lambda_a * sum(_huber(x - y) for x, y in zip(as_, at)) / len(as_)
    return value


# ----------------------------------------------------------------------------- hand-computed values
def test_fitnet_hand_values():
    s = _t([[[[1, 2], [3, 4]]]])  # 1×1×2×2
    t = _t([[[[0, 2], [5, 4]]]])
    # |d| = 1, 0, 2, 0
    assert KDFitNetLoss(loss_weight=1.0, distance='l1')([s], [t]).item() == pytest.approx(0.75)
    assert KDFitNetLoss(loss_weight=1.0, distance='l2')([s], [t]).item() == pytest.approx(1.25)
    # channel_mean: student channels [1,3],[3,5] -> [2,4]; teacher (3 channels) -> [1,1]
    s2 = _t([[[[1, 3]], [[3, 5]]]])
    t2 = _t([[[[0, 0]], [[2, 2]], [[1, 1]]]])
    assert KDFitNetLoss(loss_weight=1.0, mode='channel_mean')([s2], [t2]).item() == pytest.approx(2.0)


def test_attention_hand_values():
    # student: only position 0 active, teacher: only position 1 -> Q_S=(1,0)/(1+eps), Q_T=(0,1)/(1+eps)
    s = _t([[[[1, 0]], [[0, 0]]]])  # 1×2×1×2
    t = _t([[[[0, 1]]]])  # 1×1×1×2
    eps = 1e-6
    assert KDAttentionLoss(loss_weight=1.0, mode='sr_l1')([s], [t]).item() == pytest.approx(1 / (1 + eps), rel=1e-12)
    assert KDAttentionLoss(mode='paper')([s], [t]).item() == pytest.approx(500 * math.sqrt(2) / (1 + eps), rel=1e-12)
    # code: channel mean -> A_S=(0.5,0), A_T=(0,1)
    qs, qt = 0.5 / (0.5 + eps), 1 / (1 + eps)
    assert KDAttentionLoss(mode='code')([s], [t]).item() == pytest.approx(1000 * (qs ** 2 + qt ** 2) / 2, rel=1e-12)


def test_affinity_hand_value():
    # student columns (1,0),(0,1) -> A_S = I; teacher columns (1,0),(2,0) -> A_T = all ones
    s = _t([[[[1, 0]], [[0, 1]]]])
    t = _t([[[[1, 2]], [[0, 0]]]])
    assert KDAffinityLoss(loss_weight=1.0)([s], [t]).item() == pytest.approx(0.5, abs=1e-7)


def test_relation_hand_value():
    # student embeddings (0,0),(1,0),(0,1): distances 1, 1, √2; teacher (0,0),(1,0),(2,0): 1, 2, 1
    s = _t([[[[0.0]], [[0.0]]], [[[1.0]], [[0.0]]], [[[0.0]], [[1.0]]]])  # 3×2×1×1
    t = _t([[[[0.0]], [[0.0]]], [[[1.0]], [[0.0]]], [[[2.0]], [[0.0]]]])
    r2 = math.sqrt(2)
    psi_s = [3 / (2 + r2), 3 / (2 + r2), 3 * r2 / (2 + r2)]  # pairs (0,1), (0,2), (1,2); mu = (2+√2)/3
    psi_t = [3 / 4, 3 / 2, 3 / 4]  # mu = 4/3
    dist_term = sum(_huber(a - b) for a, b in zip(psi_s, psi_t)) / 3
    # angles at vertex 0, 1, 2: student 0, 1/√2, 1/√2; teacher (collinear) 1, -1, 1
    angle_term = (_huber(0 - 1) + _huber(1 / r2 + 1) + _huber(1 / r2 - 1)) / 3
    assert angle_term == pytest.approx((0.5 + (1 / r2 + 0.5) + 0.5 * (1 - 1 / r2) ** 2) / 3)
    expected = 25 * dist_term + 50 * angle_term
    assert KDRelationLoss()([s], [t]).item() == pytest.approx(expected, rel=1e-10)
    # scaling the embeddings leaves both potentials unchanged
    assert KDRelationLoss()([s], [3.0 * s]).item() == pytest.approx(0.0, abs=1e-10)


# ----------------------------------------------------------------------------- loop references
@pytest.mark.parametrize('distance', ['l1', 'l2'])
@pytest.mark.parametrize('mode', ['regress', 'channel_mean'])
def test_fitnet_matches_reference(distance, mode):
    s = _rand(0, 2, 3, 3, 4)
    t = _rand(1, 2, 3 if mode == 'regress' else 5, 3, 4)
    loss = KDFitNetLoss(loss_weight=1.0, distance=distance, mode=mode)
    assert loss([_t(s)], [_t(t)]).item() == pytest.approx(ref_fitnet(s, t, distance, mode), rel=1e-10)


@pytest.mark.parametrize('mode', ['sr_l1', 'paper', 'code'])
@pytest.mark.parametrize('p', [2, 1])
def test_attention_matches_reference(mode, p):
    s = _rand(2, 2, 3, 3, 4)
    t = _rand(3, 2, 5, 3, 4)
    loss = KDAttentionLoss(loss_weight=1.0, mode=mode, p=p)
    assert loss([_t(s)], [_t(t)]).item() == pytest.approx(ref_attention(s, t, mode, p=p), rel=1e-10)


def test_attention_beta():
    s, t = _rand(4, 2, 3, 2, 2), _rand(5, 2, 4, 2, 2)
    loss = KDAttentionLoss(loss_weight=1.0, mode='paper', beta=10.0)
    assert loss([_t(s)], [_t(t)]).item() == pytest.approx(ref_attention(s, t, 'paper', beta=10.0), rel=1e-10)


def test_attention_default_weights():
    assert KDAttentionLoss().loss_weight == 10.0
    assert KDAttentionLoss(mode='paper').loss_weight == 1.0
    assert KDAttentionLoss(mode='code').beta == 1000.0


def test_affinity_matches_reference():
    s = _rand(6, 2, 3, 2, 3)
    t = _rand(7, 2, 5, 2, 3)
    assert KDAffinityLoss(loss_weight=1.0)([_t(s)], [_t(t)]).item() == pytest.approx(ref_affinity(s, t), rel=1e-10)


@pytest.mark.parametrize('embed', ['avg', 'flatten'])
def test_relation_matches_reference(embed):
    s = _rand(8, 4, 3, 2, 2)
    t = _rand(9, 4, 6, 2, 2)
    loss = KDRelationLoss(embed=embed)
    assert loss([_t(s)], [_t(t)]).item() == pytest.approx(ref_relation(s, t, embed=embed), rel=1e-10)
    loss2 = KDRelationLoss(lambda_d=2.0, lambda_a=0.0, embed=embed)
    assert loss2([_t(s)], [_t(t)]).item() == pytest.approx(
        ref_relation(s, t, lambda_d=2.0, embed=embed, use_angle=False), rel=1e-10)


def test_relation_batch2_skips_angle_and_warns_once(monkeypatch):
    warnings = []

    class _Logger:
        def warning(self, msg):
            warnings.append(msg)

    monkeypatch.setattr(fkd, 'get_root_logger', lambda *a, **k: _Logger())
    s = _rand(10, 2, 3, 2, 2)
    t = _rand(11, 2, 4, 2, 2)
    loss = KDRelationLoss()
    # with B = 2 the single pair's distance potential is 1 for both networks: the distance term is 0
    psi_d_s, psi_a_s = ref_rkd_potentials(s, 'avg')
    assert psi_d_s == pytest.approx([1.0, 1.0]) and psi_a_s == []
    expected = ref_relation(s, t, use_angle=False)
    assert expected == pytest.approx(0.0, abs=1e-12)
    fs = _t(s, requires_grad=True)
    value = loss([fs, fs], [_t(t), _t(t)])
    assert value.dim() == 0 and torch.isfinite(value)  # an empty angle mean would be NaN
    assert value.item() == pytest.approx(2 * expected, abs=1e-12)
    value.backward()
    assert torch.isfinite(fs.grad).all()
    loss([_t(s)], [_t(t)])
    assert len(warnings) == 1 and 'angle' in warnings[0]
    # the warning is per instance; a batch-3 call on a fresh instance does not warn
    KDRelationLoss()([_t(_rand(12, 3, 3, 2, 2))], [_t(_rand(13, 3, 4, 2, 2))])
    assert len(warnings) == 1


def test_relation_batch1_is_connected_zero():
    fs = torch.randn(1, 3, 2, 2, requires_grad=True)
    value = KDRelationLoss()([fs], [torch.randn(1, 4, 2, 2)])
    assert value.dim() == 0 and value.item() == 0.0
    value.backward()
    assert fs.grad is not None


def test_relation_zero_distances_no_nan():
    # identical embeddings for all samples (mu = 0) and duplicated samples (zero-distance pairs)
    fs = torch.ones(4, 3, 2, 2, requires_grad=True)
    ft = torch.randn(4, 5, 2, 2)
    ft[1] = ft[0]
    for embed in ('avg', 'flatten'):
        fs.grad = None
        value = KDRelationLoss(embed=embed)([fs], [ft])
        assert torch.isfinite(value)
        value.backward()
        assert torch.isfinite(fs.grad).all()
    fs2 = torch.randn(4, 3, 2, 2, requires_grad=True)
    value = KDRelationLoss()([fs2], [torch.zeros(4, 5, 2, 2)])
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(fs2.grad).all()


# ----------------------------------------------------------------------------- summation, weights, grads
def _all_losses():
    return [KDFitNetLoss(loss_weight=1.0), KDFitNetLoss(loss_weight=1.0, mode='channel_mean'),
            KDAttentionLoss(loss_weight=1.0), KDAttentionLoss(mode='paper'), KDAttentionLoss(mode='code'),
            KDAffinityLoss(loss_weight=1.0), KDRelationLoss()]


def _pairs(loss, seed=0):
    g = torch.Generator().manual_seed(seed)
    ct = 4 if loss.uses_adapter else 6
    fs = [torch.randn(3, 4, 5, 5, generator=g, dtype=torch.float64) for _ in range(3)]
    ft = [torch.randn(3, ct, 5, 5, generator=g, dtype=torch.float64) for _ in range(3)]
    return fs, ft


@pytest.mark.parametrize('loss', _all_losses(), ids=repr)
def test_multiple_pairs_sum_and_weight(loss):
    fs, ft = _pairs(loss)
    singles = [loss([a], [b]) for a, b in zip(fs, ft)]
    total = loss(fs, ft)
    assert total.dim() == 0
    assert total.item() == pytest.approx(sum(x.item() for x in singles), rel=1e-12)
    terms = loss.forward_terms(fs, ft)
    assert len(terms) == 3 and all(x.dim() == 0 for x in terms)
    assert [x.item() for x in terms] == pytest.approx([x.item() for x in singles], rel=1e-12)
    base_weight = loss.loss_weight
    loss.loss_weight = 2.5 * base_weight
    try:
        weighted = loss.forward_terms(fs, ft, weighted=True)
        assert [x.item() for x in weighted] == pytest.approx([2.5 * base_weight * x.item() for x in terms], rel=1e-12)
        assert loss(fs, ft).item() == pytest.approx(2.5 * total.item(), rel=1e-12)
        assert loss(fs, ft).item() == torch.stack(weighted).sum().item()
    finally:
        loss.loss_weight = base_weight


def test_loss_weight_constructor_scales():
    fs, ft = [torch.randn(2, 3, 4, 4)], [torch.randn(2, 5, 4, 4)]
    for cls in (KDAffinityLoss, KDRelationLoss):
        assert cls(loss_weight=3.0)(fs, ft).item() == pytest.approx(3.0 * cls(loss_weight=1.0)(fs, ft).item(), rel=1e-6)


@pytest.mark.parametrize('loss', _all_losses(), ids=repr)
def test_gradients_reach_student_not_teacher(loss):
    fs, ft = _pairs(loss, seed=1)
    fs = [f.clone().requires_grad_(True) for f in fs]
    ft = [f.clone().requires_grad_(True) for f in ft]
    value = loss(fs, ft)
    assert value.requires_grad and value.grad_fn is not None
    value.backward()
    for f in fs:
        assert f.grad is not None and f.grad.abs().sum() > 0
    for f in ft:
        assert f.grad is None


def test_gradients_reach_adapter_weights():
    bank = KDAdapterBank([(4, 6), (4, 4)], policy='auto').double()
    fs = [torch.randn(2, 4, 3, 3, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    ft = [torch.randn(2, 6, 3, 3, dtype=torch.float64, requires_grad=True),
          torch.randn(2, 4, 3, 3, dtype=torch.float64, requires_grad=True)]
    loss = KDFitNetLoss(distance='l2')
    loss(bank(fs), ft).backward()
    adapter = bank.adapters[0]
    assert adapter.conv.weight.grad.abs().sum() > 0 and adapter.conv.bias.grad.abs().sum() > 0
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in fs)
    assert all(f.grad is None for f in ft)


@pytest.mark.parametrize('loss', _all_losses(), ids=repr)
def test_zero_features_give_finite_gradients(loss):
    ct = 4 if loss.uses_adapter else 6
    for ft in (torch.zeros(3, ct, 4, 4), torch.randn(3, ct, 4, 4)):
        fs = torch.zeros(3, 4, 4, 4, requires_grad=True)
        value = loss([fs], [ft])
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(fs.grad).all()


# ----------------------------------------------------------------------------- errors and options
@pytest.mark.parametrize('loss', _all_losses(), ids=repr)
def test_shape_mismatch_errors(loss):
    ct = 4 if loss.uses_adapter else 6
    ok_s, ok_t = torch.randn(3, 4, 5, 5), torch.randn(3, ct, 5, 5)
    with pytest.raises(ValueError, match=r'pair 1.*\(3, 4, 5, 5\).*\(3, \d, 5, 6\)'):
        loss([ok_s, ok_s], [ok_t, torch.randn(3, ct, 5, 6)])
    with pytest.raises(ValueError, match=r'pair 0.*\(2, \d, 5, 5\)'):
        loss([ok_s], [torch.randn(2, ct, 5, 5)])
    with pytest.raises(ValueError, match='equal length'):
        loss([ok_s, ok_s], [ok_t])
    with pytest.raises(ValueError, match='4-D'):
        loss([ok_s.flatten(2)], [ok_t.flatten(2)])
    with pytest.raises(TypeError):
        loss(ok_s, ok_t)
    with pytest.raises(ValueError, match='empty'):
        loss([], [])


def test_fitnet_channel_mismatch_needs_adapter():
    with pytest.raises(ValueError, match=r'pair 0.*adapter.*auto.*conv1x1'):
        KDFitNetLoss()([torch.randn(2, 4, 3, 3)], [torch.randn(2, 6, 3, 3)])
    # channel_mean is width-agnostic
    KDFitNetLoss(mode='channel_mean')([torch.randn(2, 4, 3, 3)], [torch.randn(2, 6, 3, 3)])


def test_affinity_max_hw_error():
    loss = KDAffinityLoss(max_hw=16)
    loss([torch.randn(2, 3, 4, 4)], [torch.randn(2, 5, 4, 4)])  # N = 16 is allowed
    with pytest.raises(ValueError, match=r'pair 0.*max_hw=16.*GB') as info:
        loss([torch.randn(2, 3, 4, 5)], [torch.randn(2, 5, 4, 5)])
    gb = 2 * 20 * 20 * 4 / 1e9
    assert f'{gb:.2f} GB' in str(info.value)
    with pytest.raises(ValueError, match=r'max_hw=4096.*(\d+\.\d+) GB'):
        KDAffinityLoss(max_hw=4096)([torch.zeros(1, 1, 65, 64)], [torch.zeros(1, 1, 65, 64)])
    KDAffinityLoss(max_hw=None)([torch.randn(1, 2, 5, 5)], [torch.randn(1, 2, 5, 5)])


@pytest.mark.parametrize('cls, kwargs, key', [
    (KDFitNetLoss, {'mode': 'foo'}, 'regress, channel_mean'),
    (KDFitNetLoss, {'distance': 'l3'}, 'l1, l2'),
    (KDAttentionLoss, {'mode': 'foo'}, 'sr_l1, paper, code'),
    (KDAttentionLoss, {'p': 0}, 'p must'),
    (KDAttentionLoss, {'p': 0.5}, 'p must'),
    (KDAttentionLoss, {'mode': 'sr_l1', 'beta': 5.0}, 'beta'),
    (KDAffinityLoss, {'max_hw': 0}, 'max_hw'),
    (KDRelationLoss, {'embed': 'max'}, 'avg, flatten'),
    (KDRelationLoss, {'lambda_d': -1.0}, 'lambda_d'),
    (KDAffinityLoss, {'loss_weight': -1.0}, 'loss_weight'),
])
def test_option_validation(cls, kwargs, key):
    with pytest.raises(ValueError, match=key):
        cls(**kwargs)


def test_unknown_option_rejected():
    with pytest.raises(TypeError):
        build_loss({'type': 'KDRelationLoss', 'lambda_x': 1.0})


# ----------------------------------------------------------------------------- registry and build
def test_registry_contains_names():
    for name in LOSS_NAMES:
        assert name in LOSS_REGISTRY
    assert 'KDConvAdapter' in ARCH_REGISTRY


def test_build_loss():
    loss = build_loss({'type': 'KDAffinityLoss', 'loss_weight': 10.0})
    assert isinstance(loss, KDAffinityLoss) and loss.loss_weight == 10.0 and loss.max_hw == 65536
    loss = build_loss({'type': 'KDRelationLoss', 'loss_weight': 1.0, 'lambda_d': 25, 'lambda_a': 50,
                       'embed': 'flatten'})
    assert isinstance(loss, KDRelationLoss) and loss.embed == 'flatten'
    loss = build_loss({'type': 'KDAttentionLoss', 'mode': 'paper', 'p': 2, 'beta': 1000})
    assert loss.mode == 'paper' and loss.beta == 1000.0
    loss = build_loss({'type': 'KDFitNetLoss', 'loss_weight': 10.0, 'distance': 'l2', 'mode': 'regress'})
    assert loss.uses_adapter and loss.distance == 'l2'


# ----------------------------------------------------------------------------- adapters
def test_conv_adapter():
    net = build_network({'type': 'KDConvAdapter', 'num_in_ch': 4, 'num_out_ch': 6})
    assert isinstance(net, KDConvAdapter)
    assert net.conv.kernel_size == (1, 1) and net.conv.bias is not None
    x = torch.randn(2, 4, 3, 5)
    y = net(x)
    assert y.shape == (2, 6, 3, 5)
    expected = torch.einsum('oc,bchw->bohw', net.conv.weight[:, :, 0, 0], x) + net.conv.bias.view(1, 6, 1, 1)
    assert torch.allclose(y, expected, atol=1e-6)
    with pytest.raises(ValueError):
        KDConvAdapter(0, 4)


def test_adapter_bank_policies():
    pairs = [(64, 256), (64, 64), (60, 180)]
    auto = KDAdapterBank(pairs, policy='auto')
    assert auto.num_adapters == 2
    assert isinstance(auto.adapters[0], KDConvAdapter) and isinstance(auto.adapters[1], torch.nn.Identity)
    assert sorted(auto.state_dict()) == ['adapters.0.conv.bias', 'adapters.0.conv.weight',
                                         'adapters.2.conv.bias', 'adapters.2.conv.weight']
    forced = KDAdapterBank(pairs, policy='conv1x1')
    assert forced.num_adapters == 3
    same = KDAdapterBank([(8, 8), (4, 4)], policy='none')
    assert same.num_adapters == 0 and sum(p.numel() for p in same.parameters()) == 0
    feats = [torch.randn(2, 8, 3, 3), torch.randn(2, 4, 3, 3)]
    out = same(feats)
    assert all(a is b for a, b in zip(out, feats))
    with pytest.raises(ValueError, match=r'none.*pair 0: student 64 vs teacher 256'):
        KDAdapterBank(pairs, policy='none')
    with pytest.raises(ValueError, match='auto, conv1x1, none'):
        KDAdapterBank(pairs, policy='linear')


def test_adapter_bank_forward():
    bank = KDAdapterBank([(4, 6), (4, 4)], policy='auto')
    out = bank([torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)])
    assert [tuple(o.shape) for o in out] == [(2, 6, 3, 3), (2, 4, 3, 3)]
    with pytest.raises(ValueError, match='expected a list of 2'):
        bank([torch.randn(2, 4, 3, 3)])
    with pytest.raises(ValueError, match=r'pair 1.*B×4×H×W.*\(2, 5, 3, 3\)'):
        bank([torch.randn(2, 4, 3, 3), torch.randn(2, 5, 3, 3)])


# ----------------------------------------------------------------------------- legacy mapping
def test_legacy_feature_loss_opt():
    assert legacy_feature_loss_opt('SA', 10) == {'type': 'KDAffinityLoss', 'loss_weight': 10.0}
    assert legacy_feature_loss_opt('AT', 10.0) == {'type': 'KDAttentionLoss', 'mode': 'sr_l1', 'loss_weight': 10.0}
    opt = legacy_feature_loss_opt('Fitnet', 10.0)
    assert opt['type'] == 'KDFitNetLoss' and opt['mode'] == 'channel_mean' and opt['loss_weight'] == 10.0
    for name in ('SA', 'AT', 'Fitnet'):
        loss = build_loss(legacy_feature_loss_opt(name, 10.0))
        loss([torch.randn(2, 4, 3, 3)], [torch.randn(2, 6, 3, 3)])  # all legacy types are width-agnostic
    for name in ('FSP', 'CA', 'IA'):
        with pytest.raises(NotImplementedError, match=name):
            legacy_feature_loss_opt(name, 1.0)
    with pytest.raises(ValueError, match='SA, AT, Fitnet'):
        legacy_feature_loss_opt('sa', 1.0)
