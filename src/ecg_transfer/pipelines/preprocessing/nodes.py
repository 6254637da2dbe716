"""Preprocessing: the class list and the records that can be used, patient-level splits, then
the paper's signal chain (resample, high-pass, windows, z-score) streamed into on-disk window
stores, so the pretraining corpus can grow to the paper's 2.6 M windows without growing memory."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ecg_transfer.signals.classes import (
    DECISION_COLUMNS,
    ClassConfig,
    class_table,
    decide_classes,
    decide_multilabel_classes,
    decision_rows,
    label_set,
)
from ecg_transfer.signals.leads import parse_leads, reading, study_leads
from ecg_transfer.signals.overlap import find_overlap, overlap_decisions
from ecg_transfer.signals.preprocess import (
    PreprocessConfig,
    WindowingStats,
    resampled_length,
    windows_from_labelled_records,
    windows_from_unlabelled_records,
)
from ecg_transfer.signals.records import EcgRecord, ExclusionLog
from ecg_transfer.signals.splits import SplitConfig, assign_multilabel_splits, assign_splits
from ecg_transfer.typed_config import config_from_params

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _PreprocessingGroup:
    """The top level of ``params:preprocessing``; the sub-groups are typed by their own configs."""

    unlabelled_seed: int
    leads: Any = ("II",)
    signal: Any = None
    classes: tuple[str, ...] | None = None
    small_classes: str = "exclude"
    labelled_splits: Any = None
    unlabelled_splits: Any = None
    exclude_labelled_overlap: bool = True
    task: str = "single"


TASKS = ("single", "multilabel")


@dataclass(frozen=True)
class PreprocessingParams:
    """``params:preprocessing`` as typed objects, made once at the node boundary."""

    signal: PreprocessConfig
    classes: ClassConfig
    labelled_splits: SplitConfig
    unlabelled_splits: SplitConfig
    unlabelled_seed: int
    exclude_labelled_overlap: bool = True
    task: str = "single"
    leads: tuple[str, ...] | str = ("II",)  # the leads of the windows, in order, or "all"

    @classmethod
    def from_params(cls, preprocessing: Mapping[str, Any]) -> PreprocessingParams:
        top = config_from_params(_PreprocessingGroup, preprocessing, "preprocessing")
        return cls(
            signal=PreprocessConfig.from_params(top.signal, "preprocessing.signal"),
            classes=ClassConfig(classes=top.classes, small_classes=top.small_classes),
            labelled_splits=SplitConfig.from_params(top.labelled_splits, "preprocessing.labelled_splits"),
            unlabelled_splits=SplitConfig.from_params(top.unlabelled_splits, "preprocessing.unlabelled_splits"),
            unlabelled_seed=top.unlabelled_seed,
            exclude_labelled_overlap=top.exclude_labelled_overlap,
            task=_task(top.task),
            leads=parse_leads(top.leads),
        )

    @property
    def multilabel(self) -> bool:
        return self.task == "multilabel"


def _task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"preprocessing.task must be one of {list(TASKS)}, got {task!r}")
    return task


def _short_records(manifest: pd.DataFrame, cfg: PreprocessConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(records shorter than one window at cfg.target_fs, rows saying what happens to them)."""
    lengths = pd.Series(
        [resampled_length(int(n), float(fs), cfg.target_fs) for n, fs in zip(manifest["n_samples"], manifest["fs"])],
        index=manifest.index,
        dtype="int64",
    )
    short = manifest[lengths < cfg.window_length]
    details = lengths[short.index].map(
        lambda n: f"{n} samples at {cfg.target_fs:g} Hz, fewer than window_length={cfg.window_length}"
    )
    if cfg.pad_short:
        return short, decision_rows(short, "padded", "padded", details + "; zero-padded")
    return short, decision_rows(short, "excluded", "too_short", details)


