"""A Kedro dataset for PyTorch state dicts, saved so that ``torch.load(weights_only=True)``
opens them: plain tensors only, no pickled code to trust."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from kedro.io import AbstractDataset, DatasetError

from ecg_transfer.atomic_files import atomic_write, atomic_write_text
from ecg_transfer.models.weights import check_card_fields


class TorchStateDictDataset(AbstractDataset[dict, dict]):
    """A ``state_dict`` (name -> tensor) in a ``.pt`` file, loaded on the CPU."""

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None):
        self._filepath = PurePosixPath(filepath)
        self.metadata = metadata

    def _load(self) -> dict[str, torch.Tensor]:
        path = Path(self._filepath)
        if not path.is_file():
            raise DatasetError(f"weights file not found: {path}")
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # a pickle with code, a truncated file, not a torch file
            raise DatasetError(f"{path}: not a weights-only PyTorch state dict ({error})") from error

    def _save(self, data: dict[str, torch.Tensor]) -> None:
        if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
            raise DatasetError(f"{self._filepath}: expected a dict of tensors (a state_dict)")
        state = {k: v.detach().cpu().contiguous() for k, v in data.items()}
        atomic_write(Path(self._filepath), lambda tmp: torch.save(state, tmp))

    def _exists(self) -> bool:
        return Path(self._filepath).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}


class PretrainedEncoderDataset(AbstractDataset[dict, dict]):
    """The pretrained encoder as the study publishes it: ``{"weights": state_dict, "card": dict}``
    in two files, the tensors-only ``.pt`` and its JSON model card.

    ``read_only: true`` is for an encoder from elsewhere (``--params=encoder_weights=..,
    encoder_card=..``): such an entry refuses to save, so no run can write over the user's files.
    """

    def __init__(self, weights_path: str, card_path: str, read_only: bool = False,
                 metadata: dict[str, Any] | None = None):
        self._weights = TorchStateDictDataset(weights_path)
        self._card_path = PurePosixPath(card_path)
        self._read_only = bool(read_only)
        self.metadata = metadata

    def _load(self) -> dict[str, Any]:
        card_path = Path(self._card_path)
        if not card_path.is_file():
            raise DatasetError(f"model card not found: {card_path}")
        try:
            card = json.loads(card_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise DatasetError(f"{card_path}: the model card is not valid JSON ({error})") from error
        try:
            check_card_fields(card, str(card_path))
        except ValueError as error:
            raise DatasetError(str(error)) from error
        return {"weights": self._weights.load(), "card": card}

    def _save(self, data: dict[str, Any]) -> None:
        if self._read_only:
            raise DatasetError(
                f"{self._describe()}: this encoder entry is read-only (an encoder from elsewhere); "
                "the study writes its own encoder to data/06_models/pretrained_encoder"
            )
        if not isinstance(data, dict) or set(data) != {"weights", "card"}:
            raise DatasetError(f"{self._card_path}: expected {{'weights': state_dict, 'card': dict}}")
        self._weights.save(data["weights"])
        atomic_write_text(Path(self._card_path), json.dumps(data["card"], indent=2, sort_keys=True, default=float))

    def _exists(self) -> bool:
        return self._weights.exists() and Path(self._card_path).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"weights_path": str(self._weights._filepath), "card_path": str(self._card_path),
                "read_only": self._read_only}
