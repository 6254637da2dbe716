import numpy as np
import pytest
import torch

from ecg_transfer.signals.augment import (
    AUGMENTATIONS,
    AmplitudeScale,
    AugmentationList,
    BaselineWander,
    GaussianNoise,
    RandomShift,
    TimeMask,
    default_augmentations,
    span_mask,
)

EACH = [AmplitudeScale(), BaselineWander(), GaussianNoise(), RandomShift(), TimeMask(max_fraction=0.3)]


def _windows(shape=(6, 1, 256)):
    t = torch.arange(shape[-1]) / 250.0
    phase = torch.linspace(0, 3, shape[0]).view(-1, *([1] * (len(shape) - 1)))
    return torch.sin(2 * np.pi * 1.3 * t + phase).expand(shape).contiguous()


def _gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("augmentation", EACH + [default_augmentations()], ids=lambda a: type(a).__name__ + getattr(a, "name", ""))
@pytest.mark.parametrize("shape", [(6, 1, 256), (6, 256)])
def test_keeps_shape_and_is_reproducible_from_its_seed(augmentation, shape):
    x = _windows(shape)
    first = augmentation(x, _gen(3))
    assert first.shape == x.shape and first.dtype == x.dtype
    assert torch.equal(first, augmentation(x, _gen(3)))
    assert not torch.equal(first, augmentation(x, _gen(4)))
    assert not torch.equal(first, x)
    assert torch.equal(x, _windows(shape))  # the input is not changed in place


def test_each_window_draws_its_own_parameters():
    x = torch.ones(8, 1, 64)
    scaled = AmplitudeScale(low=0.5, high=2.0)(x, _gen(0))[:, 0, 0]
    assert len(set(scaled.tolist())) == 8
    assert ((scaled >= 0.5) & (scaled <= 2.0)).all()


def test_p_zero_changes_nothing_and_p_half_changes_some_windows():
    x = _windows((40, 1, 128))
    assert torch.equal(GaussianNoise(p=0.0)(x, _gen(0)), x)
    changed = (GaussianNoise(p=0.5)(x, _gen(0)) != x).any(dim=-1).squeeze(1)
    assert 5 < int(changed.sum()) < 35


def test_shift_moves_the_signal_and_pads_with_zeros():
    x = torch.arange(1, 101, dtype=torch.float32).view(1, 1, 100).repeat(16, 1, 1)
    shifted = RandomShift(max_fraction=0.2)(x, _gen(1))
    for row in shifted[:, 0]:
        kept = row[row != 0]
        assert len(kept) >= 80
        assert torch.equal(torch.diff(kept), torch.ones(len(kept) - 1))  # contiguous, not resampled
        assert (row == 0).sum() == 100 - len(kept)


def test_time_mask_zeroes_one_span_at_most_max_fraction_long():
    x = torch.ones(32, 1, 200)
    masked = TimeMask(max_fraction=0.25)(x, _gen(2))[:, 0]
    for row in masked:
        zeros = torch.nonzero(row == 0).flatten()
        assert len(zeros) <= 50
        if len(zeros):
            assert zeros[-1] - zeros[0] + 1 == len(zeros)  # one contiguous span


def test_baseline_wander_adds_a_slow_sinusoid_of_bounded_amplitude():
    x = torch.zeros(16, 1, 2500)
    wander = BaselineWander(max_amplitude=0.4, min_hz=0.1, max_hz=0.3, fs=250.0)(x, _gen(5))[:, 0]
    assert wander.abs().max() <= 0.4 + 1e-6
    spectrum = torch.fft.rfft(wander, dim=-1).abs()
    peak_hz = spectrum.argmax(dim=-1).float() * 250.0 / 2500
    assert ((peak_hz >= 0.0) & (peak_hz <= 0.4)).all()


