from dataclasses import replace

import pytest
import torch

from ecg_transfer.models.cae import ConvAutoencoder, Encoder
from ecg_transfer.models.pretext import (
    ContrastiveModel,
    MaskedAutoencoder,
    MaskingConfig,
    ProjectionHead,
)
from ecg_transfer.signals.augment import AugmentationList, GaussianNoise
from tests.tiny import TINY_CAE

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _x(n=6, length=256, seed=0):
    return torch.randn(n, 1, length, generator=torch.Generator().manual_seed(seed))


def _same_layout(a: dict, b: dict) -> bool:
    return list(a) == list(b) and all(a[k].shape == b[k].shape for k in a)


@pytest.mark.parametrize("build", [lambda: ContrastiveModel(TINY_CAE), lambda: ContrastiveModel(TINY_CAE, paired=True),
                                   lambda: MaskedAutoencoder(TINY_CAE)])
def test_every_pretext_model_trains_the_caes_encoder(build):
    model = build()
    assert type(model.encoder) is Encoder
    cae_encoder = ConvAutoencoder(TINY_CAE).encoder
    assert _same_layout(model.encoder.state_dict(), cae_encoder.state_dict())
    cae_encoder.load_state_dict(model.encoder.state_dict())  # strict: an arm loads it as the CAE's


def test_contrastive_model_returns_two_projected_views():
    model = ContrastiveModel(TINY_CAE, projection_features=16)
    out = model(_x())
    assert out.shape == (6, 2, 16)
    assert not torch.equal(out[:, 0], out[:, 1])  # two different augmentations


def test_paired_model_augments_each_window_of_the_pair():
    # Without augmentation randomness (noise of std 0), view b is window b's projection.
    quiet = AugmentationList((GaussianNoise(max_std=0.0),))
    model = ContrastiveModel(TINY_CAE, augmentations=quiet, paired=True).eval()
    first, second = _x(seed=1), _x(seed=2)
    out = model(torch.cat([first, second], dim=-1))
    single = ContrastiveModel(TINY_CAE, augmentations=quiet).eval()
    single.load_state_dict(model.state_dict())
    assert torch.allclose(out[:, 0], single(first)[:, 0], atol=1e-6)
    assert torch.allclose(out[:, 1], single(second)[:, 0], atol=1e-6)
    with pytest.raises(ValueError, match=r"expects \(batch, 1, 512\)"):
        model(first)


def test_eval_views_repeat_after_each_switch_to_eval_and_training_views_follow_the_seed():
    model = ContrastiveModel(TINY_CAE).eval()
    x = _x()
    first = model(x)
    assert not torch.equal(first, model(x))  # the generator moves on within one eval pass
    model.train().eval()
    assert torch.equal(first, model(x))  # and starts again at every switch to eval
    model.train()
    torch.manual_seed(7)
    a = model(x)
    torch.manual_seed(7)
    assert torch.equal(a, model(x))


def test_masked_autoencoder_hides_the_masked_samples_from_the_cae():
    model = MaskedAutoencoder(TINY_CAE, MaskingConfig(mask_ratio=0.25, span_length=16)).eval()
    seen = []
    model.autoencoder.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    x = _x() + 5.0  # no sample is zero before masking
    out = model(x)
    mask = out[:, 1:]
    assert out.shape == (6, 2, 256)
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(seen[0] == 0, mask > 0)
    assert model.n_spans == 4 and (mask.sum(dim=-1) <= 64).all() and (mask.sum(dim=-1) >= 16).all()


def test_bad_masking_and_head_settings_raise():
    with pytest.raises(ValueError, match="mask_ratio"):
        MaskingConfig(mask_ratio=1.0)
    with pytest.raises(ValueError, match="span_length 300 exceeds the window length 256"):
        MaskedAutoencoder(TINY_CAE, MaskingConfig(span_length=300))
    with pytest.raises(ValueError, match="feature counts"):
        ProjectionHead(60, 0, 32)


# ---------------------------------------------------------------- windows of several leads

THREE = replace(TINY_CAE, in_channels=3)


def _leads(n=6, seed=0):
    return torch.randn(n, 3, 256, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("paired", [False, True])
def test_the_contrastive_model_reads_windows_of_the_configured_leads(paired):
    model = ContrastiveModel(THREE, paired=paired, projection_features=16)
    x = _leads() if not paired else torch.cat([_leads(seed=1), _leads(seed=2)], dim=-1)
    assert model(x).shape == (6, 2, 16)
    assert model.encoder.blocks[0].conv1.in_channels == 3
    ConvAutoencoder(THREE).encoder.load_state_dict(model.encoder.state_dict())  # the 3-lead CAE's encoder
    with pytest.raises(ValueError, match=r"expects \(batch, 3, (256|512)\) \(in_channels = the windows' leads\)"):
        model(x[:, :1])


def test_the_masked_autoencoder_hides_the_same_spans_in_every_lead():
    model = MaskedAutoencoder(THREE, MaskingConfig(mask_ratio=0.25, span_length=16)).eval()
    seen = []
    model.autoencoder.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    x = _leads() + 5.0  # no sample is zero before masking
    out = model(x)
    assert out.shape == (6, 6, 256)
    reconstruction, mask = out[:, :3], out[:, 3:]
    assert reconstruction.shape == x.shape
    assert torch.equal(mask[:, 0], mask[:, 1]) and torch.equal(mask[:, 0], mask[:, 2])
    assert torch.equal(seen[0] == 0, mask > 0)  # every lead is hidden at the masked samples
    assert (mask.sum(dim=-1) >= 16).all()
    with pytest.raises(ValueError, match=r"MaskedAutoencoder expects \(batch, 3, 256\)"):
        model(x[:, :2])


def test_one_lead_masks_are_those_of_a_lead_axis_of_one():
    # The mask of a one-lead window is drawn as before several leads existed (shape (B, 1, L)).
    from ecg_transfer.signals.augment import span_mask

    model = MaskedAutoencoder(TINY_CAE, MaskingConfig(mask_ratio=0.25, span_length=16)).eval()
    out = model(_x())
    expected = span_mask((6, 1, 256), model.n_spans, 16, torch.Generator().manual_seed(model.eval_seed))
    assert torch.equal(out[:, 1:] > 0, expected)
