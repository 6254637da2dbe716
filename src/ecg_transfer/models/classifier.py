"""Rhythm classifiers: the CAE's encoder plus a small head, and a head for image features.

Window arms differ only in how the encoder starts (and whether it trains). Everything else must be identical, so the head is initialised from its
own seed stream: for a given seed the head starts from the same weights in every
arm, and the encoder's initialisation cannot shift it.

A frozen encoder's code reaches its head standardised with the mean and SD of the run's own
training sample (:class:`FrozenEncoderClassifier`), as the spectrogram arm's CNN features do:
a frozen pretrained and a frozen random encoder give codes of very different scales, and the
frozen arms should compare what the features say, not how large they are.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial

import numpy as np
import torch
from torch import nn

from ecg_transfer.models.cae import (
    INIT_SCHEMES,
    CaeConfig,
    Encoder,
    init_encoder,
    reset_layers,
    with_channel_axis,
)
from ecg_transfer.models.weights import state_dict_differences

INITS = ("random", "pretrained")

# Offsets that separate the encoder's and the head's seed streams.
_ENCODER_SEED_OFFSET = 0
_HEAD_SEED_OFFSET = 1_000_003


class FeatureClassifier(nn.Module):
    """Linear -> ReLU -> dropout -> linear over a feature vector.

    Used as the head on the 60 CAE features and on frozen image-CNN features.
    ``hidden=0`` gives a plain linear (logistic-regression) head.
    """

    def __init__(self, n_features: int, n_classes: int, hidden: int = 64, dropout: float = 0.2):
        super().__init__()
        if n_features < 1 or n_classes < 2:
            raise ValueError(
                f"FeatureClassifier needs n_features >= 1 and n_classes >= 2, got {n_features}, {n_classes}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"FeatureClassifier: dropout must be in [0, 1), got {dropout}")
        if hidden > 0:
            self.layers = nn.Sequential(
                nn.Linear(n_features, hidden),
                nn.ReLU(inplace=True),
                nn.Dropout(dropout),
                nn.Linear(hidden, n_classes),
            )
        else:
            self.layers = nn.Sequential(nn.Dropout(dropout), nn.Linear(n_features, n_classes))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


class ScaledFeatureClassifier(FeatureClassifier):
    """A :class:`FeatureClassifier` that standardises its inputs with statistics it holds as
    buffers, set from its own training sample (:meth:`fit_input_scaling`).

    Frozen CNN activations vary in scale by orders of magnitude, so the spectrogram arms scale
    them; doing it inside the model means each bootstrap sample's run is scaled by that sample
    alone (never by records it was not trained on, nor by the test split), and the saved model
    carries its own scaling.
    """

    def __init__(self, n_features: int, n_classes: int, hidden: int = 64, dropout: float = 0.2):
        super().__init__(n_features, n_classes, hidden, dropout)
        self.register_buffer("input_mean", torch.zeros(n_features))
        self.register_buffer("input_sd", torch.ones(n_features))

    @torch.no_grad()
    def fit_input_scaling(self, features, eps: float = 1e-6) -> None:
        """Mean and SD per feature of ``features`` (the run's training rows)."""
        values = torch.as_tensor(features, dtype=torch.float64)
        self.input_mean.copy_(values.mean(dim=0).to(self.input_mean.dtype))
        self.input_sd.copy_((values.std(dim=0, unbiased=False) + eps).to(self.input_sd.dtype))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers((features - self.input_mean) / self.input_sd)


class RhythmClassifier(nn.Module):
    """Encoder (same class as the CAE's) + :class:`FeatureClassifier` head -> logits."""

    head_class: type[FeatureClassifier] = FeatureClassifier

    def __init__(self, cfg: CaeConfig, n_classes: int = 11, head_hidden: int = 64, dropout: float = 0.2):
        super().__init__()
        self.cfg = cfg
        self.input_length = cfg.window_length  # the training loop feeds (B, 1, input_length) windows
        self.encoder = Encoder(cfg)
        self.head = self.head_class(cfg.bottleneck, n_classes, head_hidden, dropout)
        self.encoder_frozen = False
        self.frozen_blocks = 0

    def freeze_blocks(self, n: int) -> None:
        """Partial unfreezing: the first ``n`` residual blocks keep their weights and their
        BatchNorm statistics (pinned to eval mode, see :meth:`train`); the rest trains."""
        if not 1 <= n <= len(self.encoder.blocks):
            raise ValueError(
                f"freeze: {n} residual blocks asked, the encoder has {len(self.encoder.blocks)} "
                f"(give 1..{len(self.encoder.blocks)}, or true for the whole encoder)"
            )
        self.frozen_blocks = n
        for block in self.encoder.blocks[:n]:
            for param in block.parameters():
                param.requires_grad_(False)
            block.eval()

    def freeze_encoder(self) -> None:
        """Linear-probe mode: no gradients into the encoder and BatchNorm stats held fixed.

        requires_grad=False alone would still let BatchNorm update its running
        statistics in train mode, so the encoder is also pinned to eval mode
        (see :meth:`train`).
        """
        self.encoder_frozen = True
        for param in self.encoder.parameters():
            param.requires_grad_(False)
        self.encoder.eval()

    def train(self, mode: bool = True) -> RhythmClassifier:
        super().train(mode)
        if self.encoder_frozen:
            self.encoder.eval()
        for block in self.encoder.blocks[: self.frozen_blocks]:
            block.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


class FrozenEncoderClassifier(RhythmClassifier):
    """A :class:`RhythmClassifier` whose encoder is frozen and whose head standardises the
    code (a :class:`ScaledFeatureClassifier`), with statistics set by :meth:`fit_input_scaling`
    from the run's own training windows (study/experiment.py calls it for every run)."""

    head_class = ScaledFeatureClassifier

    def __init__(self, cfg: CaeConfig, n_classes: int = 11, head_hidden: int = 64, dropout: float = 0.2):
        super().__init__(cfg, n_classes, head_hidden, dropout)
        self.freeze_encoder()

    @torch.no_grad()
    def fit_input_scaling(self, windows, batch_size: int = 256) -> None:
        """Per-feature mean and SD of the frozen encoder's code over ``windows`` (N, [C,] L), the
        run's training sample, computed in eval mode (the encoder's BatchNorm uses its fixed
        statistics, so the codes do not depend on the batching)."""
        windows = np.asarray(windows, dtype=np.float32)
        device = next(self.encoder.parameters()).device
        codes = [
            self.encoder(with_channel_axis(torch.from_numpy(windows[start : start + batch_size]).to(device))).cpu()
            for start in range(0, len(windows), batch_size)
        ]
        self.head.fit_input_scaling(torch.cat(codes))


def _seeded_init(module: nn.Module, seed: int, initialise: Callable[[nn.Module], None] = reset_layers) -> None:
    """Re-initialise ``module`` from ``seed`` (``initialise``: by default every layer as at
    construction) without touching torch's global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        initialise(module)


def build_classifier(
    cfg: CaeConfig,
    n_classes: int,
    seed: int,
    init: str = "random",
    freeze: bool | int = False,
    encoder_state: Mapping[str, torch.Tensor] | None = None,
    head_hidden: int = 64,
    dropout: float = 0.2,
    init_scheme: str = "cae",
) -> RhythmClassifier:
    """A window classifier: its encoder starts from ``init`` ("random", from ``seed`` under
    ``init_scheme``, or "pretrained", the CAE encoder's ``encoder_state``) and trains unless
    ``freeze``: true freezes the whole encoder, a :class:`FrozenEncoderClassifier` (standardised
    code); N freezes its first N residual blocks (:meth:`RhythmClassifier.freeze_blocks`).

    ``init_scheme`` (:func:`ecg_transfer.models.cae.init_encoder`): "cae" starts the random
    encoder as the CAE's encoder started (the fine-tuned random arm); "standard" is the
    non-degenerate scheme a frozen random control needs. A frozen random encoder under "cae"
    with zero-init residual branches and no final ReLU is refused: it is an affine map.

    ``encoder_state`` (e.g. from :func:`ecg_transfer.models.weights.load_pretrained_encoder`)
    is loaded strictly, so a mismatching architecture fails here rather than training a
    half-initialised network.
    """
    if init not in INITS:
        raise ValueError(f"build_classifier: init must be one of {INITS}, got {init!r}")
    _check_init_scheme(cfg, init, freeze, init_scheme)
    kind = FrozenEncoderClassifier if freeze is True else RhythmClassifier
    with torch.random.fork_rng(devices=[]):  # construction draws default inits from the global RNG
        model = kind(cfg, n_classes=n_classes, head_hidden=head_hidden, dropout=dropout)
    _seeded_init(model.encoder, seed * 2 + _ENCODER_SEED_OFFSET, partial(init_encoder, scheme=init_scheme))
    _seeded_init(model.head, seed * 2 + _HEAD_SEED_OFFSET)
    if init == "pretrained":
        if encoder_state is None:
            raise ValueError("build_classifier: init 'pretrained' needs the pretrained encoder_state, got None")
        differences = state_dict_differences(model.encoder.state_dict(), encoder_state)
        if differences:
            raise ValueError(
                f"build_classifier: encoder_state does not match Encoder({cfg}): " + "; ".join(differences)
            )
        model.encoder.load_state_dict(dict(encoder_state), strict=True)
    if freeze is not True and freeze is not False:
        model.freeze_blocks(int(freeze))
    return model


def _check_init_scheme(cfg: CaeConfig, init: str, freeze: bool | int, init_scheme: str) -> None:
    if init_scheme not in INIT_SCHEMES:
        raise ValueError(f"build_classifier: init_scheme must be one of {INIT_SCHEMES}, got {init_scheme!r}")
    if init == "pretrained" and init_scheme != "cae":
        raise ValueError(
            f"build_classifier: init_scheme {init_scheme!r} applies to a random encoder; a pretrained "
            "one starts from the CAE's weights (leave init_scheme at 'cae')"
        )
    if init == "random" and freeze is True and init_scheme == "cae" and cfg.zero_init_residual and not cfg.final_relu:
        raise ValueError(
            "build_classifier: a frozen random encoder under init_scheme 'cae' (zero_init_residual: true, "
            "final_relu: false) is an affine map: every residual branch outputs 0. Use init_scheme "
            "'standard' for a frozen random control (docs/models_and_training.md)"
        )


def build_feature_classifier(
    n_features: int, n_classes: int, seed: int, hidden: int = 64, dropout: float = 0.2
) -> ScaledFeatureClassifier:
    """A head over frozen features (the spectrogram arms), initialised from ``seed`` alone; its
    input scaling is set from the run's training rows (run_arm does it)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return ScaledFeatureClassifier(n_features, n_classes, hidden, dropout)
