"""A `kedro run` records an MLflow run in the project's SQLite store (kedro-mlflow)."""

import mlflow
import pandas as pd
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from mlflow.tracking import MlflowClient


def test_a_kedro_run_records_an_mlflow_run_in_sqlite(project_copy):
    data = project_copy / "data"
    (data / "08_reporting" / "ingestion").mkdir(parents=True)
    manifest = pd.DataFrame({"record_id": ["a", "b"], "patient_id": ["a", "b"], "label": ["SR", "SB"]})
    manifest.to_parquet(data / "02_intermediate" / "labelled_manifest.parquet")
    manifest.assign(label=None).to_parquet(data / "02_intermediate" / "unlabelled_manifest.parquet")
    exclusions = pd.DataFrame(
        {"dataset": ["labelled"], "record_id": ["c"], "source": ["c.csv"], "reason": ["nan"], "detail": [""]}
    )
    exclusions.to_csv(data / "08_reporting" / "ingestion" / "labelled_exclusions.csv", index=False)
    exclusions.iloc[:0].to_csv(data / "08_reporting" / "ingestion" / "unlabelled_exclusions.csv", index=False)

    bootstrap_project(project_copy)
    with KedroSession.create(project_path=project_copy) as session:
        session.run(pipeline_name="ingestion", node_names=["report_ingestion"])

    assert mlflow.active_run() is None  # nothing left open for a next run in this process
    assert (project_copy / "mlflow.db").is_file()
    client = MlflowClient(tracking_uri=f"sqlite:///{project_copy / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("ecg_transfer")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    artifacts = [a.path for a in client.list_artifacts(runs[0].info.run_id, "ingestion")]
    assert artifacts == ["ingestion/ingestion_report.csv"]
    report = pd.read_csv(data / "08_reporting" / "ingestion" / "ingestion_report.csv", keep_default_na=False)
    excluded = report[report["outcome"] == "excluded"]
    assert excluded[["dataset", "reason", "count"]].values.tolist() == [["labelled", "nan", 1]]
