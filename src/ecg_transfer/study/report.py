"""The study's Markdown report: what data and runs the numbers come from, our numbers beside the
paper's where the task is the paper's, the floor, and what each interval covers.

Every score is the study's headline metric (:func:`~ecg_transfer.study.summaries.headline_metric`):
weighted F1 for a single-label study, macro AUROC over the labels for a multi-label one (whose
report names the task and its labels, and never shows the paper's numbers: they are for
Chapman's single-label rhythms)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ecg_transfer.study.arms import ArmRegistry, ArmSpec
from ecg_transfer.study.summaries import MULTILABEL, headline_metric
from ecg_transfer.study.tables import (
    arm_order,
    format_p,
    fraction_label,
    mean_sd,
    method_comparisons,
    methods_table,
    pretraining_methods,
    to_markdown,
)

PAPER_COLUMNS = ("random init", "image transfer", "CAE transfer")
# How the report names a headline metric in its prose and table headers.
METRIC_NAMES = {"f1_weighted": "weighted F1", "auroc_macro": "macro AUROC"}


@dataclass(frozen=True)
class PaperReference:
    """The published numbers the report sets beside ours, read once from ``params:paper_reference``
    (conf/base/parameters_paper.yml): Table 2 (weighted F1) and Table 3 (LCI) as {(fraction,
    paper column): (mean, SD)}, Table 3's printed p per fraction, the paper's classes, split and
    protocol (fine-tuning epochs, trials, test share)."""

    citation: str
    classes: frozenset[str]
    split: str
    protocol: Mapping[str, float]
    table2: Mapping[tuple[float, str], tuple[float, float]]
    lci: Mapping[tuple[float, str], tuple[float, float]]
    lci_p: Mapping[float, str]

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> PaperReference:
        where = "paper_reference"
        missing = [k for k in ("citation", "classes", "split", "protocol", "table2_f1_weighted", "table3_lci",
                               "table3_lci_p") if k not in (params or {})]
        if missing:
            raise ValueError(f"{where}: lacks {missing} (conf/base/parameters_paper.yml)")
        protocol = {k: float(v) for k, v in dict(params["protocol"]).items()}
        unknown = sorted(set(protocol) - set(PROTOCOL_KEYS))
        if unknown or len(protocol) != len(PROTOCOL_KEYS):
            raise ValueError(f"{where}.protocol: needs exactly {list(PROTOCOL_KEYS)}, got {sorted(protocol)}")
        return cls(
            citation=str(params["citation"]), classes=frozenset(map(str, params["classes"])),
            split=str(params["split"]), protocol=protocol,
            table2=_paper_cells(params["table2_f1_weighted"], f"{where}.table2_f1_weighted"),
            lci=_paper_cells(params["table3_lci"], f"{where}.table3_lci"),
            lci_p={float(row["fraction"]): str(row["p"]) for row in params["table3_lci_p"]},
        )

    @property
    def fractions(self) -> tuple[float, ...]:
        return tuple(sorted({fraction for fraction, _ in self.table2}, reverse=True))

    def is_task(self, classes: Sequence[str]) -> bool:
        """Whether the study's classes are exactly the paper's."""
        return set(map(str, classes)) == self.classes

    def protocol_differences(self, run: Mapping[str, Any], split: Mapping[str, float] | None) -> list[str]:
        """How our run differs from the paper's protocol, one phrase per setting ([] = same)."""
        ours = {"epochs": run.get("epochs"), "n_trials": run.get("n_trials"),
                "test_fraction": (split or {}).get("test")}
        return [
            f"{PROTOCOL_KEYS[key]}: ours {_plain(ours[key])}, the paper's {_plain(value)}"
            for key, value in self.protocol.items()
            if ours[key] is None or not np.isclose(float(ours[key]), value)
        ]


PROTOCOL_KEYS = {"epochs": "fine-tuning epochs", "n_trials": "trials per setting", "test_fraction": "test share"}


def _plain(value) -> str:
    return "not recorded" if value is None else f"{float(value):g}"