def test_span_mask_has_the_asked_spans():
    mask = span_mask((50, 1, 300), n_spans=3, span_length=10, generator=_gen(0))
    counts = mask.sum(dim=-1).flatten()
    assert mask.shape == (50, 1, 300) and mask.dtype == torch.bool
    assert ((counts >= 10) & (counts <= 30)).all() and (counts == 30).any()
    assert torch.equal(mask, span_mask((50, 1, 300), 3, 10, _gen(0)))


def test_list_from_params_and_its_description_round_trip():
    params = [{"name": "gaussian_noise", "max_std": 0.05, "p": 0.5}, {"name": "time_mask"}]
    built = AugmentationList.from_params(params)
    assert built.steps == (GaussianNoise(p=0.5, max_std=0.05), TimeMask())
    assert AugmentationList.from_params(built.describe()) == built
    assert {step["name"] for step in default_augmentations().describe()} == set(AUGMENTATIONS)


@pytest.mark.parametrize(
    "params, error, message",
    [([{"name": "time_warp"}], ValueError, "unknown augmentation 'time_warp'"),
     ([{"name": "gaussian_noise", "std": 1}], ValueError, r"augmentations\[0\]: unknown parameter"),
     ([{"name": "amplitude_scale", "low": 2, "high": 1}], ValueError, "low <= high"),
     ([{"name": "time_mask", "p": 1.5}], ValueError, "p must be"),
     ({"name": "time_mask"}, TypeError, "list of augmentations")],
)
def test_bad_parameters_are_named(params, error, message):
    with pytest.raises(error, match=message):
        AugmentationList.from_params(params)


# ---------------------------------------------------------------- windows of several leads


def _leads(n=8, channels=3, length=256):
    """(n, channels, length) windows whose leads are equal: what an augmentation does per lead
    shows as leads that differ afterwards."""
    return _windows((n, 1, length)).repeat(1, channels, 1)


@pytest.mark.parametrize("augmentation", EACH + [default_augmentations()], ids=lambda a: type(a).__name__ + getattr(a, "name", ""))
def test_windows_of_several_leads_keep_their_shape_and_repeat_from_the_seed(augmentation):
    x = _leads()
    first = augmentation(x, _gen(3))
    assert first.shape == (8, 3, 256) and first.dtype == x.dtype
    assert torch.equal(first, augmentation(x, _gen(3)))
    assert not torch.equal(first, augmentation(x, _gen(4)))
    assert torch.equal(x, _leads())


@pytest.mark.parametrize("augmentation", EACH, ids=lambda a: type(a).__name__)
def test_one_lead_draws_the_same_with_or_without_its_lead_axis(augmentation):
    # A (B, 1, L) batch draws exactly what the (B, L) batch drew: one-lead results are unchanged.
    x = _windows((6, 256))
    assert torch.equal(augmentation(x[:, None], _gen(5))[:, 0], augmentation(x, _gen(5)))


def test_the_shift_moves_all_leads_of_a_window_together_and_the_others_act_per_lead():
    x = _leads(n=16)
    shifted = RandomShift(max_fraction=0.2, p=0.5)(x, _gen(1))
    assert torch.equal(shifted[:, 0], shifted[:, 1]) and torch.equal(shifted[:, 0], shifted[:, 2])
    assert not torch.equal(shifted, x)  # some windows were shifted, all leads alike
    assert RandomShift.all_leads and not any(a.all_leads for a in EACH if not isinstance(a, RandomShift))
    for augmentation in (AmplitudeScale(), BaselineWander(), GaussianNoise(), TimeMask(max_fraction=0.3)):
        out = augmentation(x, _gen(2))
        differs = (out[:, 0] != out[:, 1]).any(dim=-1)
        assert differs.float().mean() > 0.5, type(augmentation).__name__  # each lead its own draw


def test_a_span_mask_of_several_leads_draws_per_lead():
    mask = span_mask((20, 3, 300), n_spans=2, span_length=10, generator=_gen(0))
    assert mask.shape == (20, 3, 300) and not torch.equal(mask[:, 0], mask[:, 1])
