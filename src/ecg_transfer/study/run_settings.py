"""One study configuration per set of statistics: the arms' run settings must agree.

Every arm writes ``<arm>.arm_settings`` beside its histories: the fractions and trials it ran,
its training settings, the class list, fingerprints of the data it trained on, the settings of
every parameter group it read that change results (``parameters``, e.g. ``finetuning.head``)
and its encoder's fingerprint. Re-running one arm with other parameters (3 epochs instead of
10, another head, another encoder) and then the statistics would otherwise mix configurations
without a word; ``check_arm_settings`` refuses, naming the arms and the settings that differ,
and its result is what the report describes. Settings marked cosmetic on their config (a
progress bar, a thread count; ecg_transfer.runs) are not recorded, so they never differ.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

# Settings every arm of one study shares; a difference is an error.
SHARED_SETTINGS = ("fractions", "n_trials", "training", "classes", "bootstrap_fingerprint", "labelled_fingerprint")
# Settings shared by the arms that have them: a parameter group (``parameters``) by the arms that
# read it, the pretrained encoder by the arms that start from it.
REQUIRED_SETTINGS = ("arm", "spec", "parameters", *SHARED_SETTINGS)
SPEC_DEFAULTS = {"head": "mlp"}


def check_arm_settings(
    arm_settings: Sequence[Mapping[str, Any]],
    arms: Sequence[str],
    specs: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The study's run settings, after checking that every arm ran under the same ones.

    ``arm_settings`` come in the order of ``arms`` (the registry's). ``specs`` (arm -> {init,
    freeze, input}, from the current ``study.arms``) must match what each arm ran as. Returns
    {"arms": [...], "specs": {arm: spec}, "fingerprints": {arm: {"run": ..., "encoder": ...}},
    and the shared settings}. Raises ValueError naming the arms and differing settings.
    """
    arms = [str(a) for a in arms]
    if len(arm_settings) != len(arms):
        raise ValueError(
            f"statistics: {len(arm_settings)} arm_settings for the {len(arms)} arms {arms}; the "
            "pipeline was built for other arms than study.arms holds"
        )
    problems = []
    for arm, settings in zip(arms, arm_settings):
        if not isinstance(settings, Mapping):
            raise ValueError(f"statistics: {arm}.arm_settings is not a mapping: {settings!r}")
        missing = [key for key in REQUIRED_SETTINGS if key not in settings]
        if missing:
            raise ValueError(f"statistics: {arm}.arm_settings lacks {missing}; re-run the arm")
        if str(settings["arm"]) != arm:
            problems.append(f"{arm}.arm_settings describes the arm {settings['arm']!r}")
        if specs is not None and arm in specs:
            ran = {k: _normalise(settings["spec"].get(k, SPEC_DEFAULTS.get(k))) for k in specs[arm]}
            now = {k: _normalise(v) for k, v in specs[arm].items()}
            if json.dumps(ran, sort_keys=True) != json.dumps(now, sort_keys=True):  # freeze: true is not 1
                problems.append(f"{arm} ran as {ran} but study.arms now says {now}")
    for key in SHARED_SETTINGS:
        problems.extend(_differences(key, [(arm, _normalise(s[key])) for arm, s in zip(arms, arm_settings)]))
    problems.extend(_shared_by_readers(arms, arm_settings))
    if problems:
        raise ValueError(
            "statistics: the arms' runs were not made under one study configuration; re-run the "
            "arms whose settings are stale before combining them:\n  " + "\n  ".join(problems)
        )
    first = arm_settings[0]
    return {
        "arms": arms,
        "specs": {arm: dict(s["spec"]) for arm, s in zip(arms, arm_settings)},
        "fingerprints": {
            arm: {"run": s.get("run_fingerprint"), "encoder": s.get("encoder_fingerprint")}
            for arm, s in zip(arms, arm_settings)
        },
        **{key: _normalise(first[key]) for key in SHARED_SETTINGS},
    }


