"""Random ECG augmentations for contrastive pretraining, and the span masks of masked pretraining.

Each augmentation is a small frozen dataclass; calling it on a batch of windows ``x`` of
shape (B, C, L) (C leads; also (B, L) for one lead) with a ``torch.Generator`` returns a new
tensor of the same shape. Every window gets its own random parameters, and each augmentation
is applied to a window with probability ``p`` (the draws happen for every window either way,
so the random stream, and with it every later draw, does not depend on which windows were
picked). The same generator state gives the same output; a ``generator`` of None draws from
torch's default generator of the tensor's device, which the training loop seeds and
checkpoints (training/engine.py).

Leads. The leads of a window are recorded at the same instants by different electrodes, so
what an augmentation imitates decides whether it acts per lead or on all leads together
(``Augmentation.all_leads``):

- per lead (each lead its own parameters, and its own draw of ``p``): amplitude scaling
  (each electrode's contact and gain), baseline wander (each lead's own drift: electrode
  movement and respiration reach the leads with different amplitude and phase), Gaussian
  noise (each channel's own muscle and amplifier noise) and the time mask (a lead-off or a
  saturated channel hits one electrode's leads, not the whole recording);
- all leads together (one draw per window, the same for every lead): the random shift,
  since where a window starts is one instant for all leads: shifting leads apart would
  break the simultaneity that the leads' relations (axis, timing between leads) rely on.

With one lead both are the same draw (shape (B, 1, 1)), so one-lead windows get exactly the
augmentations they got before several leads were possible.

The list, in the order :func:`default_augmentations` applies them (amplitudes are in the
units of the z-scored windows, i.e. standard deviations of the window):

- :class:`AmplitudeScale`: multiply by a factor drawn uniformly in [low, high]: gain and
  electrode-contact differences between recordings;
- :class:`BaselineWander`: add a sinusoid of random amplitude (up to ``max_amplitude``),
  frequency (``min_hz``..``max_hz``, at ``fs`` Hz) and phase: respiration and movement;
- :class:`GaussianNoise`: add white noise whose standard deviation is drawn uniformly up to
  ``max_std``: muscle and amplifier noise;
- :class:`RandomShift`: crop a sub-window shifted by up to ``max_fraction`` of L and pad it
  back to L with zeros (the z-scored mean): where the window happens to start in the rhythm;
- :class:`TimeMask`: set one span of up to ``max_fraction`` of L to zero: lead-off moments
  and saturation, and it forces the encoder to use the whole window.

None changes the rhythm itself: no time stretching, which would change the heart rate that
tells sinus bradycardia, rhythm and tachycardia apart. See docs/pretext_tasks.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ecg_transfer.typed_config import config_from_params


def _uniform(shape, low: float, high: float, like: torch.Tensor, generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)


def _per_lead(x: torch.Tensor) -> tuple[int, ...]:
    """The shape of one parameter per window and lead, broadcasting along the samples."""
    return (*x.shape[:-1], 1)


def _per_window(x: torch.Tensor) -> tuple[int, ...]:
    """The shape of one parameter per window, shared by its leads (axis -2 of a (B, C, L)
    batch) and broadcasting along the samples; a (B, L) batch has no lead axis."""
    return (*x.shape[:-2], 1, 1) if x.dim() >= 3 else (*x.shape[:-1], 1)


def span_mask(shape: Sequence[int], n_spans: int, span_length: int, generator: torch.Generator | None,
              device: torch.device | str = "cpu") -> torch.Tensor:
    """A boolean mask of ``shape`` (..., L): in every window, ``n_spans`` spans of ``span_length``
    samples start at uniformly drawn positions (spans may overlap; none runs past the end)."""
    *lead, length = shape
    if not 1 <= span_length <= length:
        raise ValueError(f"span_mask: span_length must be in 1..{length} (the window length), got {span_length}")
    if n_spans < 1:
        raise ValueError(f"span_mask: n_spans must be >= 1, got {n_spans}")
    starts = torch.randint(0, length - span_length + 1, (*lead, n_spans), generator=generator, device=device)
    positions = torch.arange(length, device=device)
    offset = positions.view(*([1] * (len(lead) + 1)), length) - starts.unsqueeze(-1)  # (..., n_spans, L)
    return ((offset >= 0) & (offset < span_length)).any(dim=-2)


@dataclass(frozen=True)
class Augmentation:
    """Base of the augmentations: ``p`` is the probability that a window is changed (each
    lead of it on its own, unless ``all_leads``: then all its leads or none)."""

    name: ClassVar[str] = "augmentation"
    #: Whether one draw acts on all leads of a window (module docstring, "Leads").
    all_leads: ClassVar[bool] = False
    p: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"{type(self).__name__}: p must be in [0, 1], got {self.p}")

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        changed = self._apply(x, generator)
        picked = torch.rand(self._shape(x), generator=generator, device=x.device) < self.p
        return torch.where(picked, changed, x)

    def _shape(self, x: torch.Tensor) -> tuple[int, ...]:
        """The shape of one random parameter: per window, or per window and lead."""
        return _per_window(x) if self.all_leads else _per_lead(x)

    def _apply(self, x: torch.Tensor, generator) -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class AmplitudeScale(Augmentation):
    name: ClassVar[str] = "amplitude_scale"
    low: float = 0.8
    high: float = 1.25

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.low <= self.high:
            raise ValueError(f"AmplitudeScale: need 0 < low <= high, got {self.low}, {self.high}")

    def _apply(self, x, generator):
        return x * _uniform(self._shape(x), self.low, self.high, x, generator)


@dataclass(frozen=True)
class BaselineWander(Augmentation):
    name: ClassVar[str] = "baseline_wander"
    max_amplitude: float = 0.3
    min_hz: float = 0.05
    max_hz: float = 0.5
    fs: float = 250.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_amplitude < 0 or not 0 <= self.min_hz <= self.max_hz < self.fs / 2:
            raise ValueError(
                f"BaselineWander: need max_amplitude >= 0 and 0 <= min_hz <= max_hz < fs/2, got "
                f"{self.max_amplitude}, {self.min_hz}, {self.max_hz}, fs {self.fs}"
            )

    def _apply(self, x, generator):
        shape = self._shape(x)
        amplitude = _uniform(shape, 0.0, self.max_amplitude, x, generator)
        hz = _uniform(shape, self.min_hz, self.max_hz, x, generator)
        phase = _uniform(shape, 0.0, 2 * math.pi, x, generator)
        t = torch.arange(x.shape[-1], device=x.device, dtype=x.dtype) / self.fs
        return x + amplitude * torch.sin(2 * math.pi * hz * t + phase)


@dataclass(frozen=True)
class GaussianNoise(Augmentation):
    name: ClassVar[str] = "gaussian_noise"
    max_std: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_std < 0:
            raise ValueError(f"GaussianNoise: max_std must be >= 0, got {self.max_std}")

    def _apply(self, x, generator):
        std = _uniform(self._shape(x), 0.0, self.max_std, x, generator)
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return x + std * noise


@dataclass(frozen=True)
class RandomShift(Augmentation):
    name: ClassVar[str] = "random_shift"
    all_leads: ClassVar[bool] = True
    max_fraction: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.max_fraction < 1:
            raise ValueError(f"RandomShift: max_fraction must be in [0, 1), got {self.max_fraction}")

    def _apply(self, x, generator):
        length = x.shape[-1]
        most = int(self.max_fraction * length)
        shift = torch.randint(-most, most + 1, self._shape(x), generator=generator, device=x.device)
        source = torch.arange(length, device=x.device) - shift  # output sample t reads input t - shift
        inside = (source >= 0) & (source < length)
        taken = torch.gather(x, -1, source.clamp(0, length - 1).expand(x.shape))
        return torch.where(inside, taken, torch.zeros((), dtype=x.dtype, device=x.device))


@dataclass(frozen=True)
class TimeMask(Augmentation):
    name: ClassVar[str] = "time_mask"
    max_fraction: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.max_fraction <= 1:
            raise ValueError(f"TimeMask: max_fraction must be in (0, 1], got {self.max_fraction}")

    def _apply(self, x, generator):
        length = x.shape[-1]
        span = _uniform(self._shape(x), 0.0, self.max_fraction * length, x, generator).long()
        start = (_uniform(self._shape(x), 0.0, 1.0, x, generator) * (length - span + 1)).long()
        t = torch.arange(length, device=x.device)
        masked = (t >= start) & (t < start + span)
        return x.masked_fill(masked, 0.0)


AUGMENTATIONS: dict[str, type[Augmentation]] = {
    kind.name: kind for kind in (AmplitudeScale, BaselineWander, GaussianNoise, RandomShift, TimeMask)
}


@dataclass(frozen=True)
class AugmentationList:
    """Augmentations applied in order, each drawing from the same generator."""

    steps: tuple[Augmentation, ...]

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        for step in self.steps:
            x = step(x, generator)
        return x

    def describe(self) -> list[dict[str, Any]]:
        """Plain description (model cards, checkpoints): one ``{"name": ..., options}`` per step."""
        return [{"name": step.name, **{k: v for k, v in vars(step).items()}} for step in self.steps]

    @classmethod
    def from_params(cls, params: Sequence[Mapping[str, Any]], where: str = "augmentations") -> AugmentationList:
        """From a YAML list such as ``[{name: gaussian_noise, max_std: 0.05}, {name: time_mask}]``."""
        if isinstance(params, (str, Mapping)) or not isinstance(params, Sequence):
            raise TypeError(f"{where}: expected a list of augmentations, got {type(params).__name__}")
        steps = []
        for index, entry in enumerate(params):
            entry = dict(entry)
            name = entry.pop("name", None)
            if name not in AUGMENTATIONS:
                raise ValueError(f"{where}[{index}]: unknown augmentation {name!r}; known: {sorted(AUGMENTATIONS)}")
            steps.append(config_from_params(AUGMENTATIONS[name], entry, f"{where}[{index}]"))
        return cls(tuple(steps))


def default_augmentations(fs: float = 250.0) -> AugmentationList:
    """The documented default list (module docstring), with the baseline wander at ``fs`` Hz."""
    return AugmentationList((
        AmplitudeScale(), BaselineWander(fs=fs), GaussianNoise(), RandomShift(), TimeMask(),
    ))
