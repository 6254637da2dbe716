"""The study's arms as data: one YAML block (``study.arms``) read once into typed specs.

An arm is defined by how the network starts (``init``; a random window encoder also names
its initialisation scheme, ``init_scheme``), how much of the pretrained part trains
(``freeze``: all, none, or the first N residual blocks frozen), what it reads (``input``) and
its head (``head``: ``mlp`` or ``linear``). Pipelines, tables, figures, the report and the
comparisons iterate over this registry, so a new arm is one YAML entry; see
docs/models_and_training.md ("Adding an arm").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ecg_transfer.models.cae import INIT_SCHEMES
from ecg_transfer.runs import COSMETIC, result_settings
from ecg_transfer.typed_config import config_from_params

# ``init``: one of these, or the name of a pretraining method (``pretraining.methods``) whose
# encoder the arm starts from; ``pretrained`` is the CAE (the ``reconstruct`` method).
INITS = ("random", "pretrained")
_METHOD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
INPUTS = ("window", "spectrogram")
HEADS = ("mlp", "linear")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class ArmSpec:
    """One arm. ``init: pretrained`` with ``input: window`` starts from the CAE's encoder;
    with ``input: spectrogram`` it uses the frozen ImageNet CNN (which must be frozen).
    ``freeze``: true (the whole encoder), false, or N (the first N residual blocks; window
    arms). ``head``: ``mlp`` (the parameter group's hidden layer) or ``linear`` (none).
    ``init_scheme`` (``init: random`` only; models/cae.py, ``init_encoder``): "cae", the CAE's
    own scheme, for an encoder that trains; "standard" for a frozen random control.
    ``label`` and ``colour`` only dress tables and figures."""

    name: str
    init: str
    freeze: bool | int
    input: str
    label: str = field(metadata=COSMETIC)
    colour: str = field(default="tab:gray", metadata=COSMETIC)
    head: str = "mlp"
    init_scheme: str = "cae"

    def __post_init__(self) -> None:
        where = f"study.arms.{self.name}"
        if not _NAME.match(self.name):
            raise ValueError(f"{where}: an arm name is lower-case letters, digits and '_', got {self.name!r}")
        if not isinstance(self.init, str) or not (self.init in INITS or _METHOD_NAME.match(self.init)):
            raise ValueError(
                f"{where}: init must be one of {INITS} or the name of a pretraining method "
                f"(pretraining.methods), got {self.init!r}"
            )
        if self.input not in INPUTS:
            raise ValueError(f"{where}: input must be one of {INPUTS}, got {self.input!r}")
        if not isinstance(self.freeze, int) or (not isinstance(self.freeze, bool) and self.freeze < 1):
            raise ValueError(
                f"{where}: freeze must be true or false, or N >= 1 (the first N residual blocks "
                f"frozen), got {self.freeze!r}"
            )
        if self.head not in HEADS:
            raise ValueError(f"{where}: head must be one of {HEADS}, got {self.head!r}")
        if self.init_scheme not in INIT_SCHEMES:
            raise ValueError(f"{where}: init_scheme must be one of {INIT_SCHEMES}, got {self.init_scheme!r}")
        if self.init_scheme != "cae" and not (self.init == "random" and self.input == "window"):
            raise ValueError(
                f"{where}: init_scheme {self.init_scheme!r} sets how a random encoder starts; this arm "
                f"has init {self.init}, input {self.input} (leave init_scheme out)"
            )
        if self.pretext_method is not None and self.input != "window":
            raise ValueError(f"{where}: init {self.init!r} names a pretraining method, which only window arms read")
        if self.input == "spectrogram" and not (self.init == "pretrained" and self.freeze is True):
            raise ValueError(
                f"{where}: a spectrogram arm reads a frozen ImageNet CNN's features, so it needs "
                "init: pretrained and freeze: true"
            )

    @property
    def uses_encoder(self) -> bool:
        """Whether the arm starts from a pretrained window encoder (the CAE's or a method's)."""
        return self.input == "window" and self.init != "random"

    @property
    def pretext_method(self) -> str | None:
        """The pretraining method whose encoder the arm starts from, when ``init`` names one
        (None for ``random`` and for ``pretrained``, the CAE)."""
        return None if self.init in INITS else self.init

    def result_spec(self) -> dict[str, Any]:
        """What the arm is, as far as its numbers go (not its name, label or colour): part of its
        run key and of the settings the statistics check."""
        return {k: v for k, v in result_settings(self).items() if k != "name"}


@dataclass(frozen=True)
class ArmRegistry:
    """The arms in display order (the YAML order), looked up by name."""

    arms: tuple[ArmSpec, ...]

    def __post_init__(self) -> None:
        if not self.arms:
            raise ValueError("study.arms: at least one arm is needed")
        names = [arm.name for arm in self.arms]
        duplicated = sorted({name for name in names if names.count(name) > 1})
        if duplicated:
            raise ValueError(f"study.arms: arm names must be unique, {duplicated} repeat")

    def __iter__(self) -> Iterator[ArmSpec]:
        return iter(self.arms)

    def __len__(self) -> int:
        return len(self.arms)

    def __contains__(self, name: object) -> bool:
        return name in self.names

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(arm.name for arm in self.arms)

    def __getitem__(self, name: str) -> ArmSpec:
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise KeyError(f"unknown arm {name!r}; the study's arms are {list(self.names)}")

    def ordered(self, present: Iterable[str]) -> list[str]:
        """``present`` arm names in registry order; names the registry lacks come last, sorted."""
        present = set(present)
        known = [name for name in self.names if name in present]
        return known + sorted(present - set(known))

    def label(self, name: str) -> str:
        return self[name].label if name in self else name

    def colour(self, name: str) -> str | None:
        return self[name].colour if name in self else None

    def check_comparisons(self, pairs: Sequence[Sequence[str]], where: str = "statistics.comparisons") -> tuple[tuple[str, str], ...]:
        """Validated (a, b) pairs; an unknown arm is an error listing the known ones."""
        checked = []
        for pair in pairs:
            if len(pair) != 2:
                raise ValueError(f"{where}: each comparison is a pair [a, b], got {list(pair)}")
            a, b = (str(name) for name in pair)
            unknown = [name for name in (a, b) if name not in self]
            if unknown:
                raise ValueError(
                    f"{where}: comparison [{a}, {b}] names unknown arm(s) {unknown}; "
                    f"the study's arms are {list(self.names)}"
                )
            if a == b:
                raise ValueError(f"{where}: comparison [{a}, {b}] compares an arm with itself")
            checked.append((a, b))
        return tuple(checked)


def check_arm_methods(arms: Iterable[ArmSpec], methods: Mapping[str, Any]) -> None:
    """Every ``init`` that names a pretraining method names one of ``methods`` (name -> method
    with a ``task``) other than the CAE, which arms call ``pretrained``."""
    pretext = sorted(name for name, method in methods.items() if method.task != "reconstruct")
    for arm in arms:
        name = arm.pretext_method
        if name is None or name in pretext:
            continue
        if name in methods:
            raise ValueError(
                f"study.arms.{arm.name}.init: {name!r} is the reconstruct method, the CAE: arms name it "
                "init: pretrained"
            )
        raise ValueError(
            f"study.arms.{arm.name}.init: {name!r} is neither random, pretrained (the CAE) nor a pretraining "
            f"method; pretraining.methods has {pretext}"
        )


def arm_registry(arms: Mapping[str, Mapping[str, Any]]) -> ArmRegistry:
    """The registry from the ``study.arms`` parameter block (name -> spec fields). An arm set to
    null is left out: environments merge into conf/base, so that is how one drops a base arm."""
    if not isinstance(arms, Mapping) or not arms:
        raise ValueError(f"study.arms must be a mapping of arm name -> settings, got {arms!r}")
    fields = {"init", "freeze", "input", "head", "label", "colour", "init_scheme"}
    specs = []
    for name, settings in arms.items():
        if settings is None:  # how an environment drops an arm of conf/base (`image: null`)
            continue
        settings = dict(settings)
        missing = sorted({"init", "freeze", "input"} - set(settings))
        unknown = sorted(set(settings) - fields)
        if missing or unknown:
            raise ValueError(
                f"study.arms.{name}: "
                + "; ".join(filter(None, [missing and f"missing {missing}", unknown and f"unknown keys {unknown}"]))
                + f" (allowed: {sorted(fields)})"
            )
        where = f"study.arms.{name}"
        specs.append(config_from_params(ArmSpec, {"label": str(name), **settings, "name": str(name)}, where))
    return ArmRegistry(tuple(specs))
