"""Issue 18: pretraining methods as arms. A tiny study (conf/test's sizes) whose arms name two
pretext methods beside the CAE trains each named method once, fine-tunes from its encoder, and
the report compares the methods; an arm naming an unknown method stops the build."""

from __future__ import annotations

import json
import os
import shutil

import pandas as pd
import pytest
import yaml
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from mlflow.tracking import MlflowClient

from ecg_transfer.pipeline_registry import register_pipelines
from ecg_transfer.pipelines.configured_arms import configured_arms
from tests.conftest import PROJECT_ROOT, inside_project, make_project_copy

ENV = "tiny_pretext"
METHODS = {"cae": {"task": "reconstruct"}, "simclr": {"task": "contrastive", "positives": "same_window"},
           "masked": {"task": "masked", "span_length": 64}, "unused": {"task": "masked"}}
ARMS = {
    "image": None, "transfer_frozen": None, "random_frozen": None,
    "simclr": {"init": "simclr", "freeze": False, "input": "window"},
    "masked_frozen": {"init": "masked", "freeze": True, "input": "window"},
}
ALL_ARMS = ["random", "transfer", "simclr", "masked_frozen"]
COMPARISONS = [["transfer", "random"], ["simclr", "random"], ["simclr", "transfer"], ["masked_frozen", "random"]]


def _write_env(project, arms=ARMS, methods=METHODS):
    """conf/test (the tiny sizes) plus methods and arms, as an environment of its own."""
    env = project / "conf" / ENV
    shutil.copytree(project / "conf" / "test", env)
    params = yaml.safe_load((env / "parameters.yml").read_text())
    params["pretraining"]["methods"] = methods
    params["study"]["arms"] = arms
    params["statistics"]["comparisons"] = COMPARISONS
    (env / "parameters.yml").write_text(yaml.safe_dump(params))


@pytest.fixture(scope="module")
def pretext_study(tmp_path_factory):
    project = make_project_copy(tmp_path_factory.mktemp("pretext") / "project")
    _write_env(project)
    kedro_env = os.environ.pop("KEDRO_ENV", None)
    try:
        with inside_project(project):
            bootstrap_project(project)
            # As `kedro run --env=tiny_pretext`: no KEDRO_ENV; the session's env shapes the arms
            # (configured_arms.RunEnvironmentHooks).
            with KedroSession.create(project_path=project, env=ENV) as session:
                session.run(pipeline_name="starvation")
            yield project
    finally:
        if kedro_env is not None:
            os.environ["KEDRO_ENV"] = kedro_env


def test_each_named_method_is_pretrained_once_and_persisted(pretext_study):
    models = pretext_study / "data" / "06_models"
    for method in ("simclr", "masked"):
        card = json.loads((models / "pretext" / method / "model_card.json").read_text())
        assert card["pretext"]["method"] == method and (models / "pretext" / method / "encoder_weights.pt").is_file()
        history = pd.read_csv(pretext_study / "data/07_model_output/pretext" / f"{method}_history.csv")
        assert set(history["method"]) == {method}
    assert not (models / "pretext" / "unused").exists()  # no arm names it: not trained
    assert (models / "pretrained_encoder" / "model_card.json").is_file()  # the CAE: `transfer` names it
    client = MlflowClient(tracking_uri=f"sqlite:///{pretext_study / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("ecg_transfer")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.stage = 'pretraining'")
    assert sorted(r.data.tags["arm"] for r in runs) == ["cae", "masked", "simclr"]
    logged = {m.name for m in client.search_logged_models([experiment.experiment_id])}
    assert {"pretrained_encoder", "simclr_encoder", "masked_encoder"} <= logged


def test_each_method_arm_starts_from_its_methods_encoder(pretext_study):
    settings = {arm: json.loads((pretext_study / "data/07_model_output" / arm / "arm_settings.json").read_text())
                for arm in ALL_ARMS}
    encoders = {arm: s["encoder_fingerprint"] for arm, s in settings.items()}
    assert encoders["random"] is None and len({encoders[a] for a in ("transfer", "simclr", "masked_frozen")}) == 3
    assert settings["simclr"]["spec"]["init"] == "simclr"
    summary = pd.read_csv(pretext_study / "data/08_reporting/study/run_summary.csv")
    assert set(summary["arm"]) == set(ALL_ARMS)


def test_the_report_has_the_methods_table_and_comparisons(pretext_study):
    report = (pretext_study / "data/08_reporting/study/report.md").read_text()
    section = report[report.index("## Pretraining methods (honest weighted F1)"):]
    assert "Each method against random init and against the CAE" in section
    for row in ("| simclr |", "| masked_frozen |", "| transfer |", "| 100% simclr |", "| 50% masked_frozen |"):
        assert row in section, row


def test_the_default_and_the_test_study_have_no_pretext_node(monkeypatch):
    monkeypatch.chdir(PROJECT_ROOT)  # the project's own conf/, not a copy's
    for env in ("local", "test"):
        monkeypatch.setenv("KEDRO_ENV", env)
        nodes = [n.name for n in register_pipelines()["__default__"].nodes]
        assert "pretrain_autoencoder" in nodes and not [n for n in nodes if "pretext" in n], env


def test_the_pretext_environment_builds_a_node_per_method(monkeypatch):
    monkeypatch.chdir(PROJECT_ROOT)
    monkeypatch.setenv("KEDRO_ENV", "pretext")
    nodes = {n.name for n in register_pipelines()["starvation"].nodes}
    assert {f"{m}.pretrain_pretext_encoder" for m in ("contrastive", "contrastive_record", "masked")} <= nodes
    assert "masked_frozen.train_arm" in nodes and "image.train_arm" not in nodes


def test_an_arm_naming_an_unknown_method_stops_the_build(tmp_path):
    project = make_project_copy(tmp_path / "project")
    _write_env(project, arms={**ARMS, "simclr": {"init": "simclar", "freeze": False, "input": "window"}})
    with pytest.raises(ValueError, match=r"study.arms.simclr.init: 'simclar' .*\['masked', 'simclr', 'unused'\]"):
        configured_arms(project, ENV)


def test_an_arm_naming_a_method_the_runs_parameters_lack_fails_at_run_time():
    """Checked again where the arm is prepared, against the run's own pretraining.methods."""
    from ecg_transfer.pipelines.finetuning.input_kinds import input_kind
    from ecg_transfer.study.arms import arm_registry
    from tests.pipelines.conftest import load_parameters

    spec = arm_registry({"simclr": ARMS["simclr"]})["simclr"]
    pretraining = load_parameters()["pretraining"]  # the CAE alone
    with pytest.raises(ValueError, match=r"study.arms.simclr.init: 'simclr' .*pretraining.methods has \[\]"):
        input_kind(spec).prepare(spec, None, ["SR"], None, pretraining=pretraining, preprocessing={},
                                 pretrained_encoder=None)
