"""A labels CSV as people write it: which column holds the record, the label and (maybe) the
patient, with or without a header row, with a BOM, with blanks around the cells."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pandas as pd

Column = str | int
# Used when patient_column is not set and the CSV's header row has this column (the rule
# before the option existed): keeping a patient's records in one split is worth the guess.
IMPLICIT_PATIENT_COLUMN = "patient_id"
# Without a header row the default names stand for the first two columns.
_HEADERLESS_DEFAULTS = {"record_column": ("record", 0), "label_column": ("label", 1)}


class LabelsCsv:
    """Where in a labels CSV the record, label and patient are, and how to read it.

    ``record_column`` / ``label_column`` / ``patient_column`` are names or 0-based
    positions; ``header`` is ``True``, ``False`` or ``"auto"``: a first row holding the named
    columns is a header; a two-column file whose first row names a record (as told by the
    reader, which knows its folder) has none; anything else is an error asking for the option.
    """

    def __init__(
        self,
        path: Path,
        record_column: Column = "record",
        label_column: Column = "label",
        patient_column: Column | None = None,
        header: bool | Literal["auto"] = "auto",
    ) -> None:
        for name, column in (("record_column", record_column), ("label_column", label_column),
                             ("patient_column", patient_column)):
            if column is not None and not isinstance(column, str | int):
                raise ValueError(f"{name} must be a column name or a 0-based position, got {column!r}")
        if header not in (True, False, "auto"):
            raise ValueError(f"header must be true, false or auto, got {header!r}")
        self.path = path
        self.record_column = record_column
        self.label_column = label_column
        self.patient_column = patient_column
        self.header = header

    def read(self, names_a_record: Callable[[str], bool], folder: Path) -> pd.DataFrame:
        """The CSV as columns ``record``, ``label``, ``patient`` (strings, blanks stripped).

        Raises ValueError naming the file and the columns it has when a named column is
        missing, or when ``header: auto`` cannot tell whether the first row is a header.
        """
        try:
            raw = pd.read_csv(
                self.path, header=None, dtype=str, keep_default_na=False, encoding="utf-8-sig",
            )
        except pd.errors.EmptyDataError:
            raise ValueError(f"{self.path}: the labels CSV is empty") from None
        raw = raw.apply(lambda column: column.str.strip())
        has_header = self._has_header(raw, names_a_record, folder)
        names = list(raw.iloc[0]) if has_header else None
        body = raw.iloc[1:].reset_index(drop=True) if has_header else raw
        record = self._column(body, names, self.record_column, "record_column")
        label = self._column(body, names, self.label_column, "label_column")
        patient_column = self.patient_column
        if patient_column is None and has_header and IMPLICIT_PATIENT_COLUMN in [
            name.lower() for name in names
        ]:
            patient_column = IMPLICIT_PATIENT_COLUMN
        patient = (
            self._column(body, names, patient_column, "patient_column")
            if patient_column is not None else pd.Series([""] * len(body), dtype=str)
        )
        return pd.DataFrame({"record": record.to_numpy(), "label": label.to_numpy(),
                             "patient": patient.to_numpy()})

    def _has_header(self, raw: pd.DataFrame, names_a_record: Callable[[str], bool], folder: Path) -> bool:
        if self.header != "auto":
            return bool(self.header)
        if raw.empty:
            return False
        first_row = [str(cell) for cell in raw.iloc[0]]
        named = [c for c in (self.record_column, self.label_column, self.patient_column)
                 if isinstance(c, str)]
        lowered = {cell.lower() for cell in first_row}
        if named and all(name.lower() in lowered for name in named):
            return True
        if raw.shape[1] == 2 and names_a_record(first_row[0]):
            return False
        raise ValueError(
            f"{self.path}: cannot tell whether the first row {first_row} is a header: "
            f"it does not hold the column(s) {named}, and it is not a two-column row whose "
            f"first cell names a record under {folder}. Set header: true (and "
            f"record_column / label_column to your column names) or header: false (and the "
            f"columns' 0-based positions)"
        )

    def _column(self, body: pd.DataFrame, names: list[str] | None, column: Column, option: str) -> pd.Series:
        found = names if names is not None else [f"position {i}" for i in range(body.shape[1])]
        if isinstance(column, int):
            position = column
        elif names is None:
            default_name, default_position = _HEADERLESS_DEFAULTS.get(option, (None, None))
            if column != default_name:
                raise ValueError(
                    f"{self.path}: the file has no header row, so {option}={column!r} "
                    f"names no column; give its 0-based position (columns: {found})"
                )
            position = default_position
        else:
            lowered = [name.lower() for name in names]
            if column.strip().lower() not in lowered:
                raise ValueError(
                    f"{self.path}: no column {column!r} ({option}); found columns {found}"
                )
            position = lowered.index(column.strip().lower())
        if not 0 <= position < body.shape[1]:
            raise ValueError(
                f"{self.path}: {option}={column!r} is out of range; found columns {found}"
            )
        return body.iloc[:, position].astype(str)
