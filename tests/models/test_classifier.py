import numpy as np
import pytest
import torch

from ecg_transfer.models.cae import ConvAutoencoder, Encoder
from ecg_transfer.models.classifier import FeatureClassifier, RhythmClassifier, build_classifier
from ecg_transfer.training.engine import TrainConfig, fit
from ecg_transfer.training.tasks import ClassificationTask
from tests.tiny import TINY_CAE

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = TINY_CAE


@pytest.fixture(scope="module")
def cae_encoder_state():
    with torch.random.fork_rng():
        torch.manual_seed(123)
        cae = ConvAutoencoder(TINY)
    # Non-default BN statistics, so a copy is told apart from a fresh init.
    for name, buffer in cae.encoder.named_buffers():
        if name.endswith("running_mean"):
            buffer.fill_(0.3)
    return cae.encoder.state_dict()


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_transfer_starts_from_the_cae_encoder_and_random_does_not(cae_encoder_state):
    transfer = build_classifier(TINY, 11, seed=0, init="pretrained", encoder_state=cae_encoder_state)
    frozen = build_classifier(TINY, 11, seed=0, init="pretrained", freeze=True, encoder_state=cae_encoder_state)
    random = build_classifier(TINY, 11, seed=0, init="random", encoder_state=cae_encoder_state)
    assert _same(transfer.encoder.state_dict(), cae_encoder_state)
    assert _same(frozen.encoder.state_dict(), cae_encoder_state)
    assert not torch.equal(random.encoder.blocks[0].conv1.weight, cae_encoder_state["blocks.0.conv1.weight"])


def test_head_init_identical_across_arms_and_seed_dependent(cae_encoder_state):
    heads = [build_classifier(TINY, 11, seed=4, init=init, freeze=freeze, encoder_state=cae_encoder_state).head.state_dict()
             for init, freeze in (("random", False), ("pretrained", False), ("pretrained", True), ("random", True))]
    assert _same(heads[0], heads[1]) and _same(heads[0], heads[2])
    other_seed = build_classifier(TINY, 11, seed=5, init="random").head.state_dict()
    assert not _same(heads[0], other_seed)
    # Same seed, same random-arm encoder: the build is reproducible.
    again = build_classifier(TINY, 11, seed=4, init="random")
    first = build_classifier(TINY, 11, seed=4, init="random")
    assert _same(again.state_dict(), first.state_dict())


def test_frozen_encoder_unchanged_by_training_while_head_learns(cae_encoder_state):
    model = build_classifier(TINY, 3, seed=0, init="pretrained", freeze=True, encoder_state=cae_encoder_state)
    assert all(not p.requires_grad for p in model.encoder.parameters())
    model.train()
    assert not model.encoder.training and model.head.training
    encoder_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    head_before = {k: v.clone() for k, v in model.head.state_dict().items()}
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 256)).astype(np.float32)
    y = rng.integers(0, 3, 16)
    fit(model, ClassificationTask(("a", "b", "c")), x, y, {}, TrainConfig(epochs=1, batch_size=8), progress=False)
    assert _same(model.encoder.state_dict(), encoder_before)  # weights and BN running stats
    assert not _same(model.head.state_dict(), head_before)


def test_fine_tuned_transfer_encoder_does_change(cae_encoder_state):
    model = build_classifier(TINY, 3, seed=0, init="pretrained", encoder_state=cae_encoder_state)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 256)).astype(np.float32)
    fit(model, ClassificationTask(("a", "b", "c")), x, rng.integers(0, 3, 16), {}, TrainConfig(epochs=1, batch_size=8),
        progress=False)
    assert not _same(model.encoder.state_dict(), cae_encoder_state)


def test_mismatched_encoder_state_names_keys_and_shapes(cae_encoder_state):
    state = dict(cae_encoder_state)
    state.pop("to_code.bias")
    state["extra.weight"] = torch.zeros(1)
    state["to_code.weight"] = torch.zeros(5, 5)
    with pytest.raises(ValueError) as error:
        build_classifier(TINY, 11, seed=0, init="pretrained", encoder_state=state)
    text = str(error.value)
    assert "to_code.bias" in text and "extra.weight" in text and "to_code.weight: expected (60, 64), got (5, 5)" in text


def test_pretrained_without_state_and_unknown_init_raise():
    with pytest.raises(ValueError, match="needs the pretrained"):
        build_classifier(TINY, 11, seed=0, init="pretrained")
    with pytest.raises(ValueError, match="init must be one of"):
        build_classifier(TINY, 11, seed=0, init="imagenet")


def test_output_shapes():
    assert RhythmClassifier(TINY, n_classes=11)(torch.randn(2, 1, 256)).shape == (2, 11)
    assert FeatureClassifier(1024, 11, hidden=32)(torch.randn(4, 1024)).shape == (4, 11)
    linear = FeatureClassifier(10, 3, hidden=0, dropout=0.0)
    assert sum(p.numel() for p in linear.parameters()) == 10 * 3 + 3


def test_the_random_arm_starts_as_the_cae_encoder_started_under_its_own_seed():
    """The CAE's encoder is built with zero-init residual branches (last BN gamma = 0); a random
    arm that started with every branch on would differ from transfer in more than pretraining."""
    assert TINY.zero_init_residual
    model = build_classifier(TINY, 11, seed=3, init="random")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3 * 2)  # the encoder's own seed stream
        fresh = Encoder(TINY)
    built, expected = model.encoder.state_dict(), fresh.state_dict()
    assert [key for key in built if not torch.equal(built[key], expected[key])] == []
    for block in model.encoder.blocks:
        assert torch.count_nonzero(block.bn2.weight) == 0
        assert torch.all(block.bn1.weight == 1)
    other = build_classifier(TINY, 11, seed=4, init="random").encoder.state_dict()
    assert not torch.equal(other["blocks.0.conv1.weight"], built["blocks.0.conv1.weight"])


def test_freeze_n_keeps_the_first_n_blocks_and_trains_the_rest(cae_encoder_state):
    model = build_classifier(TINY, 3, seed=0, init="pretrained", freeze=2, encoder_state=cae_encoder_state)
    blocks = model.encoder.blocks
    assert all(not p.requires_grad for block in blocks[:2] for p in block.parameters())
    assert all(p.requires_grad for block in blocks[2:] for p in block.parameters())
    model.train()
    assert not any(block.training for block in blocks[:2]) and all(block.training for block in blocks[2:])
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 256)).astype(np.float32)
    fit(model, ClassificationTask(("a", "b", "c")), x, rng.integers(0, 3, 16), {},
        TrainConfig(epochs=1, batch_size=8), progress=False)
    after = model.encoder.state_dict()
    frozen = [k for k in before if k.startswith(("blocks.0.", "blocks.1."))]
    trained = [k for k in before if k.startswith("blocks.2.") and k.endswith("weight")]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)  # weights and BN statistics
    assert trained and not all(torch.equal(before[k], after[k]) for k in trained)


def test_freeze_n_beyond_the_encoder_is_refused():
    with pytest.raises(ValueError, match=f"freeze: {TINY.n_blocks + 1} residual blocks asked"):
        build_classifier(TINY, 3, seed=0, freeze=TINY.n_blocks + 1)
