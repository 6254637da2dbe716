import pytest
import yaml
from kedro.framework.project import configure_project

from ecg_transfer.pipeline_registry import register_pipelines
from ecg_transfer.pipelines.configured_arms import check_arm_unchanged, configured_arms
from ecg_transfer.pipelines.finetuning.pipeline import create_pipeline as finetuning
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
