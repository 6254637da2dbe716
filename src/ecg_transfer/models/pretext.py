"""Models of the pretext tasks besides the paper's CAE; each trains the CAE's own :class:`Encoder`.

Every pretext model has an ``encoder`` attribute, an :class:`~ecg_transfer.models.cae.Encoder`
built from the same :class:`CaeConfig` as the CAE (nine residual blocks, kernel 19, a
60-feature code), so ``model.encoder.state_dict()`` has the keys of the CAE's encoder and any
arm loads it as it loads the CAE's. What sits around the encoder is dropped after pretraining:

- :class:`ContrastiveModel`: two augmented views of each window (or of two windows of one
  record, ``paired``), encoded and passed through a :class:`ProjectionHead`; forward returns
  the projections (B, 2, D) that :class:`~ecg_transfer.training.pretext_tasks.ContrastiveTask`
  scores with NT-Xent;
- :class:`MaskedAutoencoder`: the CAE reconstructing a window from a copy with random spans
  set to zero; forward returns (B, 2, L): the reconstruction and the mask, which
  :class:`~ecg_transfer.training.pretext_tasks.MaskedReconstructionTask` needs to score the
  masked samples alone.

Randomness: in training mode both draw from torch's default generator of the input's device,
which the training loop seeds from ``TrainConfig.seed`` and checkpoints, so runs repeat and
resume exactly. In eval mode they draw from a generator seeded with ``eval_seed`` afresh each
time the model is put in eval mode, so a held-out split gets the same views or masks after
every epoch and its loss is comparable across epochs (see docs/pretext_tasks.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ecg_transfer.models.cae import CaeConfig, ConvAutoencoder, Encoder
from ecg_transfer.signals.augment import AugmentationList, default_augmentations, span_mask


@dataclass(frozen=True)
class MaskingConfig:
    """``mask_ratio``: share of a window's samples covered by spans if none overlapped
    (``round(mask_ratio * L / span_length)`` spans, at least 1); ``span_length`` in samples."""

    mask_ratio: float = 0.2
    span_length: int = 50

    def __post_init__(self) -> None:
        if not 0 < self.mask_ratio < 1:
            raise ValueError(f"MaskingConfig: mask_ratio must be in (0, 1), got {self.mask_ratio}")
        if self.span_length < 1:
            raise ValueError(f"MaskingConfig: span_length must be >= 1, got {self.span_length}")

    def n_spans(self, length: int) -> int:
        if self.span_length > length:
            raise ValueError(f"MaskingConfig: span_length {self.span_length} exceeds the window length {length}")
        return max(1, round(self.mask_ratio * length / self.span_length))


class _EvalSeeded(nn.Module):
    """Draws from the default generator in training mode, from a freshly seeded one in eval mode."""

    def __init__(self, eval_seed: int):
        super().__init__()
        self.eval_seed = int(eval_seed)
        self._eval_generator: torch.Generator | None = None

    def train(self, mode: bool = True):
        self._eval_generator = None  # the next eval pass starts again from eval_seed
        return super().train(mode)

    def _generator(self, device: torch.device) -> torch.Generator | None:
        if self.training:
            return None
        if self._eval_generator is None or self._eval_generator.device != device:
            self._eval_generator = torch.Generator(device=device).manual_seed(self.eval_seed)
        return self._eval_generator


class ProjectionHead(nn.Sequential):
    """Code (B, bottleneck) -> projection (B, out_features): Linear-BN-ReLU-Linear, as SimCLR.

    The loss acts on the projection, not on the code, so the code keeps what the augmentations
    remove from the projection (SimCLR's finding); the head is dropped after pretraining.
    """

    def __init__(self, in_features: int, hidden_features: int = 60, out_features: int = 32):
        if min(in_features, hidden_features, out_features) < 1:
            raise ValueError(
                f"ProjectionHead: feature counts must be >= 1, got {in_features}, {hidden_features}, {out_features}"
            )
        super().__init__(
            nn.Linear(in_features, hidden_features, bias=False), nn.BatchNorm1d(hidden_features),
            nn.ReLU(inplace=True), nn.Linear(hidden_features, out_features),
        )


class ContrastiveModel(_EvalSeeded):
    """Encoder + projection head over two augmented views; forward (B, 1, input_length) -> (B, 2, D).

    ``paired=False``: the input is one window (B, 1, L) and both views augment it.
    ``paired=True``: the input is two windows of one record side by side (B, 1, 2L), e.g. a
    :class:`~ecg_transfer.training.pretext_tasks.PairedWindows` row, and each view augments one.
    Both views go through the encoder as one batch of 2B, so BatchNorm sees both.
    """

    def __init__(self, cfg: CaeConfig, augmentations: AugmentationList | None = None, paired: bool = False,
                 projection_hidden: int = 60, projection_features: int = 32, eval_seed: int = 0):
        super().__init__(eval_seed)
        self.cfg = cfg
        self.paired = bool(paired)
        self.augmentations = augmentations if augmentations is not None else default_augmentations()
        self.input_length = cfg.window_length * (2 if self.paired else 1)
        self.encoder = Encoder(cfg)
        self.head = ProjectionHead(cfg.bottleneck, projection_hidden, projection_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = self.cfg.window_length
        if x.dim() != 3 or x.shape[1] != 1 or x.shape[2] != self.input_length:
            raise ValueError(f"ContrastiveModel expects (batch, 1, {self.input_length}), got {tuple(x.shape)}")
        first, second = (x[..., :length], x[..., length:]) if self.paired else (x, x)
        generator = self._generator(x.device)
        views = torch.cat([self.augmentations(first, generator), self.augmentations(second, generator)])
        projections = self.head(self.encoder(views))
        return torch.stack(projections.split(x.shape[0]), dim=1)


class MaskedAutoencoder(_EvalSeeded):
    """The CAE fed a window with random spans zeroed; forward (B, 1, L) -> (B, 2, L):
    channel 0 the reconstruction of the whole window, channel 1 the mask (1 = masked)."""

    def __init__(self, cfg: CaeConfig, masking: MaskingConfig | None = None, eval_seed: int = 0):
        super().__init__(eval_seed)
        self.cfg = cfg
        self.masking = masking or MaskingConfig()
        self.n_spans = self.masking.n_spans(cfg.window_length)
        self.input_length = cfg.window_length
        self.autoencoder = ConvAutoencoder(cfg)

    @property
    def encoder(self) -> Encoder:
        return self.autoencoder.encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = span_mask(x.shape, self.n_spans, self.masking.span_length, self._generator(x.device), x.device)
        reconstruction = self.autoencoder(x.masked_fill(mask, 0.0))
        return torch.cat([reconstruction, mask.to(reconstruction.dtype)], dim=1)
