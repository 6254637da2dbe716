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
  set to zero; forward returns (B, 2C, L): the reconstruction of the C leads and the mask
  of each lead, which :class:`~ecg_transfer.training.pretext_tasks.MaskedReconstructionTask`
  needs to score the masked samples alone.

Both take windows of C = ``cfg.in_channels`` leads, (B, C, L), as the CAE does. The
augmentations say which of their draws are per lead and which are shared by all leads
(signals/augment.py); a masked span covers every lead at once, since the leads are recorded
at the same instants and a span hidden in one lead only could be copied from the others.

Randomness: in training mode both draw from torch's default generator of the input's device,
which the training loop seeds from ``TrainConfig.seed`` and checkpoints, so runs repeat and
resume exactly. In a DDP job of several ranks each rank draws from a generator of its own
instead (:func:`training_generator`), so the ranks augment and mask their shards
independently and a run still repeats and resumes exactly. In eval mode they draw from a
generator seeded with ``eval_seed`` afresh each time the model is put in eval mode, so a
held-out split gets the same views or masks after every epoch and its loss is comparable
across epochs (see docs/pretext_tasks.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
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


def training_generator(device: torch.device) -> torch.Generator | None:
    """What a pretext model draws its training views or masks from: None (torch's default
    generator of ``device``) in one process, as before DDP existed.

    In a DDP job of more than one rank the default generator would give every rank the same
    draws for its own shard (every rank seeds it from ``TrainConfig.seed``). Instead each
    forward pass takes one number from the default CPU generator, which all ranks seed alike
    and draw from in lockstep (one number per forward pass; the loop gives every rank a row,
    a weight-0 one at worst), and seeds this rank's generator with it and the rank. The ranks
    thus draw independently, deterministically given the seed, and since the default
    generator's state is the same on every rank, rank 0's checkpointed state resumes them all.
    """
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return None
    base = int(torch.randint(0, 2**63 - 1, (1,)).item())
    seed = int(np.random.SeedSequence([base, dist.get_rank()]).generate_state(1, dtype=np.uint64)[0])
    return torch.Generator(device=device).manual_seed(seed)


class _EvalSeeded(nn.Module):
    """Draws from :func:`training_generator` in training mode, from a freshly seeded one in eval mode."""

    def __init__(self, eval_seed: int):
        super().__init__()
        self.eval_seed = int(eval_seed)
        self._eval_generator: torch.Generator | None = None

    def train(self, mode: bool = True):
        self._eval_generator = None  # the next eval pass starts again from eval_seed
        return super().train(mode)

    def _generator(self, device: torch.device) -> torch.Generator | None:
        if self.training:
            return training_generator(device)
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
    """Encoder + projection head over two augmented views; forward (B, C, input_length) -> (B, 2, D),
    with C = ``cfg.in_channels`` leads.

    ``paired=False``: the input is one window (B, C, L) and both views augment it.
    ``paired=True``: the input is two windows of one record side by side (B, C, 2L), e.g. a
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
        channels = self.cfg.in_channels
        if x.dim() != 3 or x.shape[1] != channels or x.shape[2] != self.input_length:
            raise ValueError(
                f"ContrastiveModel expects (batch, {channels}, {self.input_length}) (in_channels = the windows' "
                f"leads), got {tuple(x.shape)}"
            )
        first, second = (x[..., :length], x[..., length:]) if self.paired else (x, x)
        generator = self._generator(x.device)
        views = torch.cat([self.augmentations(first, generator), self.augmentations(second, generator)])
        projections = self.head(self.encoder(views))
        return torch.stack(projections.split(x.shape[0]), dim=1)


class MaskedAutoencoder(_EvalSeeded):
    """The CAE fed a window with random spans zeroed; forward (B, C, L) -> (B, 2C, L): channels
    0..C-1 the reconstruction of the whole window's C leads, C..2C-1 each lead's mask (1 =
    masked). A span covers the same samples in every lead: the leads are simultaneous, so a
    span masked in one lead alone could be read off the others instead of inferred."""

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
        if x.dim() != 3 or x.shape[1] != self.cfg.in_channels or x.shape[2] != self.input_length:
            raise ValueError(
                f"MaskedAutoencoder expects (batch, {self.cfg.in_channels}, {self.input_length}) (in_channels = "
                f"the windows' leads), got {tuple(x.shape)}"
            )
        # One draw per window (shape (B, 1, L)), shared by its leads.
        spans = span_mask((x.shape[0], 1, x.shape[2]), self.n_spans, self.masking.span_length,
                          self._generator(x.device), x.device)
        mask = spans.expand_as(x)
        reconstruction = self.autoencoder(x.masked_fill(mask, 0.0))
        return torch.cat([reconstruction, mask.to(reconstruction.dtype)], dim=1)