def tabulate_label_classes(label_classes: list[str]) -> pd.DataFrame:
    """The class list with each class's index, the user's label text and the safe name MLflow
    keys and file names use (signals/classes.py, ``safe_class_name``): the mapping, on disk."""
    return class_table(label_classes)


def decide_label_classes(labelled_manifest: pd.DataFrame, preprocessing: dict[str, Any]) -> tuple[list[str], pd.DataFrame]:
    """The study's class list, and the labelled records preprocessing leaves out (or pads).

    Records shorter than a window are excluded as ``too_short`` (or kept and zero-padded,
    listed as ``padded``, with ``signal.pad_short``); then the classes follow from the
    remaining labels (``preprocessing.classes`` or by frequency) and classes with too few
    patients for the splits are left out as ``class_too_small`` (or refused, with
    ``small_classes: error``).
    """
    params = PreprocessingParams.from_params(preprocessing)
    short, short_rows = _short_records(labelled_manifest, params.signal)
    usable = labelled_manifest if params.signal.pad_short else labelled_manifest.drop(index=short.index)
    if not params.multilabel:
        _refuse_label_sets(usable)
    decide = decide_multilabel_classes if params.multilabel else decide_classes
    classes, class_rows = decide(usable, params.classes, params.labelled_splits.min_patients_per_class)
    if params.signal.pad_short:  # a padded record of a class left out is listed once, as left out
        short_rows = short_rows[~short_rows["record_id"].isin(set(class_rows["record_id"]))]
    decisions = pd.concat([d for d in (short_rows, class_rows) if len(d)] or [short_rows], ignore_index=True)
    decisions = decisions.astype(object)[DECISION_COLUMNS]
    if len(decisions):
        counts = decisions.groupby(["outcome", "reason"]).size()
        logger.info(
            "labelled: %s (details in labelled_class_exclusions)",
            ", ".join(f"{n} {outcome} as {reason}" for (outcome, reason), n in counts.items()),
        )
    if params.classes.classes is not None:
        dropped = [c for c in params.classes.classes if c not in classes]
        if dropped:
            logger.warning("labelled: configured classes left out as too small to split: %s", dropped)
    logger.info("labelled: %d classes: %s", len(classes), ", ".join(classes))
    return classes, decisions


def _refuse_label_sets(manifest: pd.DataFrame) -> None:
    """Under ``task: single`` a record has one label: a ``;``-joined set (a reader run with
    ``task: multilabel``) would silently become a class of its own."""
    sets = manifest.loc[manifest["label"].astype(str).str.contains(";", regex=False), ["record_id", "label"]]
    if len(sets):
        raise ValueError(
            f"labelled: {len(sets)} record(s) carry several labels (e.g. {sets['record_id'].iloc[0]!r}: "
            f"{sets['label'].iloc[0]!r}) under preprocessing.task: single; set preprocessing.task: multilabel "
            "(and the reader's task: multilabel), or give each record one label"
        )


def _split_table(manifest: pd.DataFrame, split: SplitConfig, labels: list[str] | None = None) -> pd.DataFrame:
    """Record -> split; ``labels`` (the decided label list) makes it the multi-label split."""
    index = manifest[["record_id", "patient_id", "label"]]
    if labels is None:
        splits = assign_splits(index, test_fraction=split.test_fraction, val_fraction=split.val_fraction,
                               seed=split.seed)
    else:
        splits = assign_multilabel_splits(index, split.test_fraction, split.val_fraction, split.seed, labels)
    return pd.DataFrame({"record_id": manifest["record_id"].to_numpy(), "split": splits.to_numpy()})