def _paper_cells(rows, where: str) -> dict[tuple[float, str], tuple[float, float]]:
    cells = {}
    for row in rows:
        if row.get("column") not in PAPER_COLUMNS:
            raise ValueError(f"{where}: column {row.get('column')!r} is none of {list(PAPER_COLUMNS)}")
        cells[(float(row["fraction"]), str(row["column"]))] = (float(row["mean"]), float(row["sd"]))
    return cells


def paper_arm(spec: ArmSpec) -> str | None:
    """The paper's column an arm reproduces, by what it is, not by its name: random init (random,
    trained, windows), CAE transfer (pretrained, trained, windows), image transfer (spectrogram)."""
    if spec.input == "spectrogram":
        return "image transfer"
    if spec.input == "window" and not spec.freeze:
        return "CAE transfer" if spec.init == "pretrained" else "random init"
    return None


def study_report(
    summary: pd.DataFrame,
    comparisons: pd.DataFrame,
    tables: Mapping[str, pd.DataFrame],
    meta: Mapping[str, Any],
    registry: ArmRegistry | None = None,
    record_comparisons: pd.DataFrame | None = None,
    floor: pd.DataFrame | None = None,
    sample_sizes: pd.DataFrame | None = None,
    paper: PaperReference | None = None,
    still_improving: pd.DataFrame | None = None,
    confidence: float = 0.95,
) -> str:
    """Markdown report.

    ``tables`` (title -> table) are printed in order. ``meta`` describes the data and the run
    (see ``pipelines.statistics.nodes.describe_study``); keys used: ``synthetic`` (True, False or
    None = not recorded), ``labelled``/``unlabelled`` (source, records, windows, simulated),
    ``classes``, ``backbone``, ``image_backbone``, ``labelled_split`` ({train, val, test}
    shares), ``run`` (``run_settings.describe_run``), ``device``, ``cae_heldout_mse_min``.
    ``paper``: the published numbers, shown beside ours on the paper's task only (with a caveat
    when our protocol differs). ``still_improving`` (``summaries.still_improving``) flags arms
    whose honest epoch sat in the last fifth of the budget in most runs. With more than one
    pretrained encoder among the arms (the CAE, pretraining methods), a section compares the
    methods (``confidence``: of its per-arm intervals).
    """
    headline = headline_metric(summary)
    multilabel = headline == MULTILABEL.headline
    classes = list(meta.get("classes") or _classes_from(summary))
    # The paper's numbers: its task only (Chapman's rhythms, one per record).
    shown = paper if paper is not None and paper.is_task(classes) and not multilabel else None
    arms = arm_order(registry, summary["arm"])
    parts = ["# ECG transfer learning: study report\n\n"]
    parts.append(_header(meta, classes, multilabel))
    parts.append(_caveat(meta.get("synthetic")))
    parts.append(_run_section(meta, registry, arms))
    parts.append(_sizes_section(meta, sample_sizes, paper))
    if floor is not None:
        parts.append("## The floor: classifiers that never look at the ECG\n\n")
        parts.append(_MULTILABEL_FLOOR if multilabel else (
            "Fitted on the training split's class shares and scored on the test split (exact, from "
            "the class counts; docs/statistics.md). An arm near these numbers has learnt little.\n\n"
        ))
        parts.append(to_markdown(_floor_view(floor)))
        parts.append("\n")
    parts.append(_protocol(headline))
    if still_improving is not None:
        parts.append(_budget_section(still_improving, meta, arms))
    parts.append(_paper_caveat(shown, meta))
    parts.append(_scores_section(summary, registry, arms, shown, classes, headline))
    parts.append(_lci_section(summary, registry, arms, shown, headline))
    if registry is not None and len(pretraining_methods(registry)) > 1:
        parts.append(_methods_section(summary, comparisons, registry, confidence, headline))
    for title, table in tables.items():
        parts.append(f"## {title}\n\n")
        parts.append(to_markdown(table))
        parts.append("\n")
    parts.append(_INTERVALS)
    parts.append(_comparisons_section(comparisons, record_comparisons, headline))
    return "".join(parts)


