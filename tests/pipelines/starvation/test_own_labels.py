"""Issue 9's user: their own labelled WFDB folder (360 Hz, lead MLII, a header-less CSV with four
classes named unlike Chapman's, one class too small) through the whole `study` pipeline on the
tiny test configuration, and the same data as a binary task. The class names must reach every
table, per-class column and MLflow run, and every record left out must be counted."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from mlflow.tracking import MlflowClient

from tests.conftest import inside_project, make_project_copy


def _study(project, labelled_entry):
    # What a user writes in conf/local/catalog.yml; here in conf/test, the tiny configuration's env.
    (project / "conf" / "test" / "catalog.yml").write_text(yaml.safe_dump({"labelled_recordings": labelled_entry}))
    bootstrap_project(project)
    # The unlabelled corpus: the bundled simulated one, written once (docs/own_data.md, step 3).
    with KedroSession.create(project_path=project, env="test") as session:
        session.run(pipeline_name="bundled_data", node_names=["simulate_unlabelled_corpus"])
    with KedroSession.create(project_path=project, env="test") as session:
        session.run(pipeline_name="study")


@pytest.fixture(scope="module")
def own_study(own_labelled_folder, tmp_path_factory):
    project = make_project_copy(tmp_path_factory.mktemp("own") / "project")
    with inside_project(project):
        _study(project, own_labelled_folder.catalog_entry())
        yield project


def test_the_tables_and_per_class_columns_carry_the_users_class_names(own_study):
    study = own_study / "data" / "08_reporting" / "study"
    classes = ["normal", "afib", "other"]  # by frequency; "noisy" (2 patients) is too small
    assert (own_study / "data/03_primary/label_classes.json").read_text().count('"') == 2 * len(classes)
    summary = pd.read_csv(study / "run_summary.csv")
    assert {f"honest_test_f1_{name}" for name in classes} <= set(summary.columns)
    assert not [c for c in summary.columns if c.endswith(("_SB", "_AFIB", "_noisy"))]
    table2 = pd.read_csv(study / "table2_f1_weighted_honest.csv", index_col=0)
    assert "100% transfer" in table2.columns
    report = (study / "report.md").read_text()
    assert "afib" in report and "0.857 ± 0.004" not in report  # the paper's 11-class numbers are another task
    assert "simulated" in report.lower() or "synthetic" in report.lower()  # the unlabelled corpus is


def test_every_record_left_out_is_counted_with_its_reason(own_study, own_labelled_folder):
    report = pd.read_csv(own_study / "data/08_reporting/ingestion/ingestion_report.csv", keep_default_na=False)
    labelled = report[report["dataset"] == "labelled"]
    excluded = dict(zip(labelled.loc[labelled["outcome"] == "excluded", "reason"],
                        labelled.loc[labelled["outcome"] == "excluded", "count"]))
    assert excluded.get("unlabelled_record") == 1 and excluded.get("missing_file") == 1
    assert excluded.get("class_too_small") == own_labelled_folder.counts()["noisy"]
    accepted = int(labelled.loc[labelled["outcome"] == "accepted", "count"].sum())
    assert accepted == len(own_labelled_folder.labels)


def test_mlflow_runs_carry_the_class_names(own_study):
    client = MlflowClient(tracking_uri=f"sqlite:///{own_study / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("ecg_transfer")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.stage = 'finetuning'")
    assert runs
    one = runs[0]
    assert {"test_f1_afib", "test_f1_normal", "test_f1_other", "test_auroc_macro"} <= set(one.data.metrics)


def test_a_binary_task_runs_end_to_end_and_reports_auroc(own_labelled_folder, tmp_path, monkeypatch):
    project = make_project_copy(tmp_path / "project")
    monkeypatch.chdir(project)
    monkeypatch.setenv("KEDRO_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    entry = own_labelled_folder.catalog_entry(
        label_map={"afib": "AF", "normal": "non-AF", "other": "non-AF"}, exclude_labels=["noisy"],
    )
    _study(project, entry)
    study = project / "data" / "08_reporting" / "study"
    summary = pd.read_csv(study / "run_summary.csv")
    assert {"honest_test_f1_AF", "honest_test_f1_non-AF"} <= set(summary.columns)
    assert summary["honest_test_auroc_macro"].between(0, 1).all()
    assert "auroc" in (study / "report.md").read_text().lower()


def test_several_records_per_patient_make_the_patient_the_unit_of_every_resample(
    own_labelled_folder, tmp_path, monkeypatch
):
    """Issue 16: a user's folder whose patients have two records each (a `patient_id` column).
    The training bootstrap draws patients with all their records, the test comparisons
    resample patients, and the report says so."""
    by_label: dict[str, list[str]] = {}
    for record, label in own_labelled_folder.labels.items():
        by_label.setdefault(label, []).append(record)
    rows = ["record,label,patient_id"]
    for label, records in by_label.items():
        rows += [f"{record},{label},{label}_patient_{i // 2}" for i, record in enumerate(sorted(records))]
    labels_csv = tmp_path / "labels_with_patients.csv"
    labels_csv.write_text("\n".join(rows) + "\n", encoding="utf-8")
    project = make_project_copy(tmp_path / "project")
    monkeypatch.chdir(project)
    monkeypatch.setenv("KEDRO_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    _study(project, own_labelled_folder.catalog_entry(labels_csv=str(labels_csv), exclude_labels=["noisy"]))
    study = project / "data" / "08_reporting" / "study"
    sizes = pd.read_csv(study / "bootstrap_sample_sizes.csv")
    full = sizes.loc[sizes["fraction"] == 1.0].iloc[0]
    assert full["training_records"] > full["training_patients"]
    assert full["records_drawn_mean"] > full["patients_drawn_mean"]  # a drawn patient brings both records
    comparisons = pd.read_csv(study / "record_comparisons.csv")
    assert (comparisons["unit"] == "patient").all()
    assert (comparisons["n_patients"] < comparisons["n_records"]).all()
    assert "**patient** as the unit" in (study / "report.md").read_text()
