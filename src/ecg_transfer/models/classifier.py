"""Rhythm classifiers: the CAE's encoder plus a small head, and a head for image features.

The three encoder arms differ only in how the encoder starts (and whether it
trains). Everything else must be identical, so the head is initialised from its
own seed stream: for a given seed the head starts from the same weights in every
arm, and the encoder's initialisation cannot shift it.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ecg_transfer.models.cae import CaeConfig, Encoder
from ecg_transfer.models.weights import state_dict_differences

ARMS = ("random", "transfer", "transfer_frozen")

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


class RhythmClassifier(nn.Module):
    """Encoder (same class as the CAE's) + :class:`FeatureClassifier` head -> logits."""

    def __init__(self, cfg: CaeConfig, n_classes: int = 11, head_hidden: int = 64, dropout: float = 0.2):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.head = FeatureClassifier(cfg.bottleneck, n_classes, head_hidden, dropout)
        self.encoder_frozen = False

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
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def _seeded_init(module: nn.Module, seed: int) -> None:
    """Re-initialise every layer from ``seed`` without touching torch's global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for layer in module.modules():
            if layer is not module and hasattr(layer, "reset_parameters"):
                layer.reset_parameters()


def build_classifier(
    arm: str,
    cfg: CaeConfig,
    encoder_state: Mapping[str, torch.Tensor] | None,
    n_classes: int = 11,
    seed: int = 0,
    head_hidden: int = 64,
    dropout: float = 0.2,
) -> RhythmClassifier:
    """One arm's classifier: 'random', 'transfer' (CAE encoder, all trained) or 'transfer_frozen'.

    ``encoder_state`` is the CAE encoder's state_dict (e.g. from
    :func:`ecg_transfer.models.weights.load_pretrained_encoder`); it is loaded
    strictly, so a mismatching architecture fails here rather than training a
    half-initialised network. The 'random' arm ignores it.
    """
    if arm not in ARMS:
        raise ValueError(f"build_classifier: unknown arm {arm!r}; expected one of {ARMS}")
    with torch.random.fork_rng(devices=[]):  # construction draws default inits from the global RNG
        model = RhythmClassifier(cfg, n_classes=n_classes, head_hidden=head_hidden, dropout=dropout)
    _seeded_init(model.encoder, seed * 2 + _ENCODER_SEED_OFFSET)
    _seeded_init(model.head, seed * 2 + _HEAD_SEED_OFFSET)
    if arm == "random":
        return model
    if encoder_state is None:
        raise ValueError(f"build_classifier: arm {arm!r} needs the pretrained encoder_state, got None")
    differences = state_dict_differences(model.encoder.state_dict(), encoder_state)
    if differences:
        raise ValueError(
            f"build_classifier: encoder_state does not match Encoder({cfg}): " + "; ".join(differences)
        )
    model.encoder.load_state_dict(dict(encoder_state), strict=True)
    if arm == "transfer_frozen":
        model.freeze_encoder()
    return model
