"""The API's answers, made from the service's typed results rather than written out again."""

from __future__ import annotations

import dataclasses
import functools
import operator
import types
import typing
from typing import Any, Literal, Union

from pydantic import BaseModel, create_model


def _loose(hint: Any) -> Any:
    """A Literal becomes str: the API answers whatever the store holds, even a value added later."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        return str
    if origin in (Union, types.UnionType):
        return functools.reduce(operator.or_, dict.fromkeys(_loose(a) for a in typing.get_args(hint)))
    return hint


def view(name: str, result: type[Any], *, drop: tuple[str, ...] = ()) -> type[BaseModel]:
    """The response model of a service result (a dataclass): its fields and defaults, less `drop`."""
    hints = typing.get_type_hints(result)
    fields: dict[str, Any] = {
        f.name: (_loose(hints[f.name]), ... if f.default is dataclasses.MISSING else f.default)
        for f in dataclasses.fields(result)
        if f.name not in drop
    }
    return create_model(name, **fields)


def list_of(model: type[BaseModel]) -> Any:
    """`list[model]`, spelled so that a type checker accepts a model made at run time."""
    return types.GenericAlias(list, (model,))
