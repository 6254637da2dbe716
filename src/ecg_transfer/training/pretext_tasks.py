"""The pretext tasks besides reconstruction, as task strategies of the one training loop.

- :class:`ContrastiveTask`: NT-Xent (SimCLR's normalised temperature-scaled cross-entropy) on
  the (B, 2, D) projections of a :class:`~ecg_transfer.models.pretext.ContrastiveModel`: each
  view must pick its partner view among all 2B - 1 other views of the batch. With
  ``positives="same_record"`` the two views come from two different windows of one record
  (CLOCS), fed as :class:`PairedWindows`. Under DDP the training loss gathers every rank's
  projections, so the negatives are those of the global batch.
- :class:`MaskedReconstructionTask`: mean squared error on the masked samples alone of a
  :class:`~ecg_transfer.models.pretext.MaskedAutoencoder`'s (B, 2C, L) output (C leads).

Both score a window by its own loss (the mean of its two views' NT-Xent terms; the MSE over
its masked samples), so ``reduction="mean"`` is the mean over the batch's windows and
``reduction="sum"`` their sum, and the loop's epoch rows are means per window.
See docs/pretext_tasks.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch.nn import functional as F

from ecg_transfer.training.tasks import Task

POSITIVES = ("same_window", "same_record")


def _reduce(per_window: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return per_window.mean()
    if reduction == "sum":
        return per_window.sum()
    raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")


def nt_xent(projections: torch.Tensor, temperature: float, candidates: torch.Tensor | None = None,
            offset: int = 0, groups: torch.Tensor | None = None,
            candidate_groups: torch.Tensor | None = None) -> torch.Tensor:
    """Per-window NT-Xent loss (B,) of ``projections`` (B, 2, D).

    Row i of view v is an anchor; its positive is row i of the other view, its negatives every
    other view in ``candidates`` (G, 2, D) (default: ``projections`` itself), where this batch's
    rows sit at ``offset``. Cosine similarities divided by ``temperature``; each window's loss is
    the mean of its two anchors' cross-entropies.

    ``groups`` (B,) and ``candidate_groups`` (G,) (default: ``groups``): integer group ids
    (records, for ``same_record``); the views of a candidate row of the anchor's group are no
    negatives of it (its positive stays). Without them, a record's other windows in the batch,
    and the anchor's own window as the partner of one of them, would count as negatives.
    """
    b = projections.shape[0]
    candidates = projections if candidates is None else candidates
    g = candidates.shape[0]
    anchors = F.normalize(torch.cat([projections[:, 0], projections[:, 1]]), dim=1)  # (2B, D)
    others = F.normalize(torch.cat([candidates[:, 0], candidates[:, 1]]), dim=1)  # (2G, D)
    logits = anchors @ others.T / temperature
    rows = torch.arange(2 * b, device=logits.device)
    own = (rows % b) + offset + (rows >= b) * g  # each anchor's own position among the candidates
    partner = (rows % b) + offset + (rows < b) * g
    left_out = F.one_hot(own, 2 * g).bool()
    if groups is not None:
        candidate_groups = groups if candidate_groups is None else candidate_groups
        same = torch.cat([groups, groups]).view(-1, 1) == torch.cat([candidate_groups, candidate_groups]).view(1, -1)
        left_out = left_out | (same & ~F.one_hot(partner, 2 * g).bool())
    logits = logits.masked_fill(left_out, float("-inf"))
    per_anchor = F.cross_entropy(logits, partner, reduction="none")
    return 0.5 * (per_anchor[:b] + per_anchor[b:])


class _GatherWithGradient(torch.autograd.Function):
    """All ranks' (equal-sized) tensors stacked (world, ...), with the gradient carried home.

    Every rank's loss uses every rank's rows, so the gradient of a rank's own rows is the sum,
    over ranks, of what each rank's loss sends back to them: an all-reduce of the stacked
    gradients, of which this rank keeps its slice. Both directions are plain, synchronous
    collectives that gloo and NCCL support alike (torch's ``distributed.nn.functional.all_gather``
    is deprecated, and its gloo backward, an all-to-all, intermittently aborted the ranks on exit).
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.rank = dist.get_rank()
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.stack(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank]


