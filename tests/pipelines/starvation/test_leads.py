"""Issue 19, leads: a user's own 3-lead WFDB folders (labelled: I, MLII, V1 and a header-less
labels CSV; an unlabelled corpus of the same leads) through the whole `study` pipeline with
``preprocessing.leads: [I, II, V1]``. Windows are (N, 3, L) in that order, the CAE and every
window arm take three channels, the encoder's card names the leads, a record lacking V1 is
counted as missing_lead naming it, and the spectrogram arm shows lead II."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import wfdb
import yaml
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from ecg_transfer.signals.window_store import WindowStore
from tests.conftest import inside_project, make_project_copy
from tests.fixtures.own_labelled import write_own_labelled_folder

LEADS = ["I", "II", "V1"]
FILE_LEADS = ("I", "MLII", "V1")  # lead II under its monitor name: matched by its names


@pytest.fixture(scope="module")
def three_lead_study(tmp_path_factory):
    base = tmp_path_factory.mktemp("three_leads")
    labelled = write_own_labelled_folder(base / "labelled", leads=FILE_LEADS)
    corpus = write_own_labelled_folder(base / "corpus", seed=3, leads=FILE_LEADS)
    # One labelled record without V1: excluded as missing_lead, naming V1.
    victim = sorted(name for name, label in labelled.labels.items() if label == "normal")[0]
    record = wfdb.rdrecord(str(labelled.root / victim))
    wfdb.wrsamp(victim, fs=record.fs, units=["mV"] * 2, sig_name=["I", "MLII"], p_signal=record.p_signal[:, :2],
                fmt=["16"] * 2, write_dir=str(labelled.root))
    project = make_project_copy(base / "project")
    catalog = {
        "labelled_recordings": labelled.catalog_entry(),
        "unlabelled_recordings": {"type": "ecg_transfer.datasets.WfdbFolderDataset", "path": str(corpus.root),
                                  "progress": False},
    }
    (project / "conf" / "test" / "catalog.yml").write_text(yaml.safe_dump(catalog))
    parameters = project / "conf" / "test" / "parameters.yml"
    params = yaml.safe_load(parameters.read_text())
    params["preprocessing"]["leads"] = LEADS
    parameters.write_text(yaml.safe_dump(params))
    with inside_project(project):
        bootstrap_project(project)
        with KedroSession.create(project_path=project, env="test") as session:
            session.run(pipeline_name="study")
        yield project, victim


def test_windows_hold_the_three_leads_in_order_z_scored_per_lead(three_lead_study):
    project, _ = three_lead_study
    for name in ("labelled_windows", "unlabelled_windows"):
        store = WindowStore(project / "data/05_model_input" / name)
        assert store.n_channels == 3 and store.windows.shape[1:] == (3, 2048), name
        assert store.meta["leads"] == LEADS and set(store.index["lead"]) == {"I,II,V1"}, name
        windows = np.asarray(store.windows[:20], dtype=np.float64)
        np.testing.assert_allclose(windows.mean(axis=-1), 0.0, atol=1e-4)
        np.testing.assert_allclose(windows.std(axis=-1), 1.0, atol=1e-3)


def test_a_record_without_a_requested_lead_is_missing_lead_naming_it(three_lead_study):
    project, victim = three_lead_study
    exclusions = pd.read_csv(project / "data/08_reporting/ingestion/labelled_exclusions.csv")
    missing = exclusions[exclusions["reason"] == "missing_lead"]
    assert missing["record_id"].tolist() == [victim]
    assert "lead V1" in missing["detail"].iloc[0]
    report = pd.read_csv(project / "data/08_reporting/ingestion/ingestion_report.csv", keep_default_na=False)
    assert ((report["dataset"] == "labelled") & (report["reason"] == "missing_lead") & (report["count"] == 1)).any()


def test_the_encoder_card_names_the_leads_and_the_study_reports(three_lead_study):
    project, _ = three_lead_study
    card = json.loads((project / "data/06_models/pretrained_encoder/model_card.json").read_text())
    assert card["lead"] == "I,II,V1" and card["architecture"]["in_channels"] == 3
    study = project / "data" / "08_reporting" / "study"
    summary = pd.read_csv(study / "run_summary.csv")
    assert {"random", "transfer", "image"} <= set(summary["arm"])
    assert summary["honest_test_f1_weighted"].between(0, 1).all()
    assert (study / "table2_f1_weighted_honest.csv").is_file() and (study / "report.md").is_file()
