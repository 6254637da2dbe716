"""The project's configuration loads in every environment it ships, offline and private."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.io import DatasetError

from ecg_transfer.models.cae import CaeConfig
from ecg_transfer.pipelines.image_transfer.nodes import ImageTransferConfig
from ecg_transfer.study.experiment import FinetuningConfig, StudyConfig

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def test_telemetry_consent_is_committed_as_false():
    assert yaml.safe_load((PROJECT_ROOT / ".telemetry").read_text()) == {"consent": False}
    assert ".telemetry" not in (PROJECT_ROOT / ".gitignore").read_text().split()


@pytest.mark.parametrize("env", ["local", "test", "paper", "real", "pretext"])
def test_config_loads(project_copy, env):
    bootstrap_project(project_copy)
    with KedroSession.create(project_path=project_copy, env=env) as session:
        context = session.load_context()
        params = context.params
        catalog = context.catalog
    for group in ("bundled_data", "preprocessing", "pretraining", "finetuning", "image_transfer", "study"):
        assert group in params, group
    assert "labelled_windows" in catalog
    # Every group this project's nodes type reads into its config in every environment.
    FinetuningConfig.from_params(params["finetuning"])
    StudyConfig.from_params(params["study"])
    ImageTransferConfig.from_params(params["image_transfer"])
    CaeConfig.from_dict(params["pretraining"]["cae"])
    uri = context.config_loader["mlflow"]["server"]["mlflow_tracking_uri"]
    assert uri == f"sqlite:///{project_copy / 'mlflow.db'}"  # the copy's own store (tests/conftest.py)


def test_mlflow_tracks_to_sqlite_in_the_project(project_copy, monkeypatch, tmp_path):
    """MLflow 3 refuses the old file store; the project's store is a SQLite file beside conf/,
    unless MLFLOW_TRACKING_URI names a tracking server (docs/tracking.md)."""
    config = yaml.safe_load((PROJECT_ROOT / "conf" / "base" / "mlflow.yml").read_text())
    assert config["server"]["mlflow_tracking_uri"] == "${oc.env:MLFLOW_TRACKING_URI,'sqlite:///mlflow.db'}"
    assert "mlflow.db" in (PROJECT_ROOT / ".gitignore").read_text().split()
    bootstrap_project(project_copy)
    (project_copy / "conf" / "local" / "mlflow.yml").unlink()  # the copy's own override
    other = f"sqlite:///{tmp_path / 'team.db'}"  # an http:// server URI works the same way
    monkeypatch.setenv("MLFLOW_TRACKING_URI", other)
    with KedroSession.create(project_path=project_copy) as session:
        uri = session.load_context().config_loader["mlflow"]["server"]["mlflow_tracking_uri"]
    assert uri == other


_NO_NETWORK = """
import socket, sys
attempts = []
def refuse(*args, **kwargs):
    attempts.append(args)
    with open(sys.argv[1], "a") as log:
        log.write(repr(args) + "\\n")
    raise OSError("network disabled by the test")
