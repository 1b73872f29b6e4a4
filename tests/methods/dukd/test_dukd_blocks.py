"""Fast unit tests of DUKD's building blocks (dukd.md §2, §5, §12 items 1-3)."""
import kdsr_plugins  # noqa: F401  (shims + basicsr first)

import pytest
import torch
from basicsr.utils.matlab_functions import imresize

from kdsr_plugins.methods.dukd.invertible_aug import (
    OPS,
    AugPlan,
    InvertibleAugmentation,
    all_subsets,
    consistent_forward,
    rot180,
)
from kdsr_plugins.methods.dukd.options import DUKD_OPT_KEYS, DUKDOptions
from kdsr_plugins.methods.dukd.upcycling import (
    check_training_pair,
    imresize_torch,
    zoom_in_positions,
    zoom_in_samples,
    zoom_out_samples,
    zoom_out_size,
)
from kdsr_testutils import reference_augment

SUBSETS = list(all_subsets())
OFFICIAL_FAILS = {'ht', 'vt', 'iht', 'ivt'}




# ---------------------------------------------------------------------------------------------
# Invertible augmentation
# ---------------------------------------------------------------------------------------------

def test_sixteen_subsets():
    assert len(SUBSETS) == 16 and len(set(SUBSETS)) == 16
    assert SUBSETS[0] == '' and SUBSETS[-1] == 'ihvt'


@pytest.mark.parametrize('subset', SUBSETS)
def test_exact_inverse_square(subset):
    aug = InvertibleAugmentation(p=0.3, inverse='exact')
    x = torch.rand(2, 3, 8, 8)
    plan = AugPlan.from_subsets([subset, subset])
    fx = aug.apply(x, plan)
    assert torch.equal(fx, reference_augment(x, subset))
    assert torch.equal(aug.invert(fx, plan), x)
    if subset:
        assert not torch.equal(fx, x)


@pytest.mark.parametrize('subset', SUBSETS)
def test_exact_inverse_non_square(subset):
    aug = InvertibleAugmentation(p=0.3)
    x = torch.rand(2, 3, 6, 10)
    plan = AugPlan.from_subsets([subset, ''])
    if 't' in subset:
        with pytest.raises(ValueError, match='square'):
            aug.apply(x, plan)
        return
    assert torch.equal(aug.invert(aug.apply(x, plan), plan), x)


def test_exact_inverse_all_subsets_in_one_batch_and_upscaled_output():
    """Per-sample plan with all 16 subsets; inverse applied to a ×2 'student output'."""
    aug = InvertibleAugmentation()
    x = torch.rand(16, 3, 8, 8)
    plan = AugPlan.from_subsets(SUBSETS)
    fx = aug.apply(x, plan)
    for k, subset in enumerate(SUBSETS):
        assert torch.equal(fx[k:k + 1], reference_augment(x[k:k + 1], subset)), subset
    assert torch.equal(aug.invert(fx, plan), x)

    def up2(t):  # equivariant toy "student" (nearest ×2 commutes with flips/transpose/inversion)
        return torch.nn.functional.interpolate(t, scale_factor=2, mode='nearest')

    out = consistent_forward(up2, x, aug, plan=plan)
    assert torch.equal(out, up2(x))


@pytest.mark.parametrize('subset', SUBSETS)
def test_official_inverse_fails_exactly_on_four_subsets_with_rot180(subset):
    aug = InvertibleAugmentation(inverse='official')
    x = torch.rand(1, 3, 8, 8)
    plan = AugPlan.from_subsets([subset])
    back = aug.invert(aug.apply(x, plan), plan)
    if subset in OFFICIAL_FAILS:
        assert not torch.equal(back, x)
        assert torch.equal(back, rot180(x))
    else:
        assert torch.equal(back, x)


def test_official_failure_rate():
    """P(failing subset) at p = 0.3 is 0.3 * 2 * 0.3 * 0.7 = 12.6 %."""
    p = 0.3
    rate = sum(p ** len(s) * (1 - p) ** (4 - len(s)) for s in OFFICIAL_FAILS)
    assert rate == pytest.approx(0.126)


