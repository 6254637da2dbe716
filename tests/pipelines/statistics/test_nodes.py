"""The `statistics` parameter group is typed once (issue 17 item 6: one parameter path)."""

from __future__ import annotations

import pytest
import yaml

from ecg_transfer.pipelines.statistics.nodes import StatisticsConfig
from tests.conftest import PROJECT_ROOT


def _base() -> dict:
    return yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_statistics.yml").read_text())["statistics"]


def test_the_statistics_group_is_typed_once_with_errors_naming_the_setting():
    config = StatisticsConfig.from_params(_base())
    assert isinstance(config.seed, int) and isinstance(config.lci_eps, float) and config.record_n_boot == 2000
    assert StatisticsConfig.from_params({**_base(), "confidence": 1}).confidence == 1.0
    with pytest.raises(TypeError, match=r"statistics\.confidence: expected a number, got '95%'"):
        StatisticsConfig.from_params({**_base(), "confidence": "95%"})
    with pytest.raises(TypeError, match=r"statistics\.record_n_boot: expected an integer"):
        StatisticsConfig.from_params({**_base(), "record_n_boot": 20.5})
    with pytest.raises(ValueError, match=r"statistics: unknown parameter\(s\) \['confidance'\]"):
        StatisticsConfig.from_params({**_base(), "confidance": 0.9})
