"""Publishing and loading the pretrained encoder: a plain state_dict plus a JSON model card.

The weights file holds only tensors, so ``torch.load(path, weights_only=True)``
opens it without running pickled code; the card says what the tensors mean
(architecture, data, sampling rate, normalisation). Loading is strict because a
silently partial load would give a 'transfer' arm that is partly random.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ecg_transfer.atomic_files import atomic_write, atomic_write_text
from ecg_transfer.models.cae import CaeConfig, Encoder
from ecg_transfer.signals.leads import canonical_lead, split_leads

NORMALISATION = "per-window z-score"
# What an encoder written without these facts is stated to expect (the paper's inputs). Only
# the writer fills them in: a card read back must state each of them (REQUIRED_CARD_FIELDS),
# because a card that lost them would otherwise pass for a 250 Hz lead-II z-scored encoder.
CARD_DEFAULTS = {
    "sampling_rate_hz": 250.0,
    "normalisation": NORMALISATION,
    "lead": "II",
}
# Names under which lead II reaches the readers (MLII: the modified lead II of Holter and
# monitor recordings); an encoder pretrained on any of them is a lead-II encoder.
LEAD_II_NAMES = frozenset({"II", "MLII", "ECG II", "ECG2", "ECGII", "LEAD II"})
# The input facts every card must state: the fine-tuning data is checked against them.
REQUIRED_CARD_FIELDS: tuple[str, ...] = ("sampling_rate_hz", "lead", "normalisation")


def lead_family(leads) -> str:
    """The lead(s) of a set of window ``lead`` fields: "II" for lead II under any of its names;
    for windows of several leads (a field "I,II,V1") the leads in their channel order, each
    by its standard name; the sorted distinct values joined by "+" when the windows differ."""
    names = {_one_lead(field) if len(split_leads(field)) == 1 else ",".join(map(canonical_lead, split_leads(field)))
             for field in leads}
    return "+".join(sorted(names)) if names else "unknown"


def _one_lead(name) -> str:
    return "II" if str(name).strip().upper() in LEAD_II_NAMES else str(name).strip()


def preprocessing_card(sampling_rate_hz: float, window_length: int, leads) -> dict[str, Any]:
    """What an encoder's inputs were: the card fields that the fine-tuning data must match."""
    return {
        "sampling_rate_hz": float(sampling_rate_hz),
        "window_length": int(window_length),
        "normalisation": NORMALISATION,
        "lead": lead_family(leads),
    }


def check_card_fields(card: Any, source: str) -> None:
    """Raise naming ``source`` (the card's file) and every input field the card does not state.

    A card without its sampling rate, lead or normalisation cannot be checked against the
    fine-tuning data; guessing the paper's values would fine-tune a 500 Hz or lead-V1 encoder
    on 250 Hz lead-II windows without a word.
    """
    if not isinstance(card, Mapping):
        raise ValueError(f"{source}: the model card is a {type(card).__name__}, not a JSON object")
    missing = [key for key in REQUIRED_CARD_FIELDS if card.get(key) in (None, "")]
    if missing:
        raise ValueError(
            f"{source}: the model card does not state {', '.join(missing)}; a card must say "
            f"what inputs its encoder was pretrained on ({', '.join(REQUIRED_CARD_FIELDS)}). "
            "Add the missing field(s) to the card, or re-publish the encoder with `kedro run "
            "--pipeline=pretraining`"
        )


def check_card_inputs(card: Mapping[str, Any], expected: Mapping[str, Any], source: str) -> None:
    """Raise naming both values for every input field (sampling rate, window length,
    normalisation, lead) where the encoder's card and the data it is to be fine-tuned on differ.
    A field the card does not state is a difference: no value is assumed for it."""
    check_card_fields(card, source)
    differing = []
    for key, wanted in expected.items():
        have = card.get(key, "<absent>")
        same = (
            isinstance(have, (int, float)) and isinstance(wanted, (int, float)) and float(have) == float(wanted)
        ) or have == wanted
        if not same and key == "lead" and "," in f"{have}{wanted}":  # several leads: name both lists
            differing.append(
                f"leads (in channel order): encoder pretrained on {list(split_leads(have))}, "
                f"data has {list(split_leads(wanted))}"
            )
        elif not same:
            differing.append(f"{key}: card {have!r} vs data {wanted!r}")
    if differing:
        raise ValueError(
            f"{source}: the encoder was pretrained on other inputs than the data it is to be "
            "fine-tuned on: " + "; ".join(differing)
        )


def state_dict_differences(expected: Mapping[str, torch.Tensor], given: Mapping[str, Any]) -> list[str]:
    """Human-readable list of missing keys, unexpected keys and shape mismatches (empty = match)."""
    problems = []
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    if missing:
        problems.append(f"missing keys {missing}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected}")
    shapes = [
        f"{key}: expected {tuple(expected[key].shape)}, got {tuple(given[key].shape)}"
        for key in sorted(set(expected) & set(given))
        if tuple(expected[key].shape) != tuple(getattr(given[key], "shape", ()))
    ]
    if shapes:
        problems.append("shape mismatches [" + "; ".join(shapes) + "]")
    return problems


