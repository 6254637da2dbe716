"""A `kedro run` opens with our lines, not with library warnings (issue 20 item 2), and its
progress is log lines when the output is not a terminal."""

import pytest

from tests.test_mlflow_tracking import finish, make_tiny_project, start_kedro_run


@pytest.mark.slow
def test_a_kedro_run_prints_none_of_the_known_library_warnings(tmp_path):
    project = make_tiny_project(tmp_path / "tiny")
    code, output = finish(start_kedro_run(project, "--params=mode=ok"))
    assert code == 0, output[-3000:]
    assert "register_new_resolver" not in output  # OmegaConf, called by Kedro and kedro-mlflow
    assert "\r" not in output  # no carriage-return progress stream in a log