def _shared_by_readers(arms: Sequence[str], arm_settings: Sequence[Mapping[str, Any]]) -> list[str]:
    """Differences in a parameter group between the arms that read it, and in the pretrained
    encoder between the arms that start from one."""
    problems = []
    groups = sorted({name for s in arm_settings for name in s["parameters"]})
    for name in groups:
        readers = [(arm, _normalise(s["parameters"][name])) for arm, s in zip(arms, arm_settings) if name in s["parameters"]]
        problems.extend(_differences(name, readers))
    # Arms that name one encoder (``init``: the CAE's, or a pretraining method's) start from the
    # same one; arms that name different methods start, of course, from different encoders.
    inits = sorted({str(s["spec"].get("init")) for s in arm_settings if s.get("encoder_fingerprint") is not None})
    for init in inits:
        encoders = [(arm, s.get("encoder_fingerprint")) for arm, s in zip(arms, arm_settings)
                    if s.get("encoder_fingerprint") is not None and str(s["spec"].get("init")) == init]
        what = "the pretrained encoder" if init == "pretrained" else f"the encoder of method {init!r}"
        problems.extend(line.replace("encoder differs", f"{what} differs (fingerprint)")
                        for line in _differences("encoder", encoders))
    return problems


def check_histories_match(histories: pd.DataFrame, settings: Mapping[str, Any]) -> None:
    """Every arm's histories hold exactly the settings' fractions and trials 1..n_trials."""
    fractions = sorted(float(f) for f in settings["fractions"])
    trials = list(range(1, int(settings["n_trials"]) + 1))
    problems = []
    for arm in settings["arms"]:
        own = histories[histories["arm"] == arm]
        if own.empty:
            problems.append(f"{arm}: no runs in its training_histories")
            continue
        got_fractions = sorted(float(f) for f in own["fraction"].unique())
        got_trials = sorted(int(t) for t in own["trial"].unique())
        if len(got_fractions) != len(fractions) or not np.allclose(got_fractions, fractions):
            problems.append(f"{arm}: fractions {got_fractions}, its settings say {fractions}")
        if got_trials != trials:
            problems.append(f"{arm}: trials {got_trials}, its settings say 1..{trials[-1]}")
    others = sorted(set(histories["arm"]) - set(settings["arms"]))
    if others:
        problems.append(f"histories of arms {others} that are not in study.arms {list(settings['arms'])}")
    if problems:
        raise ValueError(
            "statistics: the training histories do not match the arms' run settings:\n  " + "\n  ".join(problems)
        )


def describe_run(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The report's "Run" facts, from the run settings (not from today's parameters)."""
    training = dict(settings["training"])
    return {
        "arms": list(settings["arms"]),
        "fractions": [float(f) for f in settings["fractions"]],
        "n_trials": int(settings["n_trials"]),
        "epochs": training.get("epochs"),
        "training": training,
        "classes": list(settings["classes"]),
        "bootstrap_fingerprint": settings["bootstrap_fingerprint"],
        "labelled_fingerprint": settings["labelled_fingerprint"],
    }


def _normalise(value: Any) -> Any:
    """JSON round trip: tuples become lists and numpy scalars plain numbers, so equal settings
    compare equal however they were written."""
    return json.loads(json.dumps(value, sort_keys=True, default=_plain))


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _differences(key: str, values: list[tuple[str, Any]]) -> list[str]:
    """'key: v1 (arm1, arm2); v2 (arm3)' lines for a setting that differs, per sub-key of a mapping."""
    if all(value == values[0][1] for _, value in values):
        return []
    if all(isinstance(value, Mapping) for _, value in values):
        lines = []
        for sub in sorted({k for _, value in values for k in value}):
            lines.extend(_differences(f"{key}.{sub}", [(arm, value.get(sub, "<missing>")) for arm, value in values]))
        return lines
    groups: dict[str, list[str]] = {}
    for arm, value in values:
        groups.setdefault(json.dumps(value, sort_keys=True), []).append(arm)
    return [f"{key} differs: " + "; ".join(f"{value} ({', '.join(arms)})" for value, arms in groups.items())]
