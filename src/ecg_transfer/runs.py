"""What identifies a run and what is recorded of it, for every stage (pretraining, fine-tuning).

A finished run is reused when nothing its numbers depend on changed, so its key hashes exactly
the settings that change results. Which those are is said once, on the typed config: a field
that only changes how a run looks or how fast it goes (a progress bar, a thread count) carries
``metadata=COSMETIC``; :func:`result_settings` leaves such fields out, and the run keys and the
arms' agreement check (study/run_settings.py) read only what it returns. Paths never enter a
key: the contents they lead to do (the windows' hash, the encoder's weights, the features).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

# The field-metadata key, and the mark of a field that does not change a run's numbers.
AFFECTS_RESULTS = "affects_results"
COSMETIC = {AFFECTS_RESULTS: False}


def affects_results(field: dataclasses.Field) -> bool:
    """Whether a config field changes results (every field does unless marked ``COSMETIC``)."""
    return bool(field.metadata.get(AFFECTS_RESULTS, True))


def cosmetic_fields(cls: type) -> frozenset[str]:
    """The names of ``cls``'s fields marked ``COSMETIC`` (a resume may differ in them)."""
    return frozenset(f.name for f in dataclasses.fields(cls) if not affects_results(f))


def result_settings(config: Any) -> dict[str, Any]:
    """The fields of a config dataclass that change results, nested configs included, as plain
    JSON values (tuples become lists): what a run key and the agreement check compare."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"result_settings: expected a config dataclass instance, got {config!r}")
    return {
        f.name: _plain(getattr(config, f.name))
        for f in dataclasses.fields(config)
        if affects_results(f)
    }


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return result_settings(value)
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def fingerprint(*parts: Any) -> str:
    """A short stable hash of configuration and data, so a finished run is reused only when
    nothing it depends on changed."""
    digest = hashlib.sha1()
    for part in parts:
        if isinstance(part, np.ndarray) and part.dtype != object:
            digest.update(str((part.dtype.str, part.shape)).encode())
            digest.update(np.ascontiguousarray(part).tobytes())
        elif isinstance(part, np.ndarray):  # strings: their bytes, never the object pointers
            digest.update(json.dumps(part.tolist(), default=str).encode())
        elif isinstance(part, Mapping) and part and all(hasattr(v, "numpy") for v in part.values()):
            for key in sorted(part):
                digest.update(key.encode())
                digest.update(part[key].detach().cpu().numpy().tobytes())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:12]


def run_record(
    run_name: str, params: Mapping[str, Any], tags: Mapping[str, Any], history: pd.DataFrame,
    metrics: Mapping[str, float],
) -> dict[str, Any]:
    """The one shape of an MLflow run record (datasets/mlflow_runs.py): tags as strings, the
    per-epoch history without the columns that identify the run."""
    return {
        "run_name": run_name,
        "params": dict(params),
        "tags": {str(k): str(v) for k, v in tags.items()},
        "history": history[["epoch", "split"] + [c for c in history.columns
                                                 if c not in ("epoch", "split", "fraction", "arm", "trial")]],
        "metrics": dict(metrics),
    }
