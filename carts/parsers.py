"""JSON from clients with a bounded nesting depth: the API's parser and the websockets' loads.

Python's json module recurses once per level of nesting: deep enough input raises RecursionError,
which is not a ValueError (DRF's JSONParser catches only that, so it was a 500). No client of ours
nests more than a few levels, so anything deeper than MAX_DEPTH is refused as malformed.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Mapping
from typing import Any

from rest_framework import parsers as drf_parsers
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser
from rest_framework.utils.json import strict_constant

MAX_DEPTH = 32


class TooDeep(ValueError):
    pass


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` nests objects and arrays more than ``limit`` levels deep (``{}`` is one
    level, a number none). Breadth first, without recursion, touching only containers: ~0.75 ms
    for a batch of 500 events (json.loads of the same body: ~0.6 ms)."""
    level = [value] if type(value) in (dict, list) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        below: list[Any] = []
        add = below.append
        for node in level:
            for child in node.values() if type(node) is dict else node:
                kind = type(child)
                if kind is dict or kind is list:
                    add(child)
        level = below
    return False


def loads(text: str | bytes, **kwargs: Any) -> Any:
    """``json.loads`` that raises ValueError (``TooDeep``) for nesting deeper than MAX_DEPTH,
    however deep, and ValueError for everything else it refuses."""
    try:
        value = json.loads(text, **kwargs)
    except RecursionError:
        raise TooDeep(f"nested deeper than {MAX_DEPTH} levels") from None
    if too_deep(value):
        raise TooDeep(f"nested deeper than {MAX_DEPTH} levels")
    return value


class BoundedJSONParser(JSONParser):
    """DRF's JSONParser with a bounded depth: too deep is a 400 ``parse_error``, never a 500."""

    def parse(
        self,
        stream: Any,
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        # (the request's charset, else DEFAULT_CHARSET; missing from the stubs)
        encoding = drf_parsers.get_encoding(parser_context or {})  # type: ignore[attr-defined]
        parse_constant = strict_constant if self.strict else None
        try:
            text = codecs.getreader(encoding)(stream).read()
            return loads(text, parse_constant=parse_constant)
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
