"""JSON Patch (RFC 6902): the operations an edit with `application/json-patch+json` applies
to a stored resource (`add`, `remove`, `replace`, `move`, `copy`, `test`)."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from servicekit.errors import InvalidInput

__all__ = ["apply_json_patch"]


def apply_json_patch(document: Mapping[str, Any], patch: Sequence[Any]) -> dict[str, Any]:
    """`document` with the RFC 6902 operations of `patch` applied; InvalidInput if one fails."""
    result: Any = copy.deepcopy(dict(document))
    for n, operation in enumerate(patch):
        where = f"JSON Patch operation {n}"
        if not isinstance(operation, dict) or not isinstance(operation.get("op"), str):
            raise InvalidInput(f'{where}: expected an object with "op" and "path"')
        op = operation["op"]
        path = _pointer(operation.get("path"), where)
        if op == "test":
            if _container(result, path, where) != operation.get("value"):
                raise InvalidInput(f"{where}: test failed at {operation['path']!r}")
            continue
        if op in ("move", "copy"):
            source = _pointer(operation.get("from"), where)
            value = copy.deepcopy(_container(result, source, where))
            if op == "move":
                result = _remove(result, source, where)
            result = _add(result, path, value, where)
        elif op == "remove":
            result = _remove(result, path, where)
        elif op in ("add", "replace"):
            if "value" not in operation:
                raise InvalidInput(f'{where}: "{op}" needs a "value"')
            if op == "replace":
                result = _remove(result, path, where)
            result = _add(result, path, operation["value"], where)
        else:
            raise InvalidInput(f"{where}: unknown op {op!r}")
    if not isinstance(result, dict):
        raise InvalidInput("JSON Patch: the patched resource must remain an object")
    return result


def _pointer(text: Any, where: str) -> list[str]:
    if not isinstance(text, str) or (text and not text.startswith("/")):
        raise InvalidInput(f"{where}: invalid JSON pointer {text!r}")
    if not text:
        return []
    return [part.replace("~1", "/").replace("~0", "~") for part in text[1:].split("/")]


def _container(document: Any, path: list[str], where: str) -> Any:
    for part in path:
        if isinstance(document, dict) and part in document:
            document = document[part]
        elif isinstance(document, list) and part.isdigit() and int(part) < len(document):
            document = document[int(part)]
        else:
            raise InvalidInput(f"{where}: path {'/'.join(['', *path])!r} does not exist")
    return document


def _index(container: list[Any], part: str, where: str, *, adding: bool) -> int:
    size = len(container) + (1 if adding else 0)
    if part == "-" and adding:
        return len(container)
    if not part.isdigit() or int(part) >= size:
        raise InvalidInput(f"{where}: invalid array index {part!r}")
    return int(part)


def _add(document: Any, path: list[str], value: Any, where: str) -> Any:
    if not path:
        return value
    parent = _container(document, path[:-1], where)
    if isinstance(parent, dict):
        parent[path[-1]] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, path[-1], where, adding=True), value)
    else:
        raise InvalidInput(f"{where}: cannot add inside a {type(parent).__name__}")
    return document


def _remove(document: Any, path: list[str], where: str) -> Any:
    if not path:
        raise InvalidInput(f"{where}: cannot remove the whole resource")
    parent = _container(document, path[:-1], where)
    if isinstance(parent, dict) and path[-1] in parent:
        del parent[path[-1]]
    elif isinstance(parent, list):
        del parent[_index(parent, path[-1], where, adding=False)]
    else:
        raise InvalidInput(f"{where}: path {'/'.join(['', *path])!r} does not exist")
    return document
