import pytest
import yaml
from kedro.framework.project import configure_project

from ecg_transfer import pipeline_registry
from ecg_transfer.pipeline_registry import register_pipelines
from ecg_transfer.pipelines.configured_arms import check_arm_unchanged, configured_arms
from ecg_transfer.pipelines.finetuning.pipeline import create_pipeline as finetuning
from ecg_transfer.pipelines.statistics.pipeline import create_pipeline as statistics
from tests.conftest import PROJECT_ROOT

STAGES = {"bundled_data", "ingestion", "preprocessing", "pretraining", "finetuning", "image_transfer", "statistics"}


def test_registry_lists_every_stage_and_the_two_compositions():
    configure_project("ecg_transfer")
    pipelines = register_pipelines()
    assert set(pipelines) == STAGES | {"study", "starvation", "__default__"}


def test_starvation_is_the_whole_study_and_study_leaves_out_the_bundled_data():
    configure_project("ecg_transfer")
    pipelines = register_pipelines()
    starvation = {n.name for n in pipelines["starvation"].nodes}
    for name in STAGES:
        assert {n.name for n in pipelines[name].nodes} <= starvation, name
    study = {n.name for n in pipelines["study"].nodes}
    bundled = {n.name for n in pipelines["bundled_data"].nodes}
    assert bundled and not (study & bundled)
    assert study | bundled == starvation
    assert pipelines["__default__"].nodes == pipelines["starvation"].nodes


def test_every_configured_arm_gets_its_own_namespace_and_outputs():
    arms = configured_arms(PROJECT_ROOT)
    pipeline = finetuning(arms=arms)
    for arm in arms:
        nodes = [n for n in pipeline.nodes if n.namespace == arm.name]
        assert [n.name for n in nodes] == [f"{arm.name}.train_arm"]
        assert set(nodes[0].outputs) == {
            f"{arm.name}.{name}" for name in ("training_histories", "run_predictions", "arm_settings")
        }
        assert ("pretrained_encoder@finetuning" in nodes[0].inputs) == arm.uses_encoder
        assert ("image_spectrogram_features" in nodes[0].inputs) == (arm.input == "spectrogram")


def test_an_arm_is_one_yaml_entry(tmp_path):
    conf = tmp_path / "conf"
    for env in ("base", "local"):
        (conf / env).mkdir(parents=True)
    study = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_study.yml").read_text())
    study["study"]["arms"]["random_linear"] = {"init": "random", "freeze": True, "input": "window"}
    (conf / "base" / "parameters_study.yml").write_text(yaml.safe_dump(study, sort_keys=False))
    arms = configured_arms(tmp_path)
    assert arms.names[-1] == "random_linear"
    nodes = [n for n in finetuning(arms=arms).nodes if n.namespace == "random_linear"]
    assert len(nodes) == 1 and "pretrained_encoder@finetuning" not in nodes[0].inputs


def test_a_run_whose_parameters_changed_an_arm_fails_naming_it():
    arms = configured_arms(PROJECT_ROOT)
    study = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_study.yml").read_text())["study"]
    check_arm_unchanged(arms["transfer"], study)
    study["arms"]["transfer"]["freeze"] = True
    with pytest.raises(ValueError, match="arm 'transfer'.*conf/base or conf/local"):
        check_arm_unchanged(arms["transfer"], study)


def _project_with_arms(tmp_path, change) -> None:
    """A conf/ folder whose study.arms is the project's, changed by ``change(arms)``."""
    conf = tmp_path / "conf"
    for env in ("base", "local"):
        (conf / env).mkdir(parents=True, exist_ok=True)
    study = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_study.yml").read_text())
    change(study["study"]["arms"])
    (conf / "base" / "parameters_study.yml").write_text(yaml.safe_dump(study, sort_keys=False))


def test_a_linear_head_and_a_partially_frozen_encoder_are_one_yaml_entry_each(tmp_path):
    _project_with_arms(tmp_path, lambda arms: arms.update(
        transfer_linear={"init": "pretrained", "freeze": False, "input": "window", "head": "linear"},
        transfer_partial={"init": "pretrained", "freeze": 3, "input": "window"},
    ))
    arms = configured_arms(tmp_path)
    assert arms.names[-2:] == ("transfer_linear", "transfer_partial")
    assert arms["transfer_linear"].head == "linear" and arms["transfer_partial"].freeze == 3
    assert arms["transfer_partial"].head == "mlp" and arms["transfer"].freeze is False
    pipeline = finetuning(arms=arms)
    for name in ("transfer_linear", "transfer_partial"):
        (node,) = [n for n in pipeline.nodes if n.namespace == name]
        assert "pretrained_encoder@finetuning" in node.inputs


def _stages(monkeypatch, tmp_path, change) -> dict:
    _project_with_arms(tmp_path, change)
    arms = configured_arms(tmp_path)
    monkeypatch.setattr(pipeline_registry, "configured_arms", lambda: arms)
    configure_project("ecg_transfer")
    pipelines = pipeline_registry.register_pipelines()
    return {
        "study": {n.name for n in pipelines["study"].nodes},
        "pretraining": {n.name for n in pipelines["pretraining"].nodes},
        "image_transfer": {n.name for n in pipelines["image_transfer"].nodes},
        "statistics_inputs": statistics(arms=arms).inputs(),
    }


def test_a_study_without_an_image_arm_computes_no_spectrograms(monkeypatch, tmp_path):
    stages = _stages(monkeypatch, tmp_path, lambda arms: arms.pop("image"))
    assert stages["image_transfer"] and not stages["image_transfer"] & stages["study"]
    assert stages["pretraining"] <= stages["study"]
    assert "params:image_transfer" not in stages["statistics_inputs"]
    assert "cae_history" in stages["statistics_inputs"]


def test_a_study_without_pretrained_window_arms_does_not_pretrain(monkeypatch, tmp_path):
    def random_and_image_only(arms):
        for name in ("transfer", "transfer_frozen"):
            arms.pop(name)

    stages = _stages(monkeypatch, tmp_path, random_and_image_only)
    assert stages["pretraining"] and not stages["pretraining"] & stages["study"]
    assert stages["image_transfer"] <= stages["study"]
    assert "cae_history" not in stages["statistics_inputs"]
    assert "params:image_transfer" in stages["statistics_inputs"]


def test_the_default_study_runs_every_stage(monkeypatch, tmp_path):
    stages = _stages(monkeypatch, tmp_path, lambda arms: None)
    assert stages["pretraining"] | stages["image_transfer"] <= stages["study"]
    assert {"cae_history", "params:image_transfer"} <= stages["statistics_inputs"]
