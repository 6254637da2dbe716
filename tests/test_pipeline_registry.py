from kedro.framework.project import configure_project

from ecg_transfer.pipeline_registry import register_pipelines

STUDY_PIPELINES = {
    "ingestion", "preprocessing", "pretraining", "finetuning",
    "image_transfer", "statistics", "starvation",
}


def test_registry_lists_every_pipeline():
    configure_project("ecg_transfer")
    pipelines = register_pipelines()
    assert STUDY_PIPELINES <= set(pipelines)
    assert {"bundled_data", "study", "__default__"} <= set(pipelines)


def test_starvation_is_the_whole_study_and_study_leaves_out_the_bundled_data():
    configure_project("ecg_transfer")
    pipelines = register_pipelines()
    starvation = {n.name for n in pipelines["starvation"].nodes}
    for name in STUDY_PIPELINES - {"starvation"}:
        assert {n.name for n in pipelines[name].nodes} <= starvation, name
    study = {n.name for n in pipelines["study"].nodes}
    bundled = {n.name for n in pipelines["bundled_data"].nodes}
    assert bundled and not (study & bundled)
    assert study | bundled == starvation
    assert pipelines["__default__"].nodes == pipelines["starvation"].nodes
