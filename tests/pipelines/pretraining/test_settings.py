"""The pretraining parameters are typed once, by the project's one path (issue 17 item 6);
the process count and the progress bar stay out of the CAE's run key."""

from __future__ import annotations

import copy

import pytest
import yaml

from ecg_transfer.models.cae import CaeConfig
from ecg_transfer.pipelines.pretraining.nodes import PretrainingSettings
from ecg_transfer.runs import result_settings
from ecg_transfer.training.engine import TrainConfig
from tests.conftest import PROJECT_ROOT


def _base() -> dict:
    text = (PROJECT_ROOT / "conf/base/parameters_pretraining.yml").read_text().replace("${globals:window_length}", "2048")
    return yaml.safe_load(text)["pretraining"]


def test_pretraining_settings_are_typed_with_errors_naming_the_setting():
    settings = PretrainingSettings.from_params(_base())
    assert isinstance(settings.cae, CaeConfig) and isinstance(settings.training, TrainConfig)
    assert settings.training.warmup_epochs == 1.0 and isinstance(settings.training.warmup_epochs, float)
    assert settings.launch.nproc == 1 and settings.progress is True
    bad = copy.deepcopy(_base())
    bad["training"]["lr"] = "fast"
    with pytest.raises(TypeError, match=r"pretraining\.training\.lr: expected a number"):
        PretrainingSettings.from_params(bad)
    with pytest.raises(TypeError, match=r"pretraining\.progress: expected true or false"):
        PretrainingSettings.from_params({**_base(), "progress": "yes"})
    with pytest.raises(ValueError, match=r"pretraining\.distributed: unknown parameter\(s\) \['nproc'\]"):
        PretrainingSettings.from_params({**_base(), "distributed": {"nproc": 2}})
    with pytest.raises(TypeError, match=r"pretraining\.training\.nproc: expected an integer"):
        PretrainingSettings.from_params({**_base(), "training": {**_base()["training"], "nproc": 1.5}})
    override = PretrainingSettings.from_params(_base(), {"lr": 0.001})
    assert override.training.lr == 0.001 and override.training.epochs == settings.training.epochs


def test_process_count_and_progress_bar_are_not_result_settings():
    base = PretrainingSettings.from_params(_base())
    changed = PretrainingSettings.from_params(
        {**_base(), "progress": False, "training": {**_base()["training"], "nproc": 2}}
    )
    assert changed.launch.nproc == 2 and changed.progress is False
    assert result_settings(changed) == result_settings(base)
    assert set(result_settings(base)) == {"cae", "training"}
