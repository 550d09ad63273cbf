"""Reduce Python type annotations to the few kinds used to coerce and validate values."""

from __future__ import annotations

import types
import typing
from typing import Any, Literal

Kind = Literal["bool", "int", "float", "str", "list", "dict", "any"]

_SIMPLE: dict[Any, Kind] = {bool: "bool", int: "int", float: "float", str: "str"}
_CONTAINERS: dict[Any, Kind] = {
    list: "list",
    tuple: "list",
    set: "list",
    frozenset: "list",
    dict: "dict",
}


def kind_of(annotation: Any) -> Kind:
    """The kind of a resolved annotation: the inner kind of ``X | None``, "any" when unclear."""
    if annotation in _SIMPLE:
        return _SIMPLE[annotation]
    if annotation in _CONTAINERS:
        return _CONTAINERS[annotation]
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return kind_of(typing.get_args(annotation)[0])
    if origin is typing.Literal:
        return _common({kind_of(type(value)) for value in typing.get_args(annotation)})
    if origin in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return _common({kind_of(member) for member in members})
    if origin in _CONTAINERS:
        return _CONTAINERS[origin]
    return "any"


def _common(kinds: set[Kind]) -> Kind:
    if kinds == {"int", "float"}:
        return "float"
    return kinds.pop() if len(kinds) == 1 else "any"
