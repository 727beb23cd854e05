"""Strict structuring of TOML tables into frozen attrs classes, collecting every problem.

cattrs' default converter coerces silently (``2.5`` becomes ``2`` for an int field,
``"false"`` becomes ``True`` for a bool) and attrs validators run only once every field
structured, so a user would fix one mistake per run. :func:`structure_table` instead
structures field by field with strict scalar hooks, runs each field's validator on its
own, then the class's cross-field ``validate()``, and returns every problem with its key
path.
"""

from __future__ import annotations

import collections.abc
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

import attrs
import cattrs

from ..errors import ConfigIssue
from ..registry import suggest

__all__ = [
    "converter", "field_doc", "strict_structure", "issues_from_exception", "resolved_fields", "structure_table", "unstructure",
]


class StrictTypeError(TypeError):
    """A TOML value of the wrong type (raised by the strict hooks)."""


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a float", str: "a string",
            list: "an array", dict: "a table"}.get(type(value), type(value).__name__)


def _strict_int(value: Any, _: type) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise StrictTypeError(f"expected an integer, got {_type_name(value)} ({value!r})")
    return value


def _strict_float(value: Any, _: type) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise StrictTypeError(f"expected a number, got {_type_name(value)} ({value!r})")
    return float(value)


def _strict_bool(value: Any, _: type) -> bool:
    if not isinstance(value, bool):
        raise StrictTypeError(f"expected true or false, got {_type_name(value)} ({value!r})")
    return value


def _strict_str(value: Any, _: type) -> str:
    if not isinstance(value, str):
        raise StrictTypeError(f"expected a string, got {_type_name(value)} ({value!r})")
    return value


def _is_sequence_type(tp: Any) -> bool:
    return typing.get_origin(tp) in (list, tuple, set, frozenset, collections.abc.Sequence)