def _methods_section(summary: pd.DataFrame, comparisons: pd.DataFrame, registry: ArmRegistry,
                     confidence: float, headline: str = "f1_weighted") -> str:
    """Which pretraining helped, at which fraction: the methods' honest scores and their
    declared comparisons against random init and against the CAE."""
    methods = pretraining_methods(registry)
    name = METRIC_NAMES[headline]
    parts = [f"## Pretraining methods (honest {name})\n\n"]
    parts.append(
        f"The window arms by the encoder they start from ({', '.join(methods)}, or random): the mean "
        f"over trials of the honest test {name} with its {confidence:.0%} t interval over trials, "
        "per fraction. Every method trains the same encoder; only the pretext task differs "
        "(docs/pretext_tasks.md).\n\n"
    )
    parts.append(to_markdown(methods_table(summary, registry, confidence, metric=f"honest_test_{headline}")))
    paired = method_comparisons(comparisons, registry, metric=f"honest_test_{headline}")
    parts.append("\n### Each method against random init and against the CAE\n\n")
    if paired.empty:
        parts.append("No comparison of a method against a random or a CAE arm is declared in "
                     "`statistics.comparisons`.\n\n")
        return "".join(parts)
    parts.append(
        "From the comparisons across trials (the same trials' samples and seeds for both arms): the "
        "difference a - b, its paired t interval, the paired p adjusted by Holm over the metric's "
        "comparisons, the smallest difference the trials could detect at the configured power, and "
        "the statistics' reading (an interval inside the equivalence margin reads equivalent; a "
        "difference below the detectable one is no evidence of no effect).\n\n"
    )
    view = paired.drop(columns=["fraction", "arm"])
    view.index = paired["fraction"] + " " + paired["arm"]
    view.index.name = "setting (a)"
    parts.append(to_markdown(view))
    return "".join(parts) + "\n"


def _comparisons_section(comparisons: pd.DataFrame, record_comparisons: pd.DataFrame | None,
                         headline: str = "f1_weighted") -> str:
    parts = []
    parts.append("## Comparisons across trials\n\n")
    parts.append(_COMPARISONS.replace("(weighted F1 only)", f"(in {METRIC_NAMES[headline]}, the headline "
                                      "metric; its comparisons only)" if headline != "f1_weighted" else "(weighted F1 only)"))
    if "metric" in comparisons.columns and comparisons["metric"].nunique() > 1:
        # One table per metric; Holm ran over each metric's own family.
        for _, per_metric in comparisons.groupby("metric", sort=False):
            parts.append(to_markdown(_comparison_view(per_metric.reset_index(drop=True))))
            parts.append("\n")
    else:
        parts.append(to_markdown(_comparison_view(comparisons)))
    if record_comparisons is not None:
        parts.append(f"\n## Comparisons over test patients (honest epoch, {METRIC_NAMES[headline]})\n\n")
        parts.append(
            f"A paired bootstrap over the test split with the **{_unit(record_comparisons)}** as the unit: "
            "each resample draws the test patients with replacement (a drawn patient brings all "
            "their records), scores both arms of every trial on the same records, and takes the "
            "mean over trials of the difference. `CI records` holds the trained models fixed; "
            "`CI records + trials` redraws the trials too.\n\n"
        )
        parts.append(to_markdown(_record_view(record_comparisons, headline)))
    return "".join(parts)


def _classes_from(summary: pd.DataFrame) -> list[str]:
    prefix = "honest_test_f1_"
    return [c[len(prefix):] for c in summary.columns if c.startswith(prefix) and c[len(prefix):] not in ("weighted", "macro")]


def _yes_no(simulated) -> str:
    return {True: "simulated", False: "real"}.get(simulated, "simulated or not: not recorded")


