"""Parameter dicts (from YAML) into typed, frozen config dataclasses, once, where a node receives them.

YAML gives ``2048`` and ``250.0`` and ``[a, b]``; the code wants ``int``, ``float`` and a
tuple. :func:`config_from_params` converts each field by its annotation and refuses unknown
keys and wrong types with an error naming the parameter, so the domain code never casts.
Supported annotations: ``Any`` (passed through), ``bool``, ``int``, ``float``, ``str``, ``tuple[str, ...]`` (or of
int/float), a nested config dataclass (read from a mapping the same way), ``X | None`` of those
and ``X | Y`` (the first that takes the value).
This is the project's one way from parameters to a config: nodes call it, never ``Config(**dict)``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def config_from_params(cls: type[T], params: Mapping[str, Any] | None, where: str) -> T:
    """``cls(**params)`` with every value converted to its field's type; errors name ``where.key``."""
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise TypeError(f"{where}: expected a mapping of parameters, got {type(params).__name__} {params!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(str(k) for k in params if k not in fields)
    if unknown:
        raise ValueError(f"{where}: unknown parameter(s) {unknown}; known: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _convert(value, hints[name], f"{where}.{name}") for name, value in params.items()}
    return cls(**kwargs)


def _convert_first(value: Any, options: list[Any], where: str) -> Any:
    """``A | B``: the value as the first option that takes it (``bool | int``: true stays true)."""
    errors = []
    for option in options:
        try:
            return _convert(value, option, where)
        except TypeError as error:
            errors.append(str(error).removeprefix(f"{where}: "))
    raise TypeError(f"{where}: " + "; or ".join(errors))


def _convert(value: Any, annotation: Any, where: str) -> Any:
    if annotation is Any:
        return value
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        return value if isinstance(value, annotation) else config_from_params(annotation, value, where)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None:
            if type(None) in options:
                return None
            raise TypeError(f"{where}: a value is required, got null")
        inner = [o for o in options if o is not type(None)]
        if len(inner) == 1:
            return _convert(value, inner[0], where)
        return _convert_first(value, inner, where)
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise TypeError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        item_type = typing.get_args(annotation)[0]
        return tuple(_convert(v, item_type, f"{where}[{i}]") for i, v in enumerate(value))
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise TypeError(f"{where}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise TypeError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise TypeError(f"{where}: expected an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if isinstance(value, str):
            return value
        raise TypeError(f"{where}: expected a string, got {value!r}")
    raise TypeError(f"{where}: unsupported annotation {annotation!r}")