socket.socket.connect = refuse
socket.create_connection = refuse
sys.argv = ["kedro", "registry", "list"]
from kedro.framework.cli import main
main()
"""


def test_kedro_cli_lists_pipelines_without_any_network_call(project_copy, tmp_path):
    """kedro-telemetry ships with kedro; with consent false nothing may even try to connect."""
    attempts = tmp_path / "connect_attempts.log"
    env = {k: v for k, v in __import__("os").environ.items() if k != "KEDRO_DISABLE_TELEMETRY"}
    done = subprocess.run(
        [sys.executable, "-c", _NO_NETWORK, str(attempts)],
        cwd=project_copy, capture_output=True, text=True, env=env, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "starvation" in done.stdout and "image_transfer" in done.stdout
    assert not attempts.exists() or attempts.read_text() == ""


def test_someone_elses_encoder_can_be_given_on_the_command_line(project_copy):
    """`kedro run --pipeline=finetuning --params=encoder_weights=..,encoder_card=..`: the arms read
    the user's files through a read-only entry; pretraining still writes the project's own."""
    bootstrap_project(project_copy)
    runtime = {"encoder_weights": "/models/their_encoder.pt", "encoder_card": "/models/their_card.json"}
    with KedroSession.create(project_path=project_copy, runtime_params=runtime) as session:
        catalog = session.load_context().catalog
    theirs = catalog["pretrained_encoder@finetuning"]._describe()
    assert theirs == {"weights_path": "/models/their_encoder.pt", "card_path": "/models/their_card.json",
                      "read_only": True}
    with pytest.raises(DatasetError, match="read-only"):
        catalog["pretrained_encoder@finetuning"].save({"weights": {}, "card": {}})
    ours = catalog["pretrained_encoder@saved"]._describe()
    assert ours["weights_path"].endswith("data/06_models/pretrained_encoder/encoder_weights.pt")
    assert not ours["read_only"]
    with KedroSession.create(project_path=project_copy) as session:
        default = session.load_context().catalog
    assert default["pretrained_encoder@finetuning"]._describe()["weights_path"] == ours["weights_path"]


def test_every_dataset_has_a_layer_and_the_layers_have_an_order():
    """kedro-viz's layer view needs a layer on every catalog entry and no loop between layers
    (a report read upstream of its own layer turns the view off)."""
    import re
    from graphlib import CycleError, TopologicalSorter

    from ecg_transfer.pipeline_registry import register_pipelines

    catalog = yaml.safe_load((PROJECT_ROOT / "conf" / "base" / "catalog.yml").read_text())
    patterns = [(re.compile("^" + re.sub(r"\\{\w+\\}", ".+", re.escape(key)) + "$"), entry)
                for key, entry in catalog.items()]

    def layer(name):
        entry = catalog.get(name) or next((e for p, e in patterns if p.match(name)), None)
        return None if entry is None else entry.get("metadata", {}).get("kedro-viz", {}).get("layer")

    assert all(layer(name) for name in catalog), [name for name in catalog if not layer(name)]
    graph: dict[str, set[str]] = {}
    for node in register_pipelines()["__default__"].nodes:
        for output in node.outputs:
            for source in node.inputs:
                if not source.startswith("params:") and layer(source) and layer(output):
                    if layer(source) != layer(output):
                        graph.setdefault(layer(output), set()).add(layer(source))
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as error:
        raise AssertionError(f"the layers loop: {error.args[1]}") from error
    assert order.index("raw") < order.index("primary") < order.index("model_output") < order.index("reporting")


def _params(env: str) -> dict:
    from ecg_transfer import settings

    loader = settings.CONFIG_LOADER_CLASS(conf_source=str(PROJECT_ROOT / "conf"), env=env, **settings.CONFIG_LOADER_ARGS)
    return loader["parameters"]


def test_the_paper_environment_is_the_paper_s_protocol():
    """150 epochs without early stopping, 10 trials, 8:2 train/test (validation carved from the
    80 %), 100 windows per unlabelled patient, one window per labelled record, Adam at 0.005,
    plain cross-entropy, the three data fractions."""
    params = _params("paper")
    training = params["finetuning"]["training"]
    assert (training["epochs"], training["lr"], training.get("patience")) == (150, 0.005, None)
    assert params["finetuning"]["class_weighting"] == "none"
    assert params["study"]["n_trials"] == 10 and params["study"]["fractions"] == [1.0, 0.5, 0.25]
    splits = params["preprocessing"]["labelled_splits"]
    assert splits["test_fraction"] == 0.2 and splits["test_fraction"] + splits["val_fraction"] < 1
    assert params["preprocessing"]["unlabelled_splits"]["test_fraction"] == 0.2
    signal = params["preprocessing"]["signal"]
    assert signal["windows_per_recording"] == 100 and signal["windows_per_record"] == 1
    assert (signal["target_fs"], signal["window_length"]) == (250.0, 2048)
    assert params["pretraining"]["cae"]["channels"] == [16, 32, 32, 64, 64, 64, 64, 64, 64]


def test_the_real_data_profile_has_a_budget_with_patience_and_several_windows_per_record(project_copy):
    params = _params("real")
    training = params["finetuning"]["training"]
    assert training["patience"] is not None and training["patience"] < training["epochs"]
    assert training["monitor_split"] == "val"  # patience counts validation epochs, never test ones
    assert params["finetuning"]["class_weighting"] in ("none", "balanced")
    assert params["preprocessing"]["signal"]["windows_per_record"] > 1
    assert params["finetuning"]["windows_per_epoch"] == "one_per_record"  # one random window per drawn record
    assert _params("local")["finetuning"]["windows_per_epoch"] == "all"  # the demo trains every window
    assert params["pretraining"]["cae"]["channels"] == [16, 32, 32, 64, 64, 64, 64, 64, 64]
    assert _params("local")["finetuning"]["training"]["patience"] is None  # the demo keeps its budget
    bootstrap_project(project_copy)
    runtime = {"labelled_path": "/data/ecgs", "labels_csv": "/data/labels.csv", "lead": "MLII",
               "corpus_path": "/data/corpus"}
    with KedroSession.create(project_path=project_copy, env="real", runtime_params=runtime) as session:
        config = session.load_context().config_loader["catalog"]
    labelled = config["labelled_recordings"]
    assert labelled["type"] == "ecg_transfer.datasets.WfdbLabelledFolderDataset"
    assert (labelled["path"], labelled["labels_csv"], labelled["lead"]) == ("/data/ecgs", "/data/labels.csv", "MLII")
    assert config["unlabelled_recordings"]["path"] == "/data/corpus"


def test_the_pretext_environment_compares_every_method_with_random_and_the_cae():
    """--env=pretext: the CAE, SimCLR-style, CLOCS-style and masked pretraining, a fine-tuned and
    a frozen arm for each beside random, and each method compared with random and the CAE."""
    from ecg_transfer.pipelines.configured_arms import configured_arms
    from ecg_transfer.training.pretext_methods import methods_from_params

    params = _params("pretext")
    methods = methods_from_params(params["pretraining"]["methods"])
    assert {name: m.task for name, m in methods.items()} == {
        "cae": "reconstruct", "contrastive": "contrastive", "contrastive_record": "contrastive", "masked": "masked"}
    assert methods["contrastive_record"].paired and not methods["contrastive"].paired
    arms = configured_arms(PROJECT_ROOT, "pretext")
    assert "image" not in arms and arms["random_frozen"].init_scheme == "standard"
    assert arms["transfer"].init == "pretrained" and arms["transfer_frozen"].freeze is True
    comparisons = set(map(tuple, params["statistics"]["comparisons"]))
    for name in ("contrastive", "contrastive_record", "masked"):
        assert (arms[name].init, arms[name].freeze, arms[f"{name}_frozen"].freeze) == (name, False, True)
        assert {(name, "random"), (name, "transfer"), (f"{name}_frozen", "random_frozen"),
                (f"{name}_frozen", "transfer_frozen")} <= comparisons
    arms.check_comparisons(params["statistics"]["comparisons"])
    # The default study is the paper's: the CAE alone.
    assert set(methods_from_params(_params("local")["pretraining"]["methods"])) == {"cae"}