def _gather_batches(projections: torch.Tensor, groups: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, int, torch.Tensor | None]:
    """Every rank's projections (padded to the largest shard and trimmed again), differentiable,
    where this rank's rows start, and every rank's ``groups`` (None when not given); ranks may
    hold shards of different sizes."""
    world, rank = dist.get_world_size(), dist.get_rank()
    size = torch.tensor([projections.shape[0]], device=projections.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    sizes = [int(s.item()) for s in sizes]
    padded = F.pad(projections, (0, 0, 0, 0, 0, max(sizes) - projections.shape[0]))
    parts = _GatherWithGradient.apply(padded)
    gathered_groups = None
    if groups is not None:
        group_parts = [torch.empty(max(sizes), dtype=groups.dtype, device=groups.device) for _ in range(world)]
        dist.all_gather(group_parts, F.pad(groups, (0, max(sizes) - groups.shape[0])))
        gathered_groups = torch.cat([group_parts[r][:n] for r, n in enumerate(sizes)])
    return torch.cat([parts[r, :n] for r, n in enumerate(sizes)]), sum(sizes[:rank]), gathered_groups


class ContrastiveTask(Task):
    """NT-Xent on two views per window; ``temperature`` (SimCLR's 0.1 by default) sharpens or
    flattens the softmax over the candidates. ``positives`` says what the two views are (the
    model and its inputs must match: ``same_record`` needs a paired model and PairedWindows).

    The loop's labels, when given, are each row's record as an integer code
    (:func:`record_codes`): the windows of the anchor's record are then left out of its
    negatives (CLOCS: the negatives are other records). ``same_record`` runs need them: two
    windows of one record in a batch give rows (a, b) and (b, a), so each anchor would meet its
    own window, differently augmented, as a negative (docs/pretext_tasks.md). Without labels
    every other view is a negative (SimCLR).

    Distributed training (an initialised process group of more than one rank): the training
    loss (``reduction="mean"``) scores this rank's anchors against the views of every rank,
    gathered with autograd, so the gradient is that of the global batch's loss. Scoring
    (``reduction="sum"``) stays per rank: eval ranges may differ in length between ranks.
    """

    name = "contrastive"
    distributable = True  # epoch rows are loss sums over windows

    def __init__(self, temperature: float = 0.1, positives: str = "same_window"):
        if not temperature > 0:
            raise ValueError(f"ContrastiveTask: temperature must be > 0, got {temperature}")
        if positives not in POSITIVES:
            raise ValueError(f"ContrastiveTask: positives must be one of {POSITIVES}, got {positives!r}")
        self.temperature = float(temperature)
        self.positives = positives

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "temperature": self.temperature, "positives": self.positives}

    def __repr__(self) -> str:
        return f"ContrastiveTask(temperature={self.temperature}, positives={self.positives!r})"

    def check_labels(self, y, n_rows: int) -> np.ndarray | None:
        """None, or one integer record code per row (windows of one record are no negatives)."""
        if y is None:
            return None
        codes = np.asarray(y)
        if codes.shape != (n_rows,) or not np.issubdtype(codes.dtype, np.integer):
            raise ValueError(
                f"ContrastiveTask: labels must be one integer record code per window ({n_rows},), got "
                f"{codes.dtype} {codes.shape}"
            )
        return codes.astype(np.int64, copy=False)

    def loss(self, output, inputs, labels, reduction="mean"):
        if output.dim() != 3 or output.shape[1] != 2:
            raise ValueError(f"ContrastiveTask: expects projections (batch, 2, features), got {tuple(output.shape)}")
        if reduction == "mean" and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            candidates, offset, candidate_groups = _gather_batches(output, labels)
            per_window = nt_xent(output, self.temperature, candidates, offset, labels, candidate_groups)
            return _reduce(per_window, reduction)
        return _reduce(nt_xent(output, self.temperature, groups=labels), reduction)

    def train_row(self, loss_sum, n, length, outputs, labels):
        return {"loss": loss_sum / n}

    def eval_row(self, loss_sum, n, length, outputs, labels):
        return {"loss": loss_sum / n}


