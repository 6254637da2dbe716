"""Statistics: run checks, summaries, comparisons, Tables 2-3, the floor, figures and the report.

The per-arm datasets (``<arm>.training_histories``, ``<arm>.run_predictions``,
``<arm>.arm_settings``) are node inputs in the arm registry's order, so the pipeline is built
for a list of arm names.
"""

from __future__ import annotations

from collections.abc import Sequence

from kedro.pipeline import Pipeline, node, pipeline

from ecg_transfer.pipelines.configured_arms import configured_arms
from ecg_transfer.pipelines.finetuning.input_kinds import IMAGE_FEATURES, PRETRAINING, stages_needed
from ecg_transfer.study.arms import ArmRegistry

from .nodes import (
    TABLE2_METRICS,
    TABLE3_METRICS,
    check_study_runs,
    combine_histories,
    compare_on_test_records,
    compare_study_arms,
    describe_study,
    make_tables,
    plot_study,
    score_floor,
    size_bootstrap_samples,
    summarise_study_runs,
    write_study_report,
)

FIGURES = ["f1_vs_fraction_figure", "f1_vs_fraction_honest_figure", "learning_curves_figure", "per_class_f1_figure"]


def study_arm_names() -> list[str]:
    """The study's arm names from the project's configuration (``configured_arms``)."""
    return list(configured_arms().names)


# write_study_report's inputs (the CAE's history joins them when the study pretrains one).
REPORT_INPUTS = {
    "run_summary": "run_summary", "arm_comparisons": "arm_comparisons", "record_comparisons": "record_comparisons",
    "table2": "table2_f1_weighted_table_csv", "table2_honest": "table2_f1_weighted_honest_table_csv",
    "table2_auroc": "table2_auroc_macro_table_csv", "table2_auroc_honest": "table2_auroc_macro_honest_table_csv",
    "table3": "table3_lci_table_csv", "table3_bounded": "table3_lci_bounded_table_csv",
    "score_floor": "score_floor", "bootstrap_sample_sizes": "bootstrap_sample_sizes",
    "study_meta": "study_meta", "registry": "arm_registry",
    "paper_reference": "params:paper_reference", "statistics": "params:statistics",
}


def create_pipeline(arms: ArmRegistry | Sequence[str] | None = None, **kwargs) -> Pipeline:
    """The statistics pipeline for ``arms`` (a registry or names; default: the configured
    study's arms), in registry order. It reads the CAE's history and the image-transfer
    parameters only when the arms need those stages (given names alone, it assumes both)."""
    registry = configured_arms() if arms is None else arms
    if isinstance(registry, ArmRegistry):
        stages = stages_needed(registry)
    else:
        stages = frozenset({PRETRAINING, IMAGE_FEATURES})
    arms = [getattr(arm, "name", arm) for arm in registry]
    image_params = ["params:image_transfer"] if IMAGE_FEATURES in stages else []
    cae_history = {"cae_history": "cae_history"} if PRETRAINING in stages else {}

    def per_arm(dataset: str) -> list[str]:
        return [f"{arm}.{dataset}" for arm in arms]

    table_outputs = {
        f"{name}_table_{kind}": f"{name}_table_{kind}"
        for name in [*TABLE2_METRICS, *TABLE3_METRICS]
        for kind in ("csv", "markdown")
    }
    return pipeline(
        [
            node(check_study_runs, ["params:study", *per_arm("arm_settings")], ["study_runs", "arm_registry"],
                 name="check_study_runs"),
            node(combine_histories, ["study_runs", *per_arm("training_histories")],
                 "training_histories", name="combine_histories"),
            node(summarise_study_runs, ["training_histories", "params:statistics"],
                 "run_summary", name="summarise_study_runs"),
            node(compare_study_arms, ["run_summary", "arm_registry", "params:statistics"],
                 "arm_comparisons", name="compare_study_arms"),
            node(compare_on_test_records,
                 ["arm_registry", "params:statistics", "study_runs", "labelled_windows", *per_arm("run_predictions")],
                 "record_comparisons", name="compare_on_test_records"),
            node(size_bootstrap_samples, ["bootstrap_samples", "labelled_windows"],
                 "bootstrap_sample_sizes", name="size_bootstrap_samples"),
            node(score_floor, "labelled_windows", "score_floor", name="score_floor"),
            node(describe_study,
                 ["study_runs", "labelled_windows", "unlabelled_windows", "labelled_manifest",
                  "unlabelled_manifest", "params:preprocessing", "params:pretraining", *image_params],
                 "study_meta", name="describe_study"),
            node(make_tables,
                 ["run_summary", "arm_comparisons", "arm_registry", "score_floor",
                  "bootstrap_sample_sizes", "study_meta", "params:paper_reference"],
                 table_outputs, name="make_tables"),
            node(plot_study, ["run_summary", "training_histories", "arm_registry", "score_floor"],
                 FIGURES, name="plot_study"),
            node(write_study_report, {**REPORT_INPUTS, **cae_history}, "study_report", name="write_study_report"),
        ],
        tags=["statistics"],
    )
