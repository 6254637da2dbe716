"""A pretraining method as data: a name, a pretext task and its options, read once from YAML.

``pretraining.methods`` maps names to specs (``conf/base/parameters_pretraining.yml``)::

    methods:
      cae: {task: reconstruct}                       # the paper's CAE (pretraining.cae/training)
      simclr: {task: contrastive, temperature: 0.1, positives: same_window}
      clocs: {task: contrastive, positives: same_record}
      masked: {task: masked, mask_ratio: 0.2, span_length: 50}

:class:`PretextMethod` turns one entry into the model and task that ``engine.fit`` trains
(every one around the CAE's encoder, from the same ``CaeConfig``) and into the inputs it reads
(:class:`~ecg_transfer.training.pretext_tasks.PairedWindows` for ``same_record``). The
``reconstruct`` method takes no options here: it is the CAE, configured by ``pretraining.cae``
and ``pretraining.training``. See docs/pretext_tasks.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from torch import nn

from ecg_transfer.models.cae import CaeConfig, ConvAutoencoder
from ecg_transfer.models.pretext import ContrastiveModel, MaskedAutoencoder, MaskingConfig
from ecg_transfer.signals.augment import AugmentationList, default_augmentations
from ecg_transfer.training.pretext_tasks import (
    ContrastiveTask,
    MaskedReconstructionTask,
    PairedWindows,
    pair_windows_by_record,
    record_codes,
)
from ecg_transfer.training.tasks import ReconstructionTask, Task

PRETEXT_TASKS = ("reconstruct", "contrastive", "masked")
_OPTIONS = {
    "reconstruct": set(),
    "contrastive": {"temperature", "positives", "augmentations", "projection_hidden", "projection_features",
                    "eval_seed"},
    "masked": {"mask_ratio", "span_length", "eval_seed"},
}
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class PretextMethod:
    """One pretraining method. ``options`` are the task's (validated on construction);
    ``training`` overrides fields of ``pretraining.training`` for this method alone."""

    name: str
    task: str
    options: Mapping[str, Any] = field(default_factory=dict)
    training: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"pretraining.methods.{self.name}"
        if not _NAME.match(str(self.name)):
            raise ValueError(f"{where}: a method name must be letters, digits and _ (a letter first)")
        if self.task not in PRETEXT_TASKS:
            raise ValueError(f"{where}.task: must be one of {PRETEXT_TASKS}, got {self.task!r}")
        unknown = sorted(set(self.options) - _OPTIONS[self.task])
        if unknown:
            raise ValueError(
                f"{where}: unknown option(s) {unknown} for task {self.task}; known: {sorted(_OPTIONS[self.task])}"
                + (" (the CAE is configured by pretraining.cae and pretraining.training)" if self.task == "reconstruct" else "")
            )
        if self.task == "reconstruct" and self.training:
            raise ValueError(f"{where}.training: the reconstruct method trains with pretraining.training itself")
        self.task_strategy()  # options that do not make a task fail here, naming the method
        self._parts(250.0)

    @classmethod
    def from_params(cls, name: str, params: Mapping[str, Any] | None) -> PretextMethod:
        params = dict(params or {})
        if "task" not in params:
            raise ValueError(f"pretraining.methods.{name}: needs a task, one of {PRETEXT_TASKS}")
        task, training = params.pop("task"), params.pop("training", None) or {}
        if not isinstance(training, Mapping):
            raise TypeError(f"pretraining.methods.{name}.training: expected a mapping, got {training!r}")
        return cls(str(name), task, params, dict(training))

    @property
    def paired(self) -> bool:
        return self.task == "contrastive" and self.options.get("positives", "same_window") == "same_record"

    def task_strategy(self) -> Task:
        """The task the loop runs for this method."""
        if self.task == "reconstruct":
            return ReconstructionTask()
        if self.task == "masked":
            return MaskedReconstructionTask()
        try:
            return ContrastiveTask(float(self.options.get("temperature", 0.1)), self.options.get("positives", "same_window"))
        except (TypeError, ValueError) as error:
            raise ValueError(f"pretraining.methods.{self.name}: {error}") from None

    def _parts(self, fs: float) -> dict[str, Any]:
        """The typed options of the model (no module built: no random draw)."""
        options = self.options
        try:
            parts: dict[str, Any] = {"eval_seed": int(options.get("eval_seed", 0))}
            if self.task == "masked":
                parts["masking"] = MaskingConfig(float(options.get("mask_ratio", 0.2)), int(options.get("span_length", 50)))
            elif self.task == "contrastive":
                given = options.get("augmentations")
                if isinstance(given, list):  # baseline wander at the windows' rate unless set
                    given = [{"fs": fs, **entry} if isinstance(entry, Mapping) and entry.get("name") == "baseline_wander"
                             else entry for entry in given]
                parts["augmentations"] = (default_augmentations(fs) if given is None else
                                          AugmentationList.from_params(given, "augmentations"))
                parts["widths"] = (int(options.get("projection_hidden", 60)), int(options.get("projection_features", 32)))
                if min(parts["widths"]) < 1:
                    raise ValueError(f"projection widths must be >= 1, got {parts['widths']}")
            return parts
        except (TypeError, ValueError) as error:
            raise ValueError(f"pretraining.methods.{self.name}: {error}") from None

    def build(self, cfg: CaeConfig, fs: float) -> nn.Module:
        """The model to fit, around a new ``Encoder(cfg)`` (seed torch first), reading windows of
        ``cfg.in_channels`` leads; ``fs`` is the windows' sampling rate (the baseline-wander
        augmentation is in Hz)."""
        parts = self._parts(fs)
        if self.task == "reconstruct":
            return ConvAutoencoder(cfg)
        if self.task == "masked":
            try:
                return MaskedAutoencoder(cfg, parts["masking"], parts["eval_seed"])
            except ValueError as error:
                raise ValueError(f"pretraining.methods.{self.name}: {error}") from None
        return ContrastiveModel(cfg, parts["augmentations"], self.paired, *parts["widths"], parts["eval_seed"])

    def model_spec(self, cfg: CaeConfig, fs: float) -> dict[str, Any]:
        """How a distributed worker builds this model (``launcher.fit_distributed``'s
        ``model_spec``): :func:`build_method_model` with the method, architecture and rate as
        plain values, so the worker's model is :meth:`build`'s."""
        return {"builder": f"{__name__}:{build_method_model.__name__}",
                "arguments": {"method": self.describe(), "cae": asdict(cfg), "fs": float(fs)}}

    def inputs(self, windows, record_ids, seed: int) -> tuple[Any, np.ndarray | None]:
        """What the loop reads for a split, ``(x, y)``: the windows and no labels, or for
        ``same_record`` each window beside another window of its record (pairs drawn from
        ``seed``) and each row's record code, so that a record's windows are no negatives of
        each other (:class:`~ecg_transfer.training.pretext_tasks.ContrastiveTask`)."""
        if not self.paired:
            return windows, None
        return PairedWindows(windows, pair_windows_by_record(record_ids, seed)), record_codes(record_ids)

    def describe(self) -> dict[str, Any]:
        """For the model card and the run's parameters: the method, its task and options."""
        return {"method": self.name, "task": self.task, "options": dict(self.options),
                "training_overrides": dict(self.training)}


def build_method_model(method: Mapping[str, Any], cae: Mapping[str, Any], fs: float) -> nn.Module:
    """The model of a method described by :meth:`PretextMethod.describe`, for windows of the
    architecture ``cae`` (a ``CaeConfig`` as a dict) at ``fs`` Hz: what a worker of a
    distributed run builds (its weights are then loaded from the launcher's)."""
    rebuilt = PretextMethod(str(method["method"]), str(method["task"]), dict(method["options"]),
                            dict(method["training_overrides"]))
    return rebuilt.build(CaeConfig(**cae), float(fs))


def methods_from_params(params: Mapping[str, Any] | None) -> dict[str, PretextMethod]:
    """``pretraining.methods`` as typed methods; at most one ``reconstruct`` (the CAE)."""
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise TypeError(f"pretraining.methods: expected a mapping of name -> method, got {type(params).__name__}")
    methods = {str(name): PretextMethod.from_params(str(name), spec) for name, spec in params.items()}
    reconstruct = [name for name, method in methods.items() if method.task == "reconstruct"]
    if len(reconstruct) > 1:
        raise ValueError(f"pretraining.methods: {reconstruct} are all 'reconstruct'; the CAE is trained once")
    return methods
