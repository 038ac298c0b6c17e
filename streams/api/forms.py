"""Stripe's request encoding: `application/x-www-form-urlencoded` with bracket
notation, decoded to nested values. Pure.

`metadata[k]=v` -> {"metadata": {"k": "v"}}; `a[b][c]=v` nests; `expand[]=x` appends
to a list; `expand[0]=x` (what the official SDKs send for lists) is a dict keyed by
"0", "1", ... that `as_list` reads as a list (a metadata key may be "0", so the
decoder cannot tell an index from a key on its own). Every leaf is a string: the
parameter parsers (streams/api/stripe_params.py) convert and bound them.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

MAX_DEPTH = 5
MAX_FIELDS = 1_000

_NAME = re.compile(r"^([A-Za-z0-9_]+)((?:\[[^\[\]]*\])*)$")
_SEGMENT = re.compile(r"\[([^\[\]]*)\]")


class FormError(ValueError):
    """A body that is not a bracket-notation form. `param` is the offending name,
    `message` never carries a value (it may be a card number)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param = message, param


def parse_name(name: str) -> list[str]:
    """`a[b][]` -> ["a", "b", ""]."""
    m = _NAME.match(name)
    if m is None:
        raise FormError("a parameter name is not in bracket notation", None)
    path = [m.group(1), *_SEGMENT.findall(m.group(2))]
    if len(path) > MAX_DEPTH:
        raise FormError(f"{m.group(1)} is nested deeper than {MAX_DEPTH} levels", m.group(1))
    return path


def decode_form(body: bytes | str) -> dict[str, Any]:
    """The nested parameters of a form body (or a query string)."""
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    try:
        pairs = parse_qsl(
            text, keep_blank_values=True, strict_parsing=bool(text), max_num_fields=MAX_FIELDS, errors="strict"
        )
    except (ValueError, UnicodeDecodeError):
        raise FormError("the body is not a form (application/x-www-form-urlencoded)") from None
    out: dict[str, Any] = {}
    for name, value in pairs:
        _put(out, parse_name(name), value, name)
    return out


def _put(node: dict[str, Any] | list[Any], path: list[str], value: str, name: str) -> None:
    head, rest = path[0], path[1:]
    param = name.split("[", 1)[0]
    if isinstance(node, list):
        if head != "":
            raise FormError(f"{param} mixes [] and named keys", param)
        if not rest:
            node.append(value)
            return
        child: Any = {} if rest[0] != "" else []
        node.append(child)
        _put(child, rest, value, name)
        return
    if head == "":
        raise FormError(f"{param} mixes [] and named keys", param)
    if not rest:
        if head in node:
            raise FormError(f"{name.split('[', 1)[0]} is given twice", param)
        node[head] = value
        return
    child = node.get(head)
    want_list = rest[0] == ""
    if child is None:
        child = [] if want_list else {}
        node[head] = child
    elif isinstance(child, str) or isinstance(child, list) != want_list:
        raise FormError(f"{param} is given both as a value and as a nested object", param)
    _put(child, rest, value, name)


def as_list(value: Any, param: str) -> list[Any]:
    """A list parameter, sent as `p[]=...` or as the SDKs' `p[0]=...&p[1]=...`."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict) and all(k.isdigit() for k in value):
        indices = sorted(value, key=int)
        if [int(i) for i in indices] != list(range(len(indices))):
            raise FormError(f"{param} has gaps in its indices", param)
        return [value[i] for i in indices]
    raise FormError(f"{param} must be a list", param)
