"""Statistics: summaries, comparisons, Tables 2-3, figures and the report."""

from kedro.pipeline import Pipeline, node, pipeline

from ecg_transfer.study.experiment import ARMS

from .nodes import (
    TABLE2_METRICS,
    combine_histories,
    compare_study_arms,
    describe_study,
    make_tables,
    plot_study,
    summarise_study_runs,
    write_study_report,
)


def create_pipeline(**kwargs) -> Pipeline:
    table_outputs = {
        f"{name}_table_{kind}": f"{name}_table_{kind}"
        for name in [*TABLE2_METRICS, "table3_lci"]
        for kind in ("csv", "markdown")
    }
    return pipeline(
        [
            node(combine_histories, [f"{arm}_training_histories" for arm in ARMS],
                 "training_histories", name="combine_histories"),
            node(summarise_study_runs, ["training_histories", "params:statistics"],
                 "run_summary", name="summarise_study_runs"),
            node(compare_study_arms, ["run_summary", "params:statistics"],
                 "arm_comparisons", name="compare_study_arms"),
            node(make_tables, "run_summary", table_outputs, name="make_tables"),
            node(plot_study, ["run_summary", "training_histories"],
                 ["f1_vs_fraction_figure", "f1_vs_fraction_honest_figure",
                  "learning_curves_figure", "per_class_f1_figure"], name="plot_study"),
            node(describe_study,
                 ["labelled_windows", "pretraining_windows", "params:study",
                  "params:finetuning", "params:image_transfer"],
                 "study_meta", name="describe_study"),
            node(write_study_report,
                 ["run_summary", "arm_comparisons", "table2_f1_weighted_table_csv",
                  "table3_lci_table_csv", "cae_history", "study_meta"],
                 "study_report", name="write_study_report"),
        ],
        tags=["statistics"],
    )