def assign_labelled_splits(
    labelled_manifest: pd.DataFrame, labelled_class_exclusions: pd.DataFrame, preprocessing: dict[str, Any]
) -> pd.DataFrame:
    """Stratified train/val/test by patient over the records kept by decide_label_classes."""
    params = PreprocessingParams.from_params(preprocessing)
    excluded = labelled_class_exclusions.loc[labelled_class_exclusions["outcome"] == "excluded", "record_id"]
    kept = labelled_manifest[~labelled_manifest["record_id"].astype(str).isin(set(excluded.astype(str)))]
    if not params.multilabel:
        return _split_table(kept, params.labelled_splits)
    # the labels decide_label_classes kept: the records left hold every such label's patients
    labels, _ = decide_multilabel_classes(kept, params.classes, params.labelled_splits.min_patients_per_class)
    return _split_table(kept, params.labelled_splits, labels)


def find_labelled_overlap(
    unlabelled_manifest: pd.DataFrame,
    labelled_manifest: pd.DataFrame,
    labelled_splits: pd.DataFrame,
    preprocessing: dict[str, Any],
) -> pd.DataFrame:
    """The unlabelled recordings that are labelled records (same samples, or same record name),
    with the labelled split each belongs to: warned about, and left out of pretraining unless
    ``preprocessing.exclude_labelled_overlap`` is false (then kept, and still listed)."""
    params = PreprocessingParams.from_params(preprocessing)
    overlap = find_overlap(unlabelled_manifest, labelled_manifest, labelled_splits)
    decisions = overlap_decisions(overlap, params.exclude_labelled_overlap)
    if len(decisions):
        by_split = decisions["labelled_split"].value_counts().sort_index()
        logger.warning(
            "unlabelled: %d recording(s) are labelled records (%s), e.g. %s = labelled %s; %s "
            "(preprocessing.exclude_labelled_overlap: %s). Each is listed in unlabelled_overlap",
            len(decisions), ", ".join(f"{n} of the {split} split" for split, n in by_split.items()),
            decisions["record_id"].iloc[0], decisions["labelled_record_id"].iloc[0],
            "left out of pretraining" if params.exclude_labelled_overlap else "KEPT in pretraining",
            str(params.exclude_labelled_overlap).lower(),
        )
    return decisions


def assign_unlabelled_splits(
    unlabelled_manifest: pd.DataFrame, unlabelled_overlap: pd.DataFrame, preprocessing: dict[str, Any]
) -> pd.DataFrame:
    """8:2 train/test by patient for the CAE's early stopping (no validation split, as the paper),
    over the recordings find_labelled_overlap did not exclude."""
    params = PreprocessingParams.from_params(preprocessing)
    excluded = unlabelled_overlap.loc[unlabelled_overlap["outcome"] == "excluded", "record_id"].astype(str)
    kept = unlabelled_manifest[~unlabelled_manifest["record_id"].astype(str).isin(set(excluded))]
    return _split_table(kept.assign(label=None), params.unlabelled_splits)


def _records_in(source, splits: pd.DataFrame) -> Iterator[EcgRecord]:
    """The records the scan accepted, read again from the source; a record that was accepted
    then but fails now means the files changed under us, which must not pass unnoticed."""
    wanted = set(splits["record_id"])
    seen: set[str] = set()
    log = ExclusionLog(log_level=logging.DEBUG)  # reported once already, at ingestion
    for record in source.iter_records(log):
        if record.record_id in wanted:
            seen.add(record.record_id)
            yield record
    missing = wanted - seen
    if missing:
        raise RuntimeError(
            f"{len(missing)} records accepted at ingestion could not be read again from {source!r} "
            f"(e.g. {sorted(missing)[:3]}); the data changed since `ingestion` ran: run it again"
        )


