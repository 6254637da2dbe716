"""Figures of the study, returned as matplotlib Figure objects (the Kedro catalog saves them).

Figures are built with matplotlib.figure.Figure rather than pyplot: no global figure registry
to leak memory across a long pipeline run, and no GUI backend is ever needed (headless-safe,
same effect as the Agg backend).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ecg_transfer.study.arms import ArmRegistry
from ecg_transfer.study.tables import arm_order, fraction_label

FLOOR_STYLES = ("--", ":", "-.")


def _arm_styles(arms: ArmRegistry | Sequence[str] | None, present) -> list[tuple[str, str, str | None]]:
    """(name, legend label, colour) of the arms with data, in display order; labels and colours
    come from the registry when one is given (matplotlib's cycle otherwise)."""
    names = arm_order(arms, present)
    if isinstance(arms, ArmRegistry):
        return [(name, arms.label(name), arms.colour(name)) for name in names]
    return [(name, name, None) for name in names]


def f1_vs_fraction(
    summary: pd.DataFrame,
    metric: str = "best_test_f1_weighted",
    arms: ArmRegistry | Sequence[str] | None = None,
    floor: Mapping[str, float] | None = None,
) -> Figure:
    """Mean ± SD (error bars over trials) of `metric` against the training fraction, per arm;
    ``floor`` ({name: score}, e.g. the majority-class classifier) adds horizontal lines."""
    if metric not in summary.columns:
        raise ValueError(f"f1_vs_fraction: summary has no column {metric!r}")
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    for arm, label, colour in _arm_styles(arms, summary["arm"]):
        stats = (
            summary.loc[summary["arm"] == arm]
            .groupby("fraction")[metric]
            .agg(["mean", "std"])
            .sort_index()
        )
        ax.errorbar(
            stats.index.to_numpy() * 100,
            stats["mean"].to_numpy(),
            yerr=stats["std"].fillna(0.0).to_numpy(),
            marker="o",
            capsize=3,
            label=label,
            color=colour,
        )
    for (name, value), style in zip((floor or {}).items(), FLOOR_STYLES * 10):
        ax.axhline(value, color="black", linestyle=style, linewidth=1.0, alpha=0.7, label=f"floor: {name}")
    ax.set_xlabel("training data (% of the training split)")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric}: mean ± SD over trials")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def learning_curves(
    histories: pd.DataFrame,
    split: str = "test",
    metric: str = "f1_weighted",
    arms: ArmRegistry | Sequence[str] | None = None,
) -> Figure:
    """The paper's Fig. 5: per-epoch `metric` on `split`, one panel per fraction, mean ± SD band."""
    for column in ("fraction", "arm", "trial", "epoch", "split", metric):
        if column not in histories.columns:
            raise ValueError(f"learning_curves: histories have no column {column!r}")
    rows = histories[histories["split"] == split]
    if rows.empty:
        raise ValueError(f"learning_curves: histories have no rows of split {split!r}")
    fractions = sorted(rows["fraction"].unique(), reverse=True)
    fig = Figure(figsize=(4.5 * len(fractions), 3.8), layout="constrained")
    axes = fig.subplots(1, len(fractions), sharey=True, squeeze=False)[0]
    for ax, fraction in zip(axes, fractions):
        at_fraction = rows[np.isclose(rows["fraction"], fraction)]
        for arm, label, colour in _arm_styles(arms, at_fraction["arm"]):
            curve = (
                at_fraction.loc[at_fraction["arm"] == arm]
                .groupby("epoch")[metric]
                .agg(["mean", "std"])
                .sort_index()
            )
            epochs = curve.index.to_numpy()
            mean = curve["mean"].to_numpy()
            sd = curve["std"].fillna(0.0).to_numpy()
            (line,) = ax.plot(epochs, mean, label=label, color=colour)
            ax.fill_between(epochs, mean - sd, mean + sd, alpha=0.2, color=line.get_color(), linewidth=0)
        ax.set_title(f"{fraction_label(fraction)} of training data")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"{split} {metric}")
    axes[0].legend(fontsize=8)
    return fig


def per_class_f1(
    summary: pd.DataFrame,
    prefix: str = "honest_test_f1_",
    arms: ArmRegistry | Sequence[str] | None = None,
) -> Figure:
    """Heatmap of mean per-class F1 over trials: rows fraction x arm, columns the study's classes
    (any number; cells are annotated while they stay legible). ``prefix`` picks the score: the
    multi-label study shows its per-label AUROC (``honest_test_auroc_``)."""
    columns = [
        c for c in summary.columns if c.startswith(prefix) and c[len(prefix):] not in ("weighted", "macro")
    ]
    score = "AUROC" if "auroc" in prefix else "F1"
    unit = "classes" if score == "F1" else "labels"
    if not columns:
        raise ValueError(f"per_class_f1: summary has no per-class columns starting {prefix!r}")
    styles = _arm_styles(arms, summary["arm"])
    rows, labels = [], []
    for fraction in sorted(summary["fraction"].unique(), reverse=True):
        at_fraction = summary[np.isclose(summary["fraction"], fraction)]
        for arm, label, _ in styles:
            runs = at_fraction.loc[at_fraction["arm"] == arm, columns]
            if not runs.empty:
                rows.append(runs.mean(skipna=True).to_numpy(dtype=float))
                labels.append(f"{fraction_label(fraction)} {label}")
    means = np.vstack(rows)
    classes = [c[len(prefix):] for c in columns]
    width = min(40.0, max(6.0, 3.0 + 0.6 * len(classes)))
    fig = Figure(figsize=(width, 1.5 + 0.4 * len(labels)), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(means, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(classes)), classes, rotation=45 if len(classes) > 2 else 0, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    if len(classes) <= 15 and len(labels) <= 40:
        for (i, j), value in np.ndenumerate(means):
            if np.isfinite(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if value < 0.5 else "black")
    kind = "per-class" if score == "F1" else "per-label"
    ax.set_title(f"{kind} test {score} (honest), mean over trials, {len(classes)} {unit}")
    fig.colorbar(image, ax=ax, label=score)
    return fig


def reconstruction_figure(originals: np.ndarray, reconstructions: np.ndarray, fs: float = 250.0) -> Figure:
    """Original vs CAE-reconstructed windows, one panel each (the paper's Fig. 4), with the
    window's MSE per sample in its title so the picture and the reported number meet."""
    originals = np.asarray(originals, dtype=float)
    reconstructions = np.asarray(reconstructions, dtype=float).reshape(originals.shape)
    if originals.ndim != 2 or len(originals) == 0:
        raise ValueError(f"reconstruction_figure: expected (n, length) windows, got shape {originals.shape}")
    seconds = np.arange(originals.shape[1]) / fs
    fig = Figure(figsize=(11, 2.2 * len(originals)), layout="constrained")
    axes = fig.subplots(len(originals), 1, sharex=True, squeeze=False)[:, 0]
    for ax, original, reconstruction in zip(axes, originals, reconstructions):
        ax.plot(seconds, original, color="black", linewidth=0.8, label="original")
        ax.plot(seconds, reconstruction, color="tab:red", linewidth=0.8, alpha=0.8, label="reconstruction")
        ax.set_ylabel("z-score")
        ax.set_title(f"MSE per sample {np.mean((original - reconstruction) ** 2):.3f}", fontsize=9)
    axes[0].legend(loc="upper right", fontsize=8)
    axes[-1].set_xlabel("time (s)")
    return fig