def _header(meta: Mapping[str, Any], classes: list[str], multilabel: bool = False) -> str:
    labelled = dict(meta.get("labelled") or {})
    unlabelled = dict(meta.get("unlabelled") or {})
    shown = ", ".join(classes[:15]) + (f", ... ({len(classes) - 15} more)" if len(classes) > 15 else "")
    kind = "labels, several per record possible" if multilabel else "classes"
    lines = [
        f"- **Labelled data**: {labelled.get('source', 'source not recorded')}: "
        f"{labelled.get('records', '?')} records ({labelled.get('windows', '?')} windows), "
        f"{len(classes)} {kind} ({shown}); {_yes_no(labelled.get('simulated'))}.\n",
        f"- **Unlabelled data** (pretraining): {unlabelled.get('source', 'source not recorded')}: "
        f"{unlabelled.get('records', '?')} records ({unlabelled.get('windows', '?')} windows); "
        f"{_yes_no(unlabelled.get('simulated'))}.\n",
        f"- **Backbone**: {meta.get('backbone', 'not recorded')}; image arms: "
        f"{meta.get('image_backbone', 'not recorded')}.\n",
    ]
    if multilabel:
        lines.append(_multilabel_task_line(labelled, classes))
    return "".join(lines) + "\n"


def _multilabel_task_line(labelled: Mapping[str, Any], labels: list[str]) -> str:
    counts = dict(labelled.get("label_counts") or {})
    listed = "; ".join(f"{label} {counts[label]}" if label in counts else label for label in labels)
    return (
        "- **Task**: multi-label (`preprocessing.task: multilabel`). **Headline metric: macro AUROC** "
        f"over the {len(labels)} labels (the mean of each label's AUROC); F1 at per-label thresholds "
        "fitted on the validation split, never on test. Windows per label: "
        f"{listed if counts else ', '.join(labels)}.\n"
    )


def _caveat(synthetic) -> str:
    if synthetic is True:
        return (
            "> **Caveat: synthetic data.** These numbers come from simulated ECGs. They test that "
            "the pipeline runs end to end and that the statistics behave; they say nothing for or "
            "against the paper's claim.\n\n"
        )
    if synthetic is None:
        return (
            "> Whether the data are simulated is not recorded (the manifests carry no `simulated` "
            "column); read the numbers with that in mind.\n\n"
        )
    return ""


def _run_section(meta: Mapping[str, Any], registry: ArmRegistry | None, arms: list[str]) -> str:
    run = dict(meta.get("run") or {})
    training = dict(run.get("training") or {})
    lines = ["## Run\n\n", "Derived from the runs' own settings (`<arm>.arm_settings`), which all arms share.\n\n"]
    if run:
        lines.append(f"- **fractions**: {', '.join(fraction_label(f) for f in run.get('fractions', []))}\n")
        lines.append(f"- **trials per setting**: {run.get('n_trials')}\n")
        lines.append(f"- **epochs**: {run.get('epochs')}\n")
        shown = {k: v for k, v in training.items() if k != "epochs"}
        lines.append("- **training**: " + ", ".join(f"{k}={v}" for k, v in shown.items()) + "\n")
        lines.append(
            f"- **fingerprints**: labelled data {run.get('labelled_fingerprint')}, bootstrap samples "
            f"{run.get('bootstrap_fingerprint')}\n"
        )
    if "device" in meta:
        lines.append(f"- **device**: {meta['device']}\n")
    if "cae_heldout_mse_min" in meta:
        lines.append(
            f"- **CAE reconstruction MSE per sample**: {meta['cae_heldout_mse_min']:.4f}: the minimum over "
            "epochs on the held-out split that also early-stopped the CAE (the paper's protocol; the "
            "split both chose the epoch and scored it, so the number is optimistic)\n"
        )
    lines.append("\n")
    if registry is not None:
        view = pd.DataFrame(
            [
                {"arm": name, "label": registry.label(name),
                 "init": registry[name].init if name in registry else "",
                 "freeze": str(registry[name].freeze).lower() if name in registry else "",
                 "input": registry[name].input if name in registry else ""}
                for name in arms
            ]
        ).set_index("arm")
        lines.append(to_markdown(view))
        lines.append("\n")
    return "".join(lines)


def labelled_split_text(split: Mapping[str, float] | None, paper: PaperReference | None = None) -> str:
    """'70/10/20 (paper: 80/20 train/test, no validation split)' from {train, val, test} shares;
    the paper's split in brackets when ``paper`` is given."""
    if not split:
        return "not recorded"
    shares = [float(split.get(k, 0.0)) * 100 for k in ("train", "val", "test")]
    text = "/".join(f"{s:g}" for s in np.round(shares, 1))
    return text + (f" (paper: {paper.split})" if paper is not None else "")


