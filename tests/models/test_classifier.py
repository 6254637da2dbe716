import numpy as np
import pytest
import torch

from ecg_transfer.models.cae import CaeConfig, ConvAutoencoder, Encoder
from ecg_transfer.models.classifier import (
    FeatureClassifier,
    FrozenEncoderClassifier,
    RhythmClassifier,
    build_classifier,
)
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
    arms = (("random", False, "cae"), ("pretrained", False, "cae"), ("pretrained", True, "cae"), ("random", True, "standard"))
    heads = [build_classifier(TINY, 11, seed=4, init=init, freeze=freeze, encoder_state=cae_encoder_state,
                              init_scheme=scheme).head.layers.state_dict()
             for init, freeze, scheme in arms]  # frozen heads add their input scaling's buffers
    assert all(_same(heads[0], head) for head in heads[1:])
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
    fit(model, ClassificationTask(("a", "b", "c")), x, y, {"val": (x, y)}, TrainConfig(epochs=1, batch_size=8),
        progress=False)
    assert _same(model.encoder.state_dict(), encoder_before)  # weights and BN running stats
    assert not _same(model.head.state_dict(), head_before)


def test_fine_tuned_transfer_encoder_does_change(cae_encoder_state):
    model = build_classifier(TINY, 3, seed=0, init="pretrained", encoder_state=cae_encoder_state)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 256)).astype(np.float32)
    y = rng.integers(0, 3, 16)
    fit(model, ClassificationTask(("a", "b", "c")), x, y, {"val": (x, y)}, TrainConfig(epochs=1, batch_size=8),
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


# ---------------------------------------------------------------- the frozen control (issue 16)

def _ecg_like_windows(n: int, length: int = 2048, fs: float = 250.0, seed: int = 0) -> np.ndarray:
    """Bundled-like windows: beats (P, QRS, T as Gaussians) at 50-150 bpm plus noise, z-scored
    per window as preprocessing does."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) / fs
    windows = np.empty((n, length), dtype=np.float32)
    for row in range(n):
        rr = 60.0 / rng.uniform(50, 150)
        beats = np.arange(rng.uniform(0, rr), t[-1], rr) + rng.normal(0, 0.02 * rr, size=1)
        signal = rng.normal(0, 0.05, size=length)
        for beat in beats:
            for offset, width, height in ((-0.16, 0.025, 0.15), (0.0, 0.01, 1.0), (0.25, 0.04, 0.3)):
                signal += height * np.exp(-0.5 * ((t - beat - offset) / width) ** 2)
        windows[row] = (signal - signal.mean()) / signal.std()
    return windows


def _code(model, windows: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return model.encoder(torch.from_numpy(windows).unsqueeze(1))


def _affine_deviation(model, a: np.ndarray, b: np.ndarray) -> float:
    """max |f(0.3 a + 0.7 b) - 0.3 f(a) - 0.7 f(b)| relative to max |f|: 0 for an affine map."""
    mixed = (0.3 * a + 0.7 * b).astype(np.float32)
    fa, fb, fm = _code(model, a), _code(model, b), _code(model, mixed)
    return float((fm - 0.3 * fa - 0.7 * fb).abs().max() / fm.abs().max())


def test_a_frozen_random_encoder_under_the_cae_scheme_is_affine_and_is_refused():
    """The bug the control fixes: zero-init residual branches frozen at 0 leave an affine map
    with a near-zero code. Building that as a frozen arm is an error naming the fix."""
    cfg = CaeConfig()
    windows = _ecg_like_windows(24)
    degenerate = build_classifier(cfg, 4, seed=0, init="random")  # the CAE scheme, as fine-tuning starts
    degenerate.eval()
    assert _affine_deviation(degenerate, windows[:12], windows[12:]) < 1e-5
    assert float(_code(degenerate, windows).std()) < 0.5
    with pytest.raises(ValueError, match="init_scheme 'standard'"):
        build_classifier(cfg, 4, seed=0, init="random", freeze=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_frozen_random_control_is_nonlinear_with_a_code_of_real_scale(seed):
    cfg = CaeConfig()  # the bundled study's encoder
    windows = _ecg_like_windows(24, seed=seed)
    control = build_classifier(cfg, 4, seed=seed, init="random", freeze=True, init_scheme="standard")
    assert isinstance(control, FrozenEncoderClassifier)
    sd = float(_code(control, windows).std())
    assert 1.0 < sd < 1e3, sd  # the CAE scheme's frozen code: SD ~0.1
    assert _affine_deviation(control, windows[:12], windows[12:]) > 0.05
    for block in control.encoder.blocks:
        assert torch.all(block.bn1.weight == 1) and torch.all(block.bn2.weight == 1)
        assert torch.all(block.bn2.bias == 0)


def test_the_standard_scheme_is_seeded_and_leaves_the_head_as_every_arm_has_it():
    a = build_classifier(TINY, 3, seed=5, init="random", freeze=True, init_scheme="standard")
    b = build_classifier(TINY, 3, seed=5, init="random", freeze=True, init_scheme="standard")
    c = build_classifier(TINY, 3, seed=6, init="random", freeze=True, init_scheme="standard")
    fine_tuned = build_classifier(TINY, 3, seed=5, init="random")
    assert _same(a.state_dict(), b.state_dict())
    assert not torch.equal(a.encoder.blocks[0].conv1.weight, c.encoder.blocks[0].conv1.weight)
    assert _same(a.head.layers.state_dict(), fine_tuned.head.layers.state_dict())


def test_the_fine_tuned_random_arm_is_bit_identical_to_the_cae_scheme_before_init_schemes():
    """Reference: _seeded_init as it was before init schemes existed (reset_parameters of every
    layer, a residual block once for its children) from the encoder's seed stream."""
    model = build_classifier(TINY, 3, seed=7, init="random")
    with torch.random.fork_rng(devices=[]):
        reference = RhythmClassifier(TINY, n_classes=3)
        torch.manual_seed(7 * 2)
        done = set()
        for layer in reference.encoder.modules():
            if layer is reference.encoder or id(layer) in done or not hasattr(layer, "reset_parameters"):
                continue
            layer.reset_parameters()
            if any(child is not layer for child in layer.modules()):
                done.update(id(child) for child in layer.modules())
    assert _same(model.encoder.state_dict(), reference.encoder.state_dict())
    assert type(model) is RhythmClassifier and type(model.head) is FeatureClassifier


def test_init_scheme_errors_name_the_setting(cae_encoder_state):
    with pytest.raises(ValueError, match="init_scheme must be one of"):
        build_classifier(TINY, 3, seed=0, init="random", init_scheme="he")
    with pytest.raises(ValueError, match="applies to a random encoder"):
        build_classifier(TINY, 3, seed=0, init="pretrained", encoder_state=cae_encoder_state, init_scheme="standard")


@pytest.mark.parametrize("init", ["random", "pretrained"])
def test_both_frozen_window_arms_standardise_the_code_with_the_training_sample_alone(init, cae_encoder_state):
    scheme = "standard" if init == "random" else "cae"
    model = build_classifier(TINY, 3, seed=1, init=init, freeze=True, encoder_state=cae_encoder_state,
                             init_scheme=scheme)
    rng = np.random.default_rng(0)
    train, other = rng.normal(size=(40, 256)).astype(np.float32), 3 + rng.normal(size=(30, 256)).astype(np.float32)
    model.fit_input_scaling(train, batch_size=16)  # batches of 16: eval-mode codes do not depend on it
    code = _code(model, train).double()
    np.testing.assert_allclose(model.head.input_mean.numpy(), code.mean(0).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.head.input_sd.numpy(), code.std(0, unbiased=False).numpy() + 1e-6, rtol=1e-4)
    scaled = (code.float() - model.head.input_mean) / model.head.input_sd
    np.testing.assert_allclose(scaled.mean(0).numpy(), 0, atol=1e-4)
    np.testing.assert_allclose(scaled.std(0, unbiased=False).numpy(), 1, atol=1e-3)
    before = model.head.input_mean.clone()
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(other).unsqueeze(1))  # scoring other windows leaves the scaling
    assert torch.equal(model.head.input_mean, before)
    expected = model.head.layers((_code(model, other) - model.head.input_mean) / model.head.input_sd)
    torch.testing.assert_close(logits, expected)
    model.train()
    assert not model.encoder.training and model.head.training


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
    y = rng.integers(0, 3, 16)
    fit(model, ClassificationTask(("a", "b", "c")), x, y, {"val": (x, y)},
        TrainConfig(epochs=1, batch_size=8), progress=False)
    after = model.encoder.state_dict()
    frozen = [k for k in before if k.startswith(("blocks.0.", "blocks.1."))]
    trained = [k for k in before if k.startswith("blocks.2.") and k.endswith("weight")]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)  # weights and BN statistics
    assert trained and not all(torch.equal(before[k], after[k]) for k in trained)


def test_freeze_n_beyond_the_encoder_is_refused():
    with pytest.raises(ValueError, match=f"freeze: {TINY.n_blocks + 1} residual blocks asked"):
        build_classifier(TINY, 3, seed=0, freeze=TINY.n_blocks + 1)
