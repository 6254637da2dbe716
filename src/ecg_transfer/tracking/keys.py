"""MLflow names of the history's columns: MLflow accepts only alphanumerics, ``_ - . / :`` and
spaces in a metric or param name (at most 250 characters, not a path like ``..``), while the
history keeps the user's label text (``f1_~``, ``f1_AF+flutter``).

Per-class columns (``[<split>_]f1_<label>``, and a multi-label run's ``auroc_<label>``;
``training.metrics``) are logged under the class's
safe name (:func:`ecg_transfer.signals.classes.safe_class_name`): ``train_f1_class-fb3c6e4d``;
the run records the mapping as params ``class_name.<safe name>`` = the label. Every other name
is checked as it is: one MLflow would refuse raises :class:`ValueError` when the metrics are
built, outside the guarded tracking calls, so it stops the run instead of being swallowed.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable

from ecg_transfer.signals.classes import safe_class_name

MAX_KEY_LENGTH = 250  # mlflow.utils.validation.MAX_ENTITY_KEY_LENGTH
_MLFLOW_NAME = re.compile(r"[/\w.\- :]*")  # mlflow.utils.validation.validate_param_and_metric_name
_PER_CLASS = re.compile(r"(?P<head>(?:.*?_)?(?:f1|auroc)_)(?P<label>.+)", re.DOTALL)
_SUMMARY_F1 = {"weighted", "macro", "micro"}


def key_problem(key: str) -> str | None:
    """Why MLflow would refuse ``key`` as a metric or param name, or None."""
    if not key:
        return "it is empty"
    if not _MLFLOW_NAME.fullmatch(key):
        return "MLflow accepts only alphanumerics, '_', '-', '.', '/', ':' and spaces"
    normal = posixpath.normpath(key)
    if normal != key or normal == "." or normal.startswith(("..", "/")):
        return f"it reads as the path {normal!r}"
    if len(key) > MAX_KEY_LENGTH:
        return f"it is {len(key)} characters long, more than MLflow's {MAX_KEY_LENGTH}"
    return None


def check_key(key: str, source: str) -> str:
    """``key`` if MLflow accepts it, else a ValueError naming ``source`` (what it came from)."""
    problem = key_problem(key)
    if problem:
        raise ValueError(f"MLflow would refuse the name {key!r} (from {source}): {problem}")
    return key


def metric_key(name: str) -> tuple[str, str | None]:
    """(the MLflow key of the metric ``name``, the class label it names or None). A per-class
    ``...f1_<label>`` or ``...auroc_<label>`` gets the label's safe name; any name is checked (:func:`check_key`)."""
    match = _PER_CLASS.fullmatch(name)
    if match is None or match["label"] in _SUMMARY_F1:
        return check_key(name, f"the metric {name!r}"), None
    label = match["label"]
    safe = safe_class_name(label)
    key = check_key(match["head"] + safe, f"the metric {name!r}")
    return key, (label if safe != label else None)


def class_params(labels: Iterable[str]) -> dict[str, str]:
    """The params recording which label a safe name stands for: ``class_name.<safe>`` = label."""
    return {f"class_name.{safe_class_name(label)}": label for label in labels}