def _check_shape(value: Any, tp: Any, where: str = "") -> None:
    """Refuse a string (or table) where an array is expected: cattrs would turn ``"SE2"``
    into ``["S", "E", "2"]``. Recurses into unions and array items."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        if value is None:
            return
        for arg in args:
            if arg is not type(None):
                try:
                    _check_shape(value, arg, where)
                    return
                except StrictTypeError as exc:
                    last = exc
        raise last
    if _is_sequence_type(tp):
        if not isinstance(value, list | tuple):
            raise StrictTypeError(f"expected an array{where}, got {_type_name(value)} ({value!r})")
        if args and not (len(args) == 2 and args[1] is Ellipsis) and typing.get_origin(tp) is tuple:
            items = args
        else:
            items = (args[0],) * len(value) if args else ()
        for i, (item, arg) in enumerate(zip(value, items, strict=False)):
            _check_shape(item, arg, f" at [{i}]")


def strict_structure(value: Any, tp: Any) -> Any:
    """``converter().structure`` with strings refused where arrays are expected."""
    _check_shape(value, tp)
    return converter().structure(value, tp)


@functools.cache
def converter() -> cattrs.Converter:
    """The shared strict converter (nested attrs classes forbid unknown keys too)."""
    conv = cattrs.Converter(forbid_extra_keys=True)
    conv.register_structure_hook(int, _strict_int)
    conv.register_structure_hook(float, _strict_float)
    conv.register_structure_hook(bool, _strict_bool)
    conv.register_structure_hook(str, _strict_str)
    return conv


def unstructure(obj: Any) -> Any:
    """Plain data (dicts, lists, scalars) of an attrs instance, e.g. for the run record."""
    return converter().unstructure(obj)


def _literal_choices(type_: Any) -> tuple[Any, ...] | None:
    """The allowed values of ``Literal[...]`` (or ``Literal[...] | None``), else None."""
    if typing.get_origin(type_) is Literal:
        return typing.get_args(type_)
    args = typing.get_args(type_)
    if args and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1 and typing.get_origin(inner[0]) is Literal:
            return (*typing.get_args(inner[0]), None)
    return None


def _format_exception(exc: BaseException, type_: Any) -> str:
    choices = _literal_choices(type_)
    if choices is not None:
        shown = ", ".join(repr(c) for c in choices if c is not None)
        return f"expected one of {shown}"
    if isinstance(exc, StrictTypeError):
        return str(exc)
    if isinstance(exc, KeyError):
        return "required key missing"
    if isinstance(exc, cattrs.ForbiddenExtraKeysError):
        return f"unknown key(s) {sorted(exc.extra_fields)}"
    if isinstance(exc, ValueError | TypeError) and str(exc):
        return str(exc)
    name = getattr(type_, "__name__", None) or str(type_)
    return f"invalid value (expected {name})"


def issues_from_exception(exc: Exception, path: str, type_: Any) -> list[ConfigIssue]:
    if isinstance(exc, StrictTypeError | ValueError | TypeError) and not isinstance(
        exc, cattrs.BaseValidationError
    ):
        return [ConfigIssue(path, _format_exception(exc, type_))]
    lines = cattrs.transform_error(exc, path=path, format_exception=_format_exception)
    issues = []
    for line in lines:
        message, _, where = line.rpartition(" @ ")
        issues.append(ConfigIssue(where.replace("$.", "") or path, message or line))
    return issues


def resolved_fields(cls: type) -> tuple[attrs.Attribute, ...]:
    """``attrs.fields(cls)`` with string annotations (``from __future__ import annotations``)
    resolved to real types."""
    try:
        attrs.resolve_types(cls)
    except NameError as exc:
        raise TypeError(f"cannot resolve the annotations of {cls.__qualname__}: {exc}") from exc
    return attrs.fields(cls)


def field_doc(field: attrs.Attribute) -> str:
    """The ``doc`` metadata of an attrs field (empty when undocumented)."""
    return str(field.metadata.get("doc", ""))


def structure_table(cls: type, data: Any, path: str) -> tuple[Any | None, list[ConfigIssue]]:
    """Build ``cls`` from the TOML table ``data``; report every problem at once.

    :param cls: a frozen attrs class (step ``Params``, reader ``Options``...).
    :param data: the parsed TOML table (a dict).
    :param path: key path of the table for messages, e.g. ``"bkg_removal"``.
    :returns: ``(instance, [])`` or ``(None, issues)``.
    """
    if not isinstance(data, Mapping):
        return None, [ConfigIssue(path, f"expected a table, got {_type_name(data)}")]
    fields = {f.name: f for f in resolved_fields(cls)}
    issues: list[ConfigIssue] = []
    for key in data:
        if key not in fields:
            issues.append(ConfigIssue(f"{path}.{key}", f"unknown key{suggest(key, list(fields))}; "
                                      f"valid keys: {', '.join(fields)}"))
    values: dict[str, Any] = {}
    for name, field in fields.items():
        key_path = f"{path}.{name}"
        if name not in data:
            if field.default is attrs.NOTHING:
                issues.append(ConfigIssue(key_path, "required key missing"))
            continue
        choices = _literal_choices(field.type)
        if choices is not None and data[name] not in choices:
            shown = ", ".join(repr(c) for c in choices if c is not None)
            hint = suggest(str(data[name]), [str(c) for c in choices if c is not None])
            issues.append(ConfigIssue(key_path, f"{data[name]!r} is not one of {shown}{hint}"))
            continue
        try:
            value = strict_structure(data[name], field.type)
        except Exception as exc:  # noqa: BLE001 - reported to the user
            issues.extend(issues_from_exception(exc, key_path, field.type))
            continue
        if field.converter is not None:
            try:
                value = field.converter(value)
            except (TypeError, ValueError) as exc:
                issues.append(ConfigIssue(key_path, str(exc)))
                continue
        if field.validator is not None:
            try:
                field.validator(None, field, value)
            except (TypeError, ValueError) as exc:
                issues.append(ConfigIssue(key_path, _validator_message(exc, value)))
                continue
        values[name] = value
    if issues:
        return None, issues
    try:
        obj = cls(**values)
    except (TypeError, ValueError) as exc:
        return None, [ConfigIssue(path, str(exc))]
    validate = getattr(obj, "validate", None)
    if callable(validate):
        for message in validate() or []:
            issues.append(ConfigIssue(path, message))
    return (None, issues) if issues else (obj, [])


def _validator_message(exc: BaseException, value: Any) -> str:
    """attrs' validator messages are of the form "'x' must be ... (got ...)"; keep them."""
    text = str(exc.args[0]) if exc.args else str(exc)
    return text if text else f"invalid value {value!r}"