class MaskedReconstructionTask(Task):
    """Per window, the mean squared error over its masked samples, of every lead; unmasked
    samples count for nothing, since the model sees them and copying them would teach the
    encoder nothing. The output is (B, 2C, L): C reconstructed leads, then their C masks."""

    name = "masked_reconstruction"
    metric_columns = ("masked_mse",)
    distributable = True  # a loss per window: DDP's mean over ranks is the global batch's mean

    def lower_is_better(self, metric: str) -> bool:
        return metric in ("loss", "masked_mse")

    def loss(self, output, inputs, labels, reduction="mean"):
        channels = inputs.shape[1]
        if output.dim() != 3 or output.shape[1] != 2 * channels or output.shape[0] != inputs.shape[0]:
            raise ValueError(
                f"MaskedReconstructionTask: expects (batch, 2 x {channels} leads, length) = reconstruction and "
                f"mask of each lead, got {tuple(output.shape)}"
            )
        reconstruction, mask = output[:, :channels], output[:, channels:]
        # where, not a product: a non-finite output at an unmasked sample must not leak in.
        squared = torch.where(mask > 0, (reconstruction - inputs) ** 2, torch.zeros((), dtype=output.dtype, device=output.device))
        per_window = squared.sum(dim=(1, 2)) / mask.sum(dim=(1, 2)).clamp_min(1.0)
        return _reduce(per_window, reduction)

    def train_row(self, loss_sum, n, length, outputs, labels):
        return {"loss": loss_sum / n, "masked_mse": loss_sum / n}

    def eval_row(self, loss_sum, n, length, outputs, labels):
        return {"loss": loss_sum / n, "masked_mse": loss_sum / n}


def pretext_task_from_description(description: dict[str, Any]) -> Task | None:
    """The pretext task that ``describe()`` gave ``description`` (a distributed worker rebuilds
    it), or None when it describes no pretext task."""
    name = description.get("name")
    if name == ContrastiveTask.name:
        return ContrastiveTask(description["temperature"], description["positives"])
    if name == MaskedReconstructionTask.name:
        return MaskedReconstructionTask()
    return None


def record_codes(record_ids) -> np.ndarray:
    """Each window's record as an integer code (0, 1, ... in order of first appearance): the
    labels :class:`ContrastiveTask` reads to keep a record's windows out of its negatives."""
    codes, _ = pd.factorize(np.asarray(record_ids), sort=False)
    if (codes < 0).any():
        raise ValueError(f"record_codes: missing record id at window {int(np.flatnonzero(codes < 0)[0])}")
    return codes.astype(np.int64)


def pair_windows_by_record(record_ids, seed: int) -> np.ndarray:
    """For every window, the index of another window of its record, drawn uniformly from
    ``seed``; a record with one window pairs it with itself (its views then differ only by the
    augmentations, as with ``same_window``)."""
    codes, _ = pd.factorize(np.asarray(record_ids), sort=False)
    if (codes < 0).any():
        raise ValueError(f"pair_windows_by_record: missing record id at window {int(np.flatnonzero(codes < 0)[0])}")
    rng = np.random.default_rng(seed)
    order = np.argsort(codes, kind="stable")
    starts = np.searchsorted(codes[order], np.arange(codes.max() + 1))
    counts = np.bincount(codes)
    partner = np.arange(codes.size)
    for record in np.flatnonzero(counts > 1):
        members = order[starts[record] : starts[record] + counts[record]]
        # A random other member: shift each member's rank by 1..count-1 places, modulo count.
        steps = rng.integers(1, counts[record], size=counts[record])
        partner[members] = members[(np.arange(counts[record]) + steps) % counts[record]]
    return partner


class PairedWindows:
    """A lazy (N, 2L) view of windows ``x`` (N, L): row i is window i then window ``partner[i]``
    along the samples; windows of C leads (N, C, L) give (N, C, 2L), the two windows' leads
    side by side.

    What :class:`~ecg_transfer.models.pretext.ContrastiveModel` with ``paired=True`` reads;
    indexing reads only the rows asked for, so a memmapped corpus stays on disk.
    """

    def __init__(self, x, partner: np.ndarray):
        partner = np.asarray(partner)
        if len(x.shape) not in (2, 3) or partner.shape != (x.shape[0],):
            raise ValueError(
                f"PairedWindows: need windows (N, L) or (N, C, L) and N partners, got {x.shape} and {partner.shape}"
            )
        if partner.size and (partner.min() < 0 or partner.max() >= x.shape[0]):
            raise ValueError("PairedWindows: partner indices fall outside the windows")
        self.x, self.partner = x, partner
        self.shape = (*x.shape[:-1], 2 * x.shape[-1])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows) -> np.ndarray:
        index = np.arange(self.shape[0])[rows]
        return np.concatenate([np.asarray(self.x[index]), np.asarray(self.x[self.partner[index]])], axis=-1)