def _sizes_section(meta: Mapping[str, Any], sample_sizes: pd.DataFrame | None, paper: PaperReference | None) -> str:
    lines = ["## Sizes\n\n"]
    lines.append(
        f"- **Labelled split** (train/val/test, % of each class's patients): "
        f"{labelled_split_text(meta.get('labelled_split'), paper)}.\n"
    )
    sizes = (meta.get("labelled") or {}).get("split_sizes")
    if sizes:
        lines.append("- **Windows per split**: " + ", ".join(f"{k} {v}" for k, v in sorted(sizes.items())) + "\n")
    lines.append("\n")
    if sample_sizes is not None and not sample_sizes.empty:
        lines.append(
            "Every trial trains on a bootstrap sample of the training split, drawn with replacement "
            "with the **patient** as the unit (a drawn patient brings all their records): a sample "
            "of n from n patients holds about 63 % distinct patients, the rest are repeats.\n\n"
        )
        patients = {}
        if "patients_drawn_mean" in sample_sizes.columns:
            patients = {
                "patients drawn": sample_sizes["patients_drawn_mean"].map(lambda v: f"{v:g}"),
                "unique patients (mean)": sample_sizes["unique_patients_mean"].map(lambda v: f"{v:.1f}"),
                "training split patients": sample_sizes["training_patients"].map(lambda v: "" if pd.isna(v) else f"{int(v)}"),
            }
        view = pd.DataFrame(
            {
                **patients,
                "records drawn": sample_sizes["records_drawn_mean"].map(lambda v: f"{v:g}"),
                "unique records (mean)": sample_sizes["unique_records_mean"].map(lambda v: f"{v:.1f}"),
                "unique (min-max)": [f"{lo}-{hi}" for lo, hi in zip(sample_sizes["unique_records_min"], sample_sizes["unique_records_max"])],
                "unique share (of the units drawn)": sample_sizes["unique_share"].map(lambda v: f"{v:.1%}"),
                "windows (mean)": sample_sizes["windows_mean"].map(lambda v: f"{v:g}"),
                "training split records": sample_sizes["training_records"].map(lambda v: "" if pd.isna(v) else f"{int(v)}"),
            }
        )
        view.index = [fraction_label(f) for f in sample_sizes["fraction"]]
        view.index.name = "training data"
        lines.append(to_markdown(view))
        lines.append("\n")
    return "".join(lines)


def _floor_view(floor: pd.DataFrame) -> pd.DataFrame:
    """The floor's scores with three decimals (multi-label: the per-label AUROCs, all 0.5, left out)."""
    view = floor.set_index("classifier")
    view = view.drop(columns=[c for c in view.columns if c.startswith("auroc_") and c != "auroc_macro"])
    for column in view.columns:
        if column != "predicts":
            view[column] = view[column].map(lambda v: f"{v:.3f}")
    return view


def _protocol(headline: str) -> str:
    monitored = "F1_weighted" if headline == "f1_weighted" else METRIC_NAMES[headline]
    return (
        "## Protocol\n\n"
        "- **optimistic** (`best_test_*`, the paper's): the best test score over all epochs; the test "
        "split chooses the epoch, so it overstates what a model would score on new data.\n"
        f"- **honest** (`honest_test_*`): the epoch with the best validation {monitored} (ties -> "
        "earliest) is chosen, and its test scores are reported.\n"
        "- All arms of one trial train on the same stratified bootstrap sample (with replacement) "
        "of the training split, so trials pair across arms.\n"
        f"- LCI is computed on each run's per-epoch test {monitored} curve.\n\n"
    )


_MULTILABEL_FLOOR = (
    "Every record scored with each label's training prevalence (exact, from the label counts; "
    "docs/statistics.md): no information, so every label's AUROC and the macro AUROC are 0.5. "
    "F1 of answering each label positive at random with its training prevalence, and of answering "
    "every label positive (what a constant score gets at a validation-fitted threshold). An arm near "
    "these numbers has learnt little.\n\n"
)

