"""The bundled default data: simulated stand-ins for the labelled release and the unlabelled
corpus, which the catalog writes in the real datasets' own formats (docs/synthetic_data.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ecg_transfer.signals.synthetic import (
    SyntheticChapmanRelease,
    SyntheticMonitorCorpus,
    simulate_chapman_release,
    simulate_monitor_corpus,
)
from ecg_transfer.typed_config import config_from_params


@dataclass(frozen=True)
class SimulatedRelease:
    """``bundled_data.labelled``: the simulated Chapman-like release."""

    n_records: int
    min_per_class: int


@dataclass(frozen=True)
class SimulatedCorpus:
    """``bundled_data.unlabelled``: the simulated bedside-monitor corpus."""

    n_patients: int
    seconds_per_patient: float
    sampling_rates: tuple[float, ...]


@dataclass(frozen=True)
class BundledDataConfig:
    """``params:bundled_data``, typed once at the node boundary."""

    seed: int
    labelled: SimulatedRelease
    unlabelled: SimulatedCorpus

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> BundledDataConfig:
        unknown = sorted(set(params) - {"seed", "labelled", "unlabelled"})
        if unknown:
            raise ValueError(
                f"bundled_data: unknown parameter(s) {unknown}; known: ['labelled', 'seed', 'unlabelled']"
            )
        seed = params.get("seed")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"bundled_data.seed: expected an integer, got {seed!r}")
        return cls(
            seed=seed,
            labelled=config_from_params(SimulatedRelease, params.get("labelled"), "bundled_data.labelled"),
            unlabelled=config_from_params(SimulatedCorpus, params.get("unlabelled"), "bundled_data.unlabelled"),
        )


def simulate_labelled_release(bundled_data: dict[str, Any]) -> SyntheticChapmanRelease:
    """The bundled stand-in for the Chapman-Shaoxing release, written by the catalog in its format."""
    config = BundledDataConfig.from_params(bundled_data)
    return simulate_chapman_release(
        n_records=config.labelled.n_records,
        seed=config.seed,
        min_per_class=config.labelled.min_per_class,
    )


def simulate_unlabelled_corpus(bundled_data: dict[str, Any]) -> SyntheticMonitorCorpus:
    """The bundled stand-in for the bedside-monitor corpus, written by the catalog as WFDB."""
    config = BundledDataConfig.from_params(bundled_data)
    return simulate_monitor_corpus(
        n_patients=config.unlabelled.n_patients,
        seconds_per_patient=config.unlabelled.seconds_per_patient,
        seed=config.seed + 1,
        sampling_rates=config.unlabelled.sampling_rates,
    )
