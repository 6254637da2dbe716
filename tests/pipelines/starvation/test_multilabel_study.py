"""Issue 19, "done when": a user's own 12-lead, multi-label WFDB folder (SNOMED-CT codes on
``# Dx:`` header lines, as the PhysioNet/CinC releases write them) through the whole `study`
pipeline with one catalog entry and two settings (``preprocessing.leads`` and
``preprocessing.task: multilabel``): pretraining on the same twelve leads, every arm trained on
label sets, Tables 2-3 and the paired comparisons on macro AUROC, the floor at AUROC 0.5; and two pretext
methods (contrastive, masked) pretrained on the same twelve leads, their arms compared in the
report's methods table."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from ecg_transfer.signals.window_store import WindowStore
from tests.conftest import inside_project, make_project_copy
from tests.fixtures.multilabel_wfdb import CODES, LEADS, write_multilabel_wfdb_folder

LABELS = {"SR", "AF", "LBBB", "RBBB", "PVC"}  # LPR (two patients) is left out as too small
METHODS = {"cae": {"task": "reconstruct"}, "simclr": {"task": "contrastive", "positives": "same_window"},
           "masked": {"task": "masked", "span_length": 64}}
PRETEXT_ARMS = {"simclr": {"init": "simclr", "freeze": False, "input": "window"},
                "masked_frozen": {"init": "masked", "freeze": True, "input": "window"}}
COMPARISONS = [["transfer", "random"], ["transfer", "image"], ["transfer_frozen", "random_frozen"],
               ["simclr", "random"], ["simclr", "transfer"], ["masked_frozen", "random_frozen"]]


@pytest.fixture(scope="module")
def multilabel_study(tmp_path_factory):
    base = tmp_path_factory.mktemp("multilabel_study")
    written = write_multilabel_wfdb_folder(base / "labelled")
    write_multilabel_wfdb_folder(base / "corpus", n_patients=12, seed=11, prefix="UC")
    project = make_project_copy(base / "project")
    catalog = {
        "labelled_recordings": {"type": "ecg_transfer.datasets.PhysioNetWfdbDataset", "path": str(base / "labelled"),
                                "task": "multilabel", "label_set": CODES, "progress": False},
        "unlabelled_recordings": {"type": "ecg_transfer.datasets.WfdbFolderDataset", "path": str(base / "corpus"),
                                  "progress": False},
    }
    (project / "conf" / "test" / "catalog.yml").write_text(yaml.safe_dump(catalog))
    parameters = project / "conf" / "test" / "parameters.yml"
    params = yaml.safe_load(parameters.read_text())
    params["preprocessing"].update(leads="all", task="multilabel")
    # Two pretext methods beside the CAE, as --env=pretext adds them: they take the 12 leads too.
    params["pretraining"]["methods"] = METHODS
    params.setdefault("study", {})["arms"] = PRETEXT_ARMS
    params.setdefault("statistics", {})["comparisons"] = COMPARISONS
    parameters.write_text(yaml.safe_dump(params))
    with inside_project(project):
        bootstrap_project(project)
        with KedroSession.create(project_path=project, env="test") as session:
            session.run(pipeline_name="study")
        yield project, written


def _arms(project) -> list[str]:
    return sorted(p.parent.name for p in (project / "data/07_model_output").glob("*/training_histories.csv"))


def test_windows_and_the_encoder_hold_the_twelve_leads(multilabel_study):
    project, _ = multilabel_study
    for name in ("labelled_windows", "unlabelled_windows"):
        store = WindowStore(project / "data/05_model_input" / name)
        assert store.windows.shape[1:] == (12, 2048) and store.meta["leads"] == LEADS, name
    labelled = WindowStore(project / "data/05_model_input/labelled_windows")
    assert labelled.task == "multilabel" and set(labelled.classes) == LABELS
    card = json.loads((project / "data/06_models/pretrained_encoder/model_card.json").read_text())
    assert card["lead"] == ",".join(LEADS) and card["architecture"]["in_channels"] == 12


def test_every_arm_trains_on_label_sets_and_saves_their_targets(multilabel_study):
    project, written = multilabel_study
    labels = list(WindowStore(project / "data/05_model_input/labelled_windows").classes)
    arms = _arms(project)
    assert {"transfer", "random", "image", "simclr", "masked_frozen"} <= set(arms)
    for arm in arms:
        histories = pd.read_csv(project / f"data/07_model_output/{arm}/training_histories.csv")
        assert "f1_weighted" not in histories.columns, arm
        assert {"auroc_macro", *(f"auroc_{label}" for label in labels)} <= set(histories.columns), arm
        test = histories[histories["split"] == "test"]
        assert test["auroc_macro"].between(0, 1).all(), arm
        predictions = pd.read_parquet(project / f"data/07_model_output/{arm}/run_predictions.parquet")
        targets = predictions[[f"target_{label}" for label in labels]].to_numpy()
        for record, row in zip(predictions["record_id"], targets):
            mapped = {CODES[code] for code in written[record] if code in CODES}
            assert {label for label, on in zip(labels, row) if on} == mapped - {"LPR"}, (arm, record)
        probabilities = predictions[[f"prob_{label}" for label in labels]].to_numpy()
        assert ((probabilities >= 0) & (probabilities <= 1)).all()
        assert not np.allclose(probabilities.sum(axis=1), 1.0)  # sigmoids, not a softmax


def test_tables_and_comparisons_are_on_macro_auroc_with_a_floor_of_one_half(multilabel_study):
    project, _ = multilabel_study
    summary = pd.read_csv(project / "data/07_model_output/run_summary.csv") if (
        project / "data/07_model_output/run_summary.csv").exists() else pd.read_csv(
        next((project / "data").rglob("run_summary.csv")))
    assert summary["honest_test_auroc_macro"].notna().all()
    assert "honest_test_f1_weighted" not in summary.columns
    comparisons = pd.read_csv(next((project / "data").rglob("arm_comparisons.csv")))
    assert comparisons["metric"].str.contains("auroc_macro").any()
    report = next((project / "data").rglob("report.md")).read_text()
    assert "macro AUROC" in report
    for label in LABELS:
        assert label in report


def test_the_pretext_methods_pretrain_on_the_twelve_leads_and_the_report_compares_them(multilabel_study):
    project, _ = multilabel_study
    for method in ("simclr", "masked"):
        card = json.loads((project / f"data/06_models/pretext/{method}/model_card.json").read_text())
        assert card["lead"] == ",".join(LEADS) and card["architecture"]["in_channels"] == 12, method
    report = next((project / "data").rglob("report.md")).read_text()
    assert "## Pretraining methods (honest macro AUROC)" in report
    assert "| simclr | simclr | fine-tuned |" in report and "| masked_frozen | masked | frozen |" in report