_COMPARISONS = (
    "Welch and paired t-tests, unadjusted and Holm-adjusted over each metric's table; Hedges' g "
    "(independent) and g_z (paired); the 95 % paired t-interval of the mean difference over the n "
    "shared trials (with five or ten trials a percentile bootstrap is too narrow); the smallest "
    "difference the paired test would detect with 80 % power (from the SD of the paired "
    "differences and n: a difference smaller than this can go unseen, so \"no significant "
    "difference\" is no evidence of none); and the equivalence reading: TOST against "
    "`statistics.equivalence_margin` (weighted F1 only), *equivalent within ±m*, *not shown "
    "equivalent* (the study cannot tell) or *different* (Holm-adjusted paired p < 0.05). The raw "
    "LCI's tests are n/a where an arm has a curve that never drops (LCI ~1e7). See "
    "docs/statistics.md for every column.\n\n"
)

_INTERVALS = (
    "## What each interval covers\n\n"
    "- **± SD over trials** and the **95 % CI (paired t)** in the comparisons across trials: "
    "training variance (which bootstrap sample, which seed) on the *one fixed* test split. They "
    "say nothing about how the scores would move on other test patients.\n"
    "- **CI records** (comparisons over test patients): test-split variance (which patients, "
    "with all their records, are in the test split), with the trained models fixed.\n"
    "- **CI records + trials**: both sources at once (test patients and trials redrawn).\n"
    "- No interval covers the choice of the labelled data set itself or of the hyperparameters.\n\n"
)


def _unit(records: pd.DataFrame) -> str:
    units = set(records["unit"].dropna()) if "unit" in records.columns else set()
    return "patient" if units == {"patient"} else "record" if units == {"record"} else "record or patient"


def _budget_section(flags: pd.DataFrame, meta: Mapping[str, Any], arms: list[str]) -> str:
    epochs = (meta.get("run") or {}).get("epochs")
    lines = ["## Budget: arms still improving at their last epochs\n\n"]
    flagged = flags[flags["flagged"]].assign(_order=lambda f: f["arm"].map({a: i for i, a in enumerate(arms)}))
    flagged = flagged.sort_values(["fraction", "_order"], ascending=[False, True])
    if flagged.empty:
        lines.append(
            f"No arm had its honest (best-validation) epoch in the last fifth of its {epochs} epochs in most "
            "runs.\n\n"
        )
        return "".join(lines)
    for row in flagged.itertuples():
        lines.append(
            f"- **{fraction_label(row.fraction)} {row.arm}**: honest epoch in the last fifth of the {epochs} "
            f"epochs in {row.late_runs} of {row.runs} runs. Still improving: a longer budget may change "
            "this comparison.\n"
        )
    return "".join(lines) + "\n"


def _paper_caveat(paper: PaperReference | None, meta: Mapping[str, Any]) -> str:
    if paper is None:
        return ""
    differences = paper.protocol_differences(meta.get("run") or {}, meta.get("labelled_split"))
    if not differences:
        return f"The run follows the paper's protocol ({paper.citation}), so its numbers are shown beside ours.\n\n"
    return (
        f"> **Caveat: not the paper's protocol.** The paper's numbers ({paper.citation}) are shown beside "
        "ours, but our run differs: " + "; ".join(differences) + ". Read the comparison for the "
        "direction of the effects, not for the values (conf/paper runs the paper's protocol).\n\n"
    )


def _stats(summary: pd.DataFrame, fraction: float, arm: str, column: str) -> np.ndarray:
    if column not in summary.columns:
        return np.array([])
    rows = summary[np.isclose(summary["fraction"], fraction) & (summary["arm"] == arm)]
    values = rows[column].to_numpy(dtype=float)
    return values[~np.isnan(values)]


def _fractions(summary: pd.DataFrame, paper: PaperReference | None) -> list[float]:
    ours = {float(f) for f in summary["fraction"].unique()}
    return sorted(ours | set(paper.fractions) if paper is not None else ours, reverse=True)


