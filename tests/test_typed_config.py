"""The one path from parameters to configs: nested configs and ``A | B`` fields."""

from dataclasses import dataclass, field

import pytest

from ecg_transfer.runs import COSMETIC, cosmetic_fields, result_settings
from ecg_transfer.typed_config import config_from_params


@dataclass(frozen=True)
class Inner:
    hidden: int = 64
    rates: tuple[float, ...] = (0.1,)


@dataclass(frozen=True)
class Outer:
    inner: Inner = field(default_factory=Inner)
    freeze: bool | int = False
    progress: bool = field(default=True, metadata=COSMETIC)


def test_nested_configs_are_read_and_checked_with_the_full_setting_name():
    config = config_from_params(Outer, {"inner": {"hidden": 8.0, "rates": [1, 2]}, "freeze": 3}, "group")
    assert config == Outer(Inner(8, (1.0, 2.0)), 3)
    assert config_from_params(Outer, {}, "group") == Outer()
    with pytest.raises(ValueError, match=r"group\.inner: unknown parameter\(s\) \['hiden'\]"):
        config_from_params(Outer, {"inner": {"hiden": 8}}, "group")
    with pytest.raises(TypeError, match=r"group\.inner\.hidden: expected an integer"):
        config_from_params(Outer, {"inner": {"hidden": "8"}}, "group")


def test_a_union_takes_the_first_type_that_fits():
    assert config_from_params(Outer, {"freeze": True}, "g").freeze is True
    assert config_from_params(Outer, {"freeze": 2}, "g").freeze == 2
    with pytest.raises(TypeError, match=r"g\.freeze: expected true or false, got 'x'; or expected an integer"):
        config_from_params(Outer, {"freeze": "x"}, "g")


def test_result_settings_leave_out_cosmetic_fields_at_every_level():
    assert result_settings(Outer(Inner(8, (1.0,)), 2, progress=False)) == {
        "inner": {"hidden": 8, "rates": [1.0]}, "freeze": 2,
    }
    assert cosmetic_fields(Outer) == {"progress"}