class _SplitWindowStream:
    """A lazy stream of (windows, index) chunks with each window's split attached.

    ``meta`` (read by WindowStoreDataset once the chunks are exhausted) goes into the
    store's meta.json: the class list, the signal settings and the counts of the run.
    """

    def __init__(
        self,
        chunks: Iterable[tuple],
        splits: pd.DataFrame,
        dataset: str,
        cfg: PreprocessConfig,
        stats: WindowingStats,
        classes: list[str] | None = None,
        task: str = "single",
        leads: tuple[str, ...] = ("II",),
    ):
        self._task = task
        self._chunks = chunks
        self._split_of = dict(zip(splits["record_id"], splits["split"]))
        self._dataset = dataset
        self._cfg = cfg
        self._stats = stats
        self._classes = None if classes is None else [str(c) for c in classes]
        self._leads = tuple(leads)

    def __iter__(self):
        known = None if self._classes is None else set(self._classes)
        for windows, index in self._chunks:
            index = index.copy()
            index["split"] = index["record_id"].map(self._split_of)
            if known is not None:
                labelled = index["label"].map(lambda cell: bool(set(label_set(cell)) & known)) \
                    if self._task == "multilabel" else index["label"].isin(known)
                unknown = index.loc[~labelled, ["record_id", "label"]]
                if len(unknown):
                    raise ValueError(
                        f"{self._dataset}: record {unknown['record_id'].iloc[0]!r} has label "
                        f"{unknown['label'].iloc[0]!r}, not among the classes {self._classes}"
                    )
            yield windows, index
        stats = self._stats.as_dict()
        logger.info("%s windows: %s", self._dataset, ", ".join(f"{k}={v}" for k, v in stats.items()))

    @property
    def meta(self) -> dict[str, Any]:
        """The store's metadata; ``leads`` (the channel order) only for several leads and
        ``task`` only for multi-label, so a one-lead single-label store's meta is what it always was."""
        meta = {
            "dataset": self._dataset,
            "classes": self._classes,
            "preprocessing": dataclasses.asdict(self._cfg),
            "stats": self._stats.as_dict(),
            **({"leads": list(self._leads)} if len(self._leads) > 1 else {}),
        }
        if self._task != "single":  # single-label stores keep their meta (and fingerprints) as before
            meta["task"] = self._task
        return meta


def _leads(params: PreprocessingParams, labelled_manifest: pd.DataFrame) -> tuple[str, ...]:
    """The leads of the windows: ``preprocessing.leads``, or for ``all`` those ingestion read
    (the manifest's ``lead`` column: the labelled records' shared leads)."""
    return study_leads(params.leads, manifest_leads=labelled_manifest["lead"] if params.leads == "all" else None)


def window_labelled_records(
    labelled_recordings,
    labelled_splits: pd.DataFrame,
    label_classes: list[str],
    labelled_manifest: pd.DataFrame,
    preprocessing: dict[str, Any],
):
    """Up to ``windows_per_record`` z-scored windows per labelled record (one channel per lead
    of ``preprocessing.leads``), streamed to the window store."""
    params = PreprocessingParams.from_params(preprocessing)
    leads = _leads(params, labelled_manifest)
    stats = WindowingStats()
    chunks = windows_from_labelled_records(
        _records_in(reading(labelled_recordings, leads), labelled_splits), params.signal, stats=stats
    )
    return _SplitWindowStream(
        chunks, labelled_splits, "labelled", params.signal, stats, classes=label_classes, leads=leads,
        task=params.task,
    )


def window_unlabelled_records(
    unlabelled_recordings,
    unlabelled_splits: pd.DataFrame,
    unlabelled_manifest: pd.DataFrame,
    preprocessing: dict[str, Any],
):
    """Many random z-scored windows per unlabelled recording (from its NaN-free stretches, in
    the leads ingestion read: the labelled records'), streamed to the window store."""
    params = PreprocessingParams.from_params(preprocessing)
    leads = _leads(params, unlabelled_manifest)
    stats = WindowingStats()
    chunks = windows_from_unlabelled_records(
        _records_in(reading(unlabelled_recordings, leads), unlabelled_splits),
        params.signal,
        seed=params.unlabelled_seed,
        exclusions=ExclusionLog(),
        stats=stats,
    )
    return _SplitWindowStream(chunks, unlabelled_splits, "unlabelled", params.signal, stats, leads=leads)