def test_sampling_per_sample_and_probability():
    aug = InvertibleAugmentation(p=0.3)
    g = torch.Generator().manual_seed(0)
    plan = aug.sample(20000, generator=g)
    assert plan.mask.shape == (20000, 4) and plan.mask.dtype == torch.bool
    freq = plan.mask.float().mean(0)
    assert torch.allclose(freq, torch.full((4,), 0.3), atol=0.015)
    assert len(set(plan.subsets())) == 16  # samples draw independently
    none = (~plan.mask.any(1)).float().mean().item()
    assert none == pytest.approx(0.7 ** 4, abs=0.015)
    # reproducible with the same generator
    plan2 = aug.sample(20000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(plan.mask, plan2.mask)


def test_per_sample_application_is_independent():
    aug = InvertibleAugmentation(p=0.5)
    x = torch.rand(4, 3, 8, 8)
    plan = AugPlan.from_subsets(['h', '', 'it', 'v'])
    fx = aug.apply(x, plan)
    assert torch.equal(fx[0], x[0].flip(-2))
    assert torch.equal(fx[1], x[1])
    assert torch.equal(fx[2], (1 - x[2]).transpose(-2, -1))
    assert torch.equal(fx[3], x[3].flip(-1))


def test_single_selected_sample_and_empty_plan():
    """One selected sample (the reference's squeeze bug case) and an all-off plan."""
    aug = InvertibleAugmentation(p=0.0)
    x = torch.rand(3, 3, 8, 8)
    plan = aug.sample(3)
    assert not plan.any()
    assert aug.apply(x, plan) is x and aug.invert(x, plan) is x
    plan = AugPlan.from_subsets(['', 'hv', ''])
    assert torch.equal(aug.invert(aug.apply(x, plan), plan), x)
    one = AugPlan.from_subsets(['t'])
    assert torch.equal(aug.apply(x[:1], one), x[:1].transpose(-2, -1))


def test_p_one_selects_all():
    plan = InvertibleAugmentation(p=1.0).sample(5)
    assert bool(plan.mask.all())


def test_gradient_flows_through_augmentation():
    aug = InvertibleAugmentation()
    x = torch.rand(4, 3, 8, 8, requires_grad=True)
    plan = AugPlan.from_subsets(['iht', '', 'v', 'ihvt'])
    aug.invert(aug.apply(x, plan) * 2, plan).sum().backward()
    assert torch.allclose(x.grad, torch.full_like(x, 2.0))


def test_augmentation_errors():
    with pytest.raises(ValueError):
        InvertibleAugmentation(p=1.5)
    with pytest.raises(ValueError):
        InvertibleAugmentation(inverse='wrong')
    with pytest.raises(ValueError, match='valid ops'):
        AugPlan.from_subsets(['x'])
    aug = InvertibleAugmentation()
    with pytest.raises(ValueError, match='samples'):
        aug.apply(torch.rand(2, 3, 4, 4), AugPlan.from_subsets(['h']))
    with pytest.raises(ValueError):
        AugPlan(torch.zeros(2, 3, dtype=torch.bool))
    assert OPS == ('i', 'h', 'v', 't')


# ---------------------------------------------------------------------------------------------
# Upcycling
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('scale', [2, 3, 4])
def test_zoom_in_grid_tiles_are_exact_gt_slices(scale):
    p, b = 12, 3
    gt = torch.rand(b, 3, scale * p, scale * p)
    for n in range(1, scale * scale + 1):
        g = torch.Generator().manual_seed(n)
        z, pos = zoom_in_samples(gt, scale, n, generator=g)
        assert z.shape == (b * n, 3, p, p)
        assert len(pos) == n and len(set(pos)) == n  # distinct cells
        for k, (top, left) in enumerate(pos):
            assert top % p == 0 and left % p == 0 and 0 <= top < scale * p and 0 <= left < scale * p
            # tile-major order; shared by the whole batch
            assert torch.equal(z[k * b:(k + 1) * b], gt[:, :, top:top + p, left:left + p])
    # n = s*s covers every cell exactly once
    _, pos = zoom_in_samples(gt, scale, scale * scale)
    assert sorted(pos) == [(r * p, c * p) for r in range(scale) for c in range(scale)]


def test_zoom_in_uniform_cells():
    counts = torch.zeros(16)
    g = torch.Generator().manual_seed(0)
    for _ in range(4000):
        (top, left), = zoom_in_positions(4, 48, 1, generator=g)
        counts[(top // 48) * 4 + left // 48] += 1
    assert counts.min() > 180 and counts.max() < 320  # expected 250 each


def test_zoom_in_random_crops():
    gt = torch.rand(2, 3, 96, 96)
    z, pos = zoom_in_samples(gt, 2, 3, crop='random', generator=torch.Generator().manual_seed(1))
    assert z.shape == (6, 3, 48, 48)
    for k, (top, left) in enumerate(pos):
        assert 0 <= top <= 48 and 0 <= left <= 48
        assert torch.equal(z[2 * k:2 * k + 2], gt[:, :, top:top + 48, left:left + 48])


def test_zoom_in_errors():
    with pytest.raises(ValueError, match='square'):
        zoom_in_samples(torch.rand(1, 3, 96, 48), 2)
    with pytest.raises(ValueError, match='divisible'):
        zoom_in_samples(torch.rand(1, 3, 100, 100), 3)
    with pytest.raises(ValueError, match='exceeds'):
        zoom_in_samples(torch.rand(1, 3, 96, 96), 2, n=5)
    with pytest.raises(ValueError):
        zoom_in_samples(torch.rand(1, 3, 96, 96), 2, n=0)
    with pytest.raises(ValueError, match='crop'):
        zoom_in_samples(torch.rand(1, 3, 96, 96), 2, crop='adaptive')
    with pytest.raises(ValueError):
        zoom_in_samples(torch.rand(3, 96, 96), 2)


@pytest.mark.parametrize('scale,size', [(2, 24), (3, 16), (4, 12)])
def test_zoom_out_sizes_and_values(scale, size):
    lq = torch.rand(2, 3, 48, 48)
    out = zoom_out_samples(lq, scale)
    assert out.shape == (2, 3, size, size) and zoom_out_size(48, scale) == size
    for b in range(2):
        assert torch.equal(out[b], imresize(lq[b], 1 / scale))
    port = zoom_out_samples(lq, scale, resize='torch')
    assert port.shape == out.shape and port.dtype == lq.dtype
    assert (port - out).abs().max().item() < 1e-5


def test_zoom_out_not_clamped():
    """A step edge makes bicubic over/undershoot; the values must not be clamped to [0, 1]."""
    lq = torch.zeros(1, 3, 48, 48)
    lq[..., 24:] = 1.0
    for scale in (2, 3, 4):
        for resize in ('matlab', 'torch'):
            out = zoom_out_samples(lq, scale, resize=resize)
            assert out.min().item() < -0.01 and out.max().item() > 1.01


def test_imresize_torch_matches_on_other_sizes():
    x = torch.rand(3, 30, 30) * 1.4 - 0.2
    for s in (2, 3):
        assert (imresize_torch(x, 1 / s) - imresize(x, 1 / s)).abs().max().item() < 1e-5


def test_zoom_out_errors():
    with pytest.raises(ValueError, match='divisible'):
        zoom_out_samples(torch.rand(1, 3, 50, 50), 4)
    with pytest.raises(ValueError, match='square'):
        zoom_out_samples(torch.rand(1, 3, 48, 24), 2)
    with pytest.raises(ValueError, match='resize'):
        zoom_out_samples(torch.rand(1, 3, 48, 48), 2, resize='pil')


def test_check_training_pair():
    assert check_training_pair(torch.rand(2, 3, 48, 48), torch.rand(2, 3, 144, 144), 3) == 48
    with pytest.raises(ValueError, match='scale'):
        check_training_pair(torch.rand(2, 3, 48, 48), torch.rand(2, 3, 96, 96), 3)
    with pytest.raises(ValueError, match='square'):
        check_training_pair(torch.rand(2, 3, 48, 40), torch.rand(2, 3, 96, 80), 2)
    with pytest.raises(ValueError, match='batch'):
        check_training_pair(torch.rand(2, 3, 48, 48), torch.rand(1, 3, 96, 96), 2)


# ---------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------

def test_options_defaults():
    o = DUKDOptions.from_dict(None)
    assert (o.n_gt_sub, o.zoom_out, o.update_mode, o.lc_inverse, o.lc_on, o.zoom_in_crop,
            o.zoom_out_resize, o.noisy_prob) == (1, False, 'single_step', 'exact', ('zoom_in',), 'grid', 'matlab',
                                                 None)
    assert not o.lc_enabled and o.make_augmentation() is None
    assert DUKDOptions.from_dict({}) == o


def test_options_unknown_key_lists_valid_keys():
    with pytest.raises(ValueError) as err:
        DUKDOptions.from_dict({'n_gt_sub': [1], 'zoomout': True})
    msg = str(err.value)
    assert 'zoomout' in msg
    for key in DUKD_OPT_KEYS:
        assert key in msg
    with pytest.raises(ValueError, match='prob'):
        DUKDOptions.from_dict({}, noisy={'p': 0.3})


def test_options_values():
    o = DUKDOptions.from_dict({'n_gt_sub': [2, 5], 'zoom_out': True, 'update_mode': 'official_two_step',
                               'lc_inverse': 'official', 'lc_on': ['original', 'zoom_in', 'zoom_in'],
                               'zoom_in_crop': 'random', 'zoom_out_resize': 'torch'}, noisy={'prob': 0.3})
    assert o.n_gt_sub == 2 and o.zoom_out and o.update_mode == 'official_two_step'
    assert o.lc_on == ('zoom_in', 'original')
    assert o.lc_applies('zoom_in') and o.lc_applies('original') and not o.lc_applies('zoom_out')
    aug = o.make_augmentation()
    assert aug.p == 0.3 and aug.inverse == 'official'
    assert DUKDOptions.from_dict({'n_gt_sub': 3}).n_gt_sub == 3
    assert DUKDOptions.from_dict({'update_mode': 'joint'}).update_mode == 'single_step'
    for bad in ({'n_gt_sub': 0}, {'n_gt_sub': []}, {'n_gt_sub': True}, {'zoom_out': 'yes'},
                {'update_mode': 'two_step'}, {'lc_inverse': 'approx'}, {'lc_on': ['teacher']},
                {'zoom_in_crop': 'adapted'}, {'zoom_out_resize': 'pil'}):
        with pytest.raises(ValueError):
            DUKDOptions.from_dict(bad)


def test_options_noisy_block():
    assert DUKDOptions.from_dict({}, noisy={}).noisy_prob == 0.3  # present without prob
    zero = DUKDOptions.from_dict({}, noisy={'prob': 0})
    assert zero.noisy_prob == 0.0 and zero.lc_enabled and zero.make_augmentation().p == 0.0
    with pytest.raises(ValueError):
        DUKDOptions.from_dict({}, noisy={'prob': 1.2})


def test_options_from_train_opt_public_configs():
    edsr_x2 = {'pixel_opt': {'type': 'L1Loss', 'loss_weight': 5.0, 'reduction': 'mean'},
               'kd_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'},
               'dukd_opt': {'n_gt_sub': [2], 'zoom_out': True}, 'noisy': {'prob': 0.3},
               'optim_g': {'type': 'Adam'}}  # other train keys are not DUKD's business
    o = DUKDOptions.from_train_opt(edsr_x2)
    assert (o.w_pix, o.w_kd, o.n_gt_sub, o.zoom_out, o.noisy_prob) == (5.0, 1.0, 2, True, 0.3)
    rcan_x2 = {'pixel_opt': {'loss_weight': 1.0}, 'kd_opt': {'loss_weight': 1.0}, 'dukd_opt': {'n_gt_sub': [1]}}
    o = DUKDOptions.from_train_opt(rcan_x2)
    assert not o.lc_enabled and not o.zoom_out
    with pytest.raises(ValueError, match='kd_opt'):
        DUKDOptions.from_train_opt({'pixel_opt': {'loss_weight': 1.0}})
    assert isinstance(o.to_dict()['lc_on'], list)
    notes = DUKDOptions.from_dict({'lc_on': ['zoom_out']}).notes()
    assert any('zoom_out is false' in n for n in notes)