def _paper_column(registry: ArmRegistry | None, arm: str) -> str | None:
    return paper_arm(registry[arm]) if registry is not None and arm in registry else None


SCORE_COLUMNS = {
    "f1_weighted": [
        ("ours, optimistic", "best_test_f1_weighted"),
        ("ours, honest", "honest_test_f1_weighted"),
        ("honest macro F1", "honest_test_f1_macro"),
        ("honest macro AUROC", "honest_test_auroc_macro"),
        ("honest, record level", "honest_test_record_f1_weighted"),
    ],
    "auroc_macro": [
        ("macro AUROC, optimistic", "best_test_auroc_macro"),
        ("macro AUROC, honest", "honest_test_auroc_macro"),
        ("honest macro F1 (validation thresholds)", "honest_test_f1_macro"),
        ("honest macro AUROC, record level", "honest_test_record_auroc_macro"),
    ],
}


def _scores_section(summary, registry, arms, paper: PaperReference | None, classes: list[str],
                    headline: str = "f1_weighted") -> str:
    title = "## Scores per arm: ours beside the paper's (mean ± SD over trials)\n\n" if paper else (
        "## Scores per arm (mean ± SD over trials)\n\n"
    )
    kind = f"{len(classes)} classes" if headline == "f1_weighted" else f"{len(classes)} labels, multi-label"
    note = "" if paper else (
        f"The paper's numbers are for Chapman's 11 rhythms; this study's task ({kind}) is "
        "another task, so they are not shown.\n\n"
    )
    columns = [(name, column) for name, column in SCORE_COLUMNS[headline] if column in summary.columns]
    rows = {}
    for fraction in _fractions(summary, paper):
        for arm in arms:
            ours = _stats(summary, fraction, arm, f"best_test_{headline}")
            reference = paper.table2.get((fraction, _paper_column(registry, arm))) if paper else None
            if ours.size == 0 and reference is None:
                continue
            row = {"paper (weighted F1)": f"{reference[0]:.3f} ± {reference[1]:.3f}" if reference else ""} if paper else {}
            for name, column in columns:
                row[name] = mean_sd(_stats(summary, fraction, arm, column)) or "not run"
            row["trials"] = str(ours.size)
            rows[f"{fraction_label(fraction)} {arm}"] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "setting"
    return title + note + to_markdown(table) + "\n"


def _lci_section(summary, registry, arms, paper: PaperReference | None, headline: str = "f1_weighted") -> str:
    parts = ["## LCI per arm" + (": ours beside the paper's" if paper else "") + "\n\n"]
    best = "best F1" if headline == "f1_weighted" else f"best {METRIC_NAMES[headline]}"
    parts.append(
        ("" if headline == "f1_weighted" else f"Computed on each run's per-epoch test {METRIC_NAMES[headline]} curve. ")
        + "`lci` is the paper's formula; a curve that never drops scores about best x mean rise / "
        f"1e-8 there (~1e7), which wrecks mean, SD and t-test, so `lci_bounded` (in [0, {best}]) is "
        f"shown and compared too. The two order curves alike only at equal {best}.\n\n"
    )
    rows = {}
    for fraction in _fractions(summary, paper):
        for arm in arms:
            ours = _stats(summary, fraction, arm, "lci")
            reference = paper.lci.get((fraction, _paper_column(registry, arm))) if paper else None
            if ours.size == 0 and reference is None:
                continue
            row = {"paper": f"{reference[0]:.3f} ± {reference[1]:.3f}" if reference else ""} if paper else {}
            row["ours"] = mean_sd(ours) or "not run"
            row["ours, bounded"] = mean_sd(_stats(summary, fraction, arm, "lci_bounded")) or "not run"
            never = _stats(summary, fraction, arm, "lci_never_drops")
            row["runs that never drop"] = f"{int(never.sum())} of {ours.size}" if never.size else ""
            rows[f"{fraction_label(fraction)} {arm}"] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "setting"
    parts.append(to_markdown(table))
    if paper:
        parts.append(
            "\nThe paper's Welch p, random vs CAE transfer: "
            + ", ".join(f"{fraction_label(f)} {p}" for f, p in paper.lci_p.items())
            + ". Ours are in Table 3 and the comparisons.\n"
        )
    if "lci_never_drops" in summary.columns:
        total = int(summary["lci_never_drops"].sum())
        curve = "test-F1" if headline == "f1_weighted" else f"test {METRIC_NAMES[headline]}"
        parts.append(f"\n{total} of {len(summary)} runs have a {curve} curve that never drops.\n")
    return "".join(parts) + "\n"


