"""A Kedro dataset for PyTorch state dicts, saved so that ``torch.load(weights_only=True)``
opens them: plain tensors only, no pickled code to trust."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import torch
from kedro.io import AbstractDataset, DatasetError


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
        path = Path(self._filepath)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(path.suffix + ".partial")
        torch.save({k: v.detach().cpu().contiguous() for k, v in data.items()}, partial)
        partial.replace(path)

    def _exists(self) -> bool:
        return Path(self._filepath).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