# Architecture fields a card written before the field existed does not state, with the value
# such an encoder has; the field is left out of a card at that value, so one-lead cards (and
# the run keys that hash them) are what they always were.
_IMPLIED_ARCHITECTURE = {"in_channels": 1}


def _jsonable_cfg(cfg: CaeConfig) -> dict[str, Any]:
    return {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in asdict(cfg).items()
        if _IMPLIED_ARCHITECTURE.get(key, "<none>") != value
    }


def encoder_model_card(
    encoder_state: Mapping[str, torch.Tensor], cfg: CaeConfig, card: Mapping[str, Any], weights_file: str = "encoder_weights.pt"
) -> dict[str, Any]:
    """The model card of an encoder: what only the caller knows (``card``: the pretraining data,
    the test MSE) plus what is known here (architecture, window, sampling rate, normalisation,
    parameter count, torch version, date). Raises if the weights do not fit ``cfg``."""
    differences = state_dict_differences(Encoder(cfg).state_dict(), encoder_state)
    if differences:
        raise ValueError(f"the encoder does not match the given CaeConfig ({cfg}): " + "; ".join(differences))
    return {
        **CARD_DEFAULTS,
        "architecture": _jsonable_cfg(cfg),
        "window_length": cfg.window_length,
        "bottleneck_features": cfg.bottleneck,
        "weights_file": weights_file,
        "n_parameters": int(
            sum(t.numel() for k, t in encoder_state.items() if not k.endswith("num_batches_tracked"))
        ),
        "torch_version": torch.__version__,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **dict(card),
    }


def check_pretrained_encoder(
    encoder_state: Any, card: Any, expected_cfg: CaeConfig, source: str = "the pretrained encoder"
) -> dict[str, torch.Tensor]:
    """Return ``encoder_state`` if it and its model card match ``expected_cfg``; otherwise raise a
    ValueError naming every differing architecture field, missing or unexpected key and shape."""
    architecture = card.get("architecture") if isinstance(card, Mapping) else None
    if not isinstance(architecture, dict):
        raise ValueError(f"{source}: the model card has no 'architecture' object")
    check_card_fields(card, source)
    expected = {**_IMPLIED_ARCHITECTURE, **_jsonable_cfg(expected_cfg)}
    architecture = {**_IMPLIED_ARCHITECTURE, **architecture}
    differing = [
        f"{f.name}: card {architecture.get(f.name, '<absent>')!r} vs configured {expected[f.name]!r}"
        for f in fields(CaeConfig)
        if architecture.get(f.name, "<absent>") != expected[f.name]
    ]
    if differing:
        raise ValueError(
            f"{source}: the model card describes another architecture; differing fields: " + "; ".join(differing)
        )
    if not isinstance(encoder_state, Mapping):
        raise ValueError(f"{source}: holds a {type(encoder_state).__name__}, not a state_dict")
    differences = state_dict_differences(Encoder(expected_cfg).state_dict(), encoder_state)
    if differences:
        raise ValueError(f"{source}: the weights do not match the configured encoder: " + "; ".join(differences))
    return dict(encoder_state)


def save_pretrained_encoder(
    weights_path: str | os.PathLike,
    card_path: str | os.PathLike,
    encoder: nn.Module,
    cfg: CaeConfig,
    card: Mapping[str, Any],
) -> dict[str, Any]:
    """Write the encoder's state_dict (tensors only) and its model card; return the card written."""
    weights_path, card_path = Path(weights_path), Path(card_path)
    state = {key: tensor.detach().cpu().clone() for key, tensor in encoder.state_dict().items()}
    try:
        full_card = encoder_model_card(state, cfg, card, weights_file=weights_path.name)
    except ValueError as error:
        raise ValueError(f"save_pretrained_encoder: {error}") from error
    atomic_write(weights_path, lambda tmp: torch.save(state, tmp))
    text = json.dumps(full_card, indent=2, sort_keys=True, default=float)
    atomic_write_text(card_path, text)
    return full_card


def load_pretrained_encoder(
    weights_path: str | os.PathLike, card_path: str | os.PathLike, expected_cfg: CaeConfig
) -> dict[str, torch.Tensor]:
    """Return the encoder state_dict after checking card and tensors against ``expected_cfg``.

    Raises FileNotFoundError for a missing file and ValueError naming every
    differing architecture field, missing/unexpected key and shape mismatch.
    """
    weights_path, card_path = Path(weights_path), Path(card_path)
    for path in (weights_path, card_path):
        if not path.is_file():
            raise FileNotFoundError(f"load_pretrained_encoder: {path} does not exist")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"load_pretrained_encoder: {card_path} is not valid JSON: {error}") from error
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or non-tensor files
        raise ValueError(f"load_pretrained_encoder: {weights_path} is not a tensors-only state_dict: {error}") from error
    return check_pretrained_encoder(state, card, expected_cfg, source=f"load_pretrained_encoder: {weights_path} / {card_path}")