def _comparison_view(comparisons: pd.DataFrame) -> pd.DataFrame:
    if comparisons.empty:
        return pd.DataFrame({"note": ["no comparisons could be made"]})

    def signed(v):
        return "n/a" if pd.isna(v) else f"{v:+.4f}"

    view = pd.DataFrame(
        {
            "n (a/b/paired)": [f"{a}/{b}/{p}" for a, b, p in zip(comparisons["n_a"], comparisons["n_b"], comparisons["n_paired"])],
            "mean diff": comparisons["mean_diff"].map(signed),
            "95 % CI (paired t)": [
                "n/a" if pd.isna(lo) else f"[{lo:+.4f}, {hi:+.4f}]" for lo, hi in zip(comparisons["ci_low"], comparisons["ci_high"])
            ],
            "g": comparisons["hedges_g"].map(lambda v: f"{v:.2f}"),
            "g_z": comparisons["hedges_gz"].map(lambda v: f"{v:.2f}"),
            "p Welch (unadjusted)": comparisons["welch_p"].map(format_p),
            "p Welch (Holm)": comparisons["welch_p_holm"].map(format_p),
            "p paired (unadjusted)": comparisons["paired_p"].map(format_p),
            "p paired (Holm)": comparisons["paired_p_holm"].map(format_p),
            "detectable diff (80 % power)": comparisons["detectable_diff"].map(lambda v: "n/a" if pd.isna(v) else f"{v:.4f}"),
            "TOST p": comparisons["tost_p"].map(format_p),
            "reading": comparisons["reading"].fillna(""),
            "note": comparisons["note"].fillna(""),
        }
    )
    view.index = [f"{fraction_label(f)} {c}" for f, c in zip(comparisons["fraction"], comparisons["comparison"])]
    view.index.name = f"{comparisons['metric'].iloc[0]}"
    return view


def _record_view(records: pd.DataFrame, headline: str = "f1_weighted") -> pd.DataFrame:
    if records.empty:
        return pd.DataFrame({"note": ["no predictions to compare"]})
    score, short = ("f1", "F1") if headline == "f1_weighted" else ("auroc", "AUROC")

    def interval(lo, hi):
        return "" if pd.isna(lo) else f"[{lo:+.4f}, {hi:+.4f}]"

    view = pd.DataFrame(
        {
            "patients (records)": [
                "" if pd.isna(r) else f"{int(p)} ({int(r)})" if unit == "patient" else f"records only ({int(r)})"
                for p, r, unit in zip(records.get("n_patients", records["n_records"]), records["n_records"],
                                      records.get("unit", pd.Series("record", index=records.index)))
            ],
            "trials": records["n_trials"].map(lambda v: "" if pd.isna(v) else f"{int(v)}"),
            f"{short} a": records[f"{score}_a"].map(lambda v: "" if pd.isna(v) else f"{v:.4f}"),
            f"{short} b": records[f"{score}_b"].map(lambda v: "" if pd.isna(v) else f"{v:.4f}"),
            "mean diff": records["mean_diff"].map(lambda v: "" if pd.isna(v) else f"{v:+.4f}"),
            "CI records": [interval(lo, hi) for lo, hi in zip(records["ci_low_records"], records["ci_high_records"])],
            "CI records + trials": [
                interval(lo, hi) for lo, hi in zip(records["ci_low_records_trials"], records["ci_high_records_trials"])
            ],
            "note": records["note"].fillna(""),
        }
    )
    view.index = [f"{fraction_label(f)} {c}" for f, c in zip(records["fraction"], records["comparison"])]
    view.index.name = f"honest test {headline}"
    return view
