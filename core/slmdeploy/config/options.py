"""Structure one TOML table into an attrs options class, with errors that name the key and its line."""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, Union

import attrs
import cattrs

from slmdeploy.errors import ConfigError

Locate = Callable[[str], str]
"""Turns a key path such as ``quantize.precision`` into a location such as ``slmdeploy.toml:12``."""


def _strict(kind: type, accepts: tuple[type, ...]) -> Callable[[Any, type], Any]:
    def structure(value: Any, _: type) -> Any:
        if isinstance(value, bool) and kind is not bool:
            raise TypeError(value)
        if not isinstance(value, accepts):
            raise TypeError(value)
        return kind(value)

    return structure


def _make_converter() -> cattrs.Converter:
    # TOML already has types: "4" is not 4, and 4.0 is not an integer.
    converter = cattrs.Converter(forbid_extra_keys=True)
    converter.register_structure_hook(str, _strict(str, (str,)))
    converter.register_structure_hook(int, _strict(int, (int,)))
    converter.register_structure_hook(float, _strict(float, (int, float)))
    converter.register_structure_hook(bool, _strict(bool, (bool,)))
    converter.register_structure_hook(Path, _strict(Path, (str,)))
    converter.register_structure_hook_func(_is_optional, _structure_optional)
    converter.register_structure_hook_func(_is_union, _structure_union)
    converter.register_structure_hook_func(_is_list, _structure_list)
    return converter


def _is_list(kind: Any) -> bool:
    return typing.get_origin(kind) in (list, tuple, typing.Sequence)


def _structure_list(value: Any, kind: Any) -> Any:
    # cattrs would happily iterate a string into a list of characters.
    if not isinstance(value, list):
        raise TypeError(value)
    (inner,) = typing.get_args(kind)[:1] or (Any,)
    items = [converter.structure(item, inner) for item in value]
    return tuple(items) if typing.get_origin(kind) is tuple else items


def _is_optional(kind: Any) -> bool:
    args = typing.get_args(kind)
    return typing.get_origin(kind) in (Union, types.UnionType) and type(None) in args and len(args) == 2


def _structure_optional(value: Any, kind: Any) -> Any:
    if value is None:
        return None
    inner = next(arg for arg in typing.get_args(kind) if arg is not type(None))
    return converter.structure(value, inner)


def _is_union(kind: Any) -> bool:
    return typing.get_origin(kind) in (Union, types.UnionType) and not _is_optional(kind)


def _structure_union(value: Any, kind: Any) -> Any:
    """The first member type that takes the value: ``str | list[str]`` keeps a string a string."""
    for member in typing.get_args(kind):
        if member is type(None):
            if value is None:
                return None
            continue
        try:
            return converter.structure(value, member)
        except Exception:  # noqa: BLE001 - cattrs raises many kinds; all mean "not this member"
            continue
    raise TypeError(value)


converter = _make_converter()


def describe_type(kind: Any) -> str:
    """A reader's name for a type: ``an integer``, ``one of "int4", "int8"``, ``a list of strings``."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is Literal:
        return "one of " + ", ".join(f'"{arg}"' if isinstance(arg, str) else repr(arg) for arg in args)
    if origin in (list, tuple, typing.Sequence):
        return f"a list of {_plural(describe_type(args[0]))}" if args else "a list"
    if origin in (dict, Mapping):
        return "a table"
    if _is_optional(kind):
        return describe_type(next(arg for arg in args if arg is not type(None)))
    if _is_union(kind):
        return " or ".join(describe_type(arg) for arg in args if arg is not type(None))
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false", Path: "a path"}
    return names.get(kind, getattr(kind, "__name__", str(kind)))


def _plural(description: str) -> str:
    for article in ("an ", "a "):
        if description.startswith(article):
            return description[len(article) :] + "s"
    return description


def fields_of(cls: type) -> tuple[attrs.Attribute, ...]:  # type: ignore[type-arg]
    attrs.resolve_types(cls)
    found: tuple[attrs.Attribute, ...] = attrs.fields(cls)  # type: ignore[type-arg]
    return found


def structure_table(cls: type, table: Mapping[str, Any], key: str, locate: Locate) -> Any:
    """Validate `table` (the TOML table at `key`) against the attrs class `cls` and build it."""
    fields = {field.name: field for field in fields_of(cls)}
    check_keys(table, fields, key, locate)
    values = {}
    for name, value in table.items():
        field = fields[name]
        try:
            values[name] = converter.structure(value, field.type or Any)
        except Exception:  # noqa: BLE001 - cattrs raises many kinds; all mean "wrong type"
            raise _wrong_type(key, name, value, field, locate) from None
    missing = [name for name, field in fields.items() if field.default is attrs.NOTHING and name not in values]
    if missing:
        where = locate(key)
        raise ConfigError(
            f"[{key}] is missing the required key {missing[0]!r} ({_help(fields[missing[0]])})",
            where=where,
            fix=f"Add `{missing[0]} = ...` to the [{key}] table.",
        )
    try:
        return cls(**values)
    except (ValueError, TypeError) as error:
        raise _invalid_value(key, error, fields, locate) from None


def check_keys(table: Mapping[str, Any], fields: Mapping[str, Any], key: str, locate: Locate) -> None:
    """Reject keys that are not in `fields`, suggesting the nearest valid one."""
    for name in table:
        if name in fields:
            continue
        valid = sorted(fields)
        nearest = difflib.get_close_matches(name, valid, n=1)
        hint = f"Did you mean {nearest[0]!r}? " if nearest else ""
        listing = ", ".join(valid) if valid else "none"
        raise ConfigError(
            f"unknown key {name!r} in [{key}]",
            where=locate(f"{key}.{name}"),
            fix=f"{hint}Valid keys of [{key}]: {listing}.",
        )


def _help(field: attrs.Attribute) -> str:  # type: ignore[type-arg]
    return str(field.metadata.get("help", describe_type(field.type)))


def _wrong_type(key: str, name: str, value: Any, field: attrs.Attribute, locate: Locate) -> ConfigError:  # type: ignore[type-arg]
    expected = describe_type(field.type)
    return ConfigError(
        f"[{key}] {name} must be {expected}, not {value!r}",
        where=locate(f"{key}.{name}"),
        fix=f"{name}: {_help(field)}.",
    )


_RANGE = re.compile(r"^'(?P<name>\w+)' must be (?P<rule>.+): (?P<value>.*)$", re.DOTALL)


def _invalid_value(key: str, error: Exception, fields: Mapping[str, Any], locate: Locate) -> ConfigError:
    # attrs validators raise (message, attribute, expected, value), or only "'name' must be >= 1: 0" (ge, in_);
    # point at that attribute's line either way.
    attribute = next((arg for arg in error.args if isinstance(arg, attrs.Attribute)), None)
    message = str(error.args[0]) if error.args else str(error)
    name = attribute.name if attribute is not None else None
    if (ranged := _RANGE.match(message)) and ranged["name"] in fields:
        name, message = ranged["name"], f"{ranged['name']} must be {ranged['rule']}, not {ranged['value']}"
    where = locate(f"{key}.{name}") if name else locate(key)
    fix = f"{name}: {_help(fields[name])}." if name is not None and name in fields else None
    return ConfigError(f"[{key}] {message}", where=where, fix=fix)


def unstructure(options: Any) -> dict[str, Any]:
    """Options as plain JSON-friendly data (for cache keys and manifests)."""
    data = converter.unstructure(options)
    return {key: str(value) if isinstance(value, Path) else value for key, value in data.items()}
