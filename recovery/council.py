"""The scoring council: small additive specialists combined into one calibrated probability.

Pure serving code (stdlib only). A council is read from a JSON artifact (``Council.from_dict``)
written by ``recovery.training.fit_council``; docs/scoring-model.md describes the method.

Log-odds of abandonment = ``base_log_odds`` + one table lookup per (specialist, feature) term.
Each term's table holds that feature's contribution, already multiplied by its specialist's
combiner weight, so the sum is the calibrated log-odds and each lookup is an exact explanation.

- Numeric feature: ``edges`` (strictly increasing); a value ``v`` falls in bin
  ``bisect_right(edges, v)`` (a value equal to an edge goes up), so values beyond the outer edges
  take the first or last bin. ``bool`` counts as 0/1. ``None``, an absent key and NaN are missing.
- Categorical feature: values are looked up by ``category_key`` (strings as they are, ``True`` /
  ``False`` as "true" / "false", integral numbers as their decimal digits); categories unseen in
  training (or too rare) take the ``other`` contribution; ``None`` or absent is missing.
- Segment (optional): one numeric feature, cut by a few edges, picks which set of tables every
  term uses, so each specialist can hold a different shape per segment (say, carts that reached a
  page with purchase value versus those that did not). Missing counts as segment 0.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

FeatureValue = float | int | str | bool | None

FORMAT = 1

# One term in one segment: (feature, edges or None for a categorical feature, contributions by
# numeric bin, contributions by category key, the "other" contribution, the "missing" one).
_Term = tuple[str, tuple[float, ...] | None, tuple[float, ...], dict[str, float], float, float]
_NO_TABLE: dict[str, float] = {}


class CouncilFormatError(ValueError):
    """The artifact is not a council this code can serve."""


def category_key(value: FeatureValue) -> str:
    """The key a categorical value is looked up by (``None`` is handled by the caller)."""
    if type(value) is str:
        return value
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def sigmoid(z: float) -> float:
    if z >= 0.0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def _json_value(value: FeatureValue) -> FeatureValue:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass(frozen=True, slots=True)
class Contribution:
    """One feature's push on the log-odds of abandonment, as seen by one specialist."""

    specialist: str
    feature: str
    value: FeatureValue
    log_odds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "specialist": self.specialist,
            "feature": self.feature,
            "value": _json_value(self.value),
            "log_odds": round(self.log_odds, 4),
        }


@dataclass(frozen=True, slots=True)
class SpecialistContribution:
    name: str
    log_odds: float
    features: tuple[Contribution, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "log_odds": round(self.log_odds, 4),
            "features": [c.as_dict() for c in self.features],
        }


def _top(contributions: Sequence[Contribution], n: int) -> list[Contribution]:
    # Largest |log_odds| first; ties keep the council's term order (sorted() is stable).
    return sorted(contributions, key=lambda c: -abs(c.log_odds))[: max(n, 0)]


@dataclass(frozen=True, slots=True)
class Explanation:
    probability: float
    log_odds: float
    base_log_odds: float
    specialists: tuple[SpecialistContribution, ...]

    def top_reasons(self, n: int = 3) -> list[Contribution]:
        return _top([c for s in self.specialists for c in s.features], n)

    def as_dict(self) -> dict[str, Any]:
        return {
            "probability": round(self.probability, 6),
            "log_odds": round(self.log_odds, 4),
            "base_log_odds": round(self.base_log_odds, 4),
            "specialists": [s.as_dict() for s in self.specialists],
        }


class Council:
    """A fitted council, ready to score feature mappings (see the module docstring)."""

    __slots__ = (
        "_artifact",
        "_base",
        "_owners",
        "_segment_edges",
        "_segment_feature",
        "_terms",
        "feature_names",
        "specialist_names",
        "version",
    )

    version: str
    specialist_names: tuple[str, ...]
    feature_names: tuple[str, ...]

    def __init__(
        self,
        *,
        version: str,
        base_log_odds: float,
        segment_feature: str | None,
        segment_edges: tuple[float, ...],
        owners: tuple[str, ...],
        terms: tuple[tuple[_Term, ...], ...],
        artifact: dict[str, Any],
    ) -> None:
        # Use from_dict: it validates the artifact these come from.
        self.version = version
        self._base = base_log_odds
        self._segment_feature = segment_feature
        self._segment_edges = segment_edges
        self._owners = owners  # the specialist of each term, in term order
        self._terms = terms  # per segment, every term in order
        self._artifact = artifact
        self.specialist_names = tuple(dict.fromkeys(owners))
        names = [t[0] for t in terms[0]]
        if segment_feature is not None:
            names.append(segment_feature)
        self.feature_names = tuple(dict.fromkeys(names))

    # Serving -----------------------------------------------------------------------------------

    def _segment(self, features: Mapping[str, FeatureValue]) -> int:
        if self._segment_feature is None:
            return 0
        v = features.get(self._segment_feature)
        if v is None or v != v:
            return 0
        return bisect_right(self._segment_edges, v)

    def _contributions(self, features: Mapping[str, FeatureValue]) -> list[float]:
        get = features.get
        out: list[float] = []
        append = out.append
        try:
            for name, edges, bins, table, other, missing in self._terms[self._segment(features)]:
                v = get(name)
                if v is None or v != v:
                    append(missing)
                elif edges is not None:
                    append(bins[bisect_right(edges, v)])
                else:
                    c = table.get(v if type(v) is str else category_key(v))
                    append(other if c is None else c)
        except TypeError:
            self._raise_bad_value(features)
            raise
        return out

    def probability(self, features: Mapping[str, FeatureValue]) -> float:
        """P(abandoned) for one feature mapping: the fastest path."""
        get = features.get
        z = self._base
        try:
            for name, edges, bins, table, other, missing in self._terms[self._segment(features)]:
                v = get(name)
                if v is None or v != v:
                    z += missing
                elif edges is not None:
                    z += bins[bisect_right(edges, v)]
                else:
                    c = table.get(v if type(v) is str else category_key(v))
                    z += other if c is None else c
        except TypeError:
            self._raise_bad_value(features)
            raise
        return sigmoid(z)

    def score(
        self, features: Mapping[str, FeatureValue], reasons: int = 3
    ) -> tuple[float, list[Contribution]]:
        """P(abandoned) and the ``reasons`` largest contributions (as ``explain().top_reasons``)."""
        cs = self._contributions(features)
        z = self._base
        for c in cs:
            z += c
        # Largest |log_odds| first; reverse=True keeps ties in term order, as _top does.
        magnitudes = list(map(abs, cs))
        order = sorted(range(len(cs)), key=magnitudes.__getitem__, reverse=True)[: max(reasons, 0)]
        names = self._terms[0]
        owners = self._owners
        top = [
            Contribution(owners[i], names[i][0], features.get(names[i][0]), cs[i]) for i in order
        ]
        return sigmoid(z), top

    def explain(self, features: Mapping[str, FeatureValue]) -> Explanation:
        """Every term's contribution, grouped by specialist; exact in log-odds."""
        cs = self._contributions(features)
        names = self._terms[0]
        grouped: dict[str, list[Contribution]] = {s: [] for s in self.specialist_names}
        for i, c in enumerate(cs):
            name = names[i][0]
            grouped[self._owners[i]].append(
                Contribution(self._owners[i], name, features.get(name), c)
            )
        specialists = tuple(
            SpecialistContribution(s, sum(c.log_odds for c in cs_), tuple(cs_))
            for s, cs_ in grouped.items()
        )
        log_odds = self._base + sum(s.log_odds for s in specialists)
        return Explanation(sigmoid(log_odds), log_odds, self._base, specialists)

    def _raise_bad_value(self, features: Mapping[str, FeatureValue]) -> None:
        numeric = {t[0] for t in self._terms[0] if t[1] is not None}
        if self._segment_feature is not None:
            numeric.add(self._segment_feature)
        for name in sorted(numeric):
            v = features.get(name)
            if v is not None and not isinstance(v, int | float):
                raise TypeError(
                    f"Feature {name!r} is numeric; got {type(v).__name__} {v!r} "
                    f"(council {self.version})."
                )
        for t in self._terms[0]:
            v = features.get(t[0])
            if t[1] is None and v is not None and not isinstance(v, str | int | float):
                raise TypeError(
                    f"Feature {t[0]!r} is categorical; got {type(v).__name__} {v!r} "
                    f"(council {self.version})."
                )

    # Artifact ----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The JSON-safe artifact this council was read from (``"format": 1``)."""
        artifact: dict[str, Any] = _copy(self._artifact)
        return artifact

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Council:
        """Read and validate an artifact; raises ``CouncilFormatError`` (a ``ValueError``)."""
        return _parse(data)

    def __repr__(self) -> str:
        return (
            f"Council(version={self.version!r}, specialists={len(self.specialist_names)}, "
            f"terms={len(self._owners)}, segments={len(self._terms)})"
        )


# Artifact parsing --------------------------------------------------------------------------------


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _fail(where: str, message: str) -> CouncilFormatError:
    return CouncilFormatError(f"Malformed council artifact at {where}: {message}")


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(where, f"expected a number, got {type(value).__name__}")
    result = float(value)
    if not math.isfinite(result):
        raise _fail(where, "expected a finite number")
    return result


def _numbers(value: Any, where: str, length: int | None = None) -> tuple[float, ...]:
    if not isinstance(value, list | tuple):
        raise _fail(where, f"expected a list of numbers, got {type(value).__name__}")
    if length is not None and len(value) != length:
        raise _fail(where, f"expected {length} numbers, got {len(value)}")
    return tuple(_number(v, f"{where}[{i}]") for i, v in enumerate(value))


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(where, "expected a non-empty string")
    return value


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(where, f"expected an object, got {type(value).__name__}")
    return value


def _increasing(edges: tuple[float, ...], where: str) -> None:
    if any(b <= a for a, b in pairwise(edges)):
        raise _fail(where, "edges must be strictly increasing")


def _per_segment(value: Any, where: str, segments: int, length: int) -> list[tuple[float, ...]]:
    if not isinstance(value, list | tuple) or len(value) != segments:
        raise _fail(where, f"expected one list per segment ({segments})")
    return [_numbers(v, f"{where}[{s}]", length) for s, v in enumerate(value)]


def _term(raw: Any, where: str, segments: int) -> list[_Term]:
    term = _mapping(raw, where)
    name = _string(term.get("feature"), f"{where}.feature")
    kind = term.get("type")
    missing = _numbers(term.get("missing"), f"{where}.missing", segments)
    if kind == "numeric":
        edges = _numbers(term.get("edges"), f"{where}.edges")
        _increasing(edges, f"{where}.edges")
        values = _per_segment(term.get("values"), f"{where}.values", segments, len(edges) + 1)
        return [(name, edges, values[s], _NO_TABLE, 0.0, missing[s]) for s in range(segments)]
    if kind == "categorical":
        raw_categories = term.get("categories")
        if not isinstance(raw_categories, list) or not all(
            isinstance(c, str) for c in raw_categories
        ):
            raise _fail(f"{where}.categories", "expected a list of strings")
        if len(set(raw_categories)) != len(raw_categories):
            raise _fail(f"{where}.categories", "categories must be distinct")
        values = _per_segment(term.get("values"), f"{where}.values", segments, len(raw_categories))
        other = _numbers(term.get("other"), f"{where}.other", segments)
        return [
            (
                name,
                None,
                (),
                dict(zip(raw_categories, values[s], strict=True)),
                other[s],
                missing[s],
            )
            for s in range(segments)
        ]
    raise _fail(f"{where}.type", f"expected 'numeric' or 'categorical', got {kind!r}")


def _parse(data: Mapping[str, Any]) -> Council:
    data = _mapping(data, "the top level")
    if data.get("format") != FORMAT:
        raise _fail("format", f"expected {FORMAT}, got {data.get('format')!r}")
    version = _string(data.get("version"), "version")
    base = _number(data.get("base_log_odds"), "base_log_odds")
    segment_feature: str | None = None
    segment_edges: tuple[float, ...] = ()
    raw_segment = data.get("segment")
    if raw_segment is not None:
        segment = _mapping(raw_segment, "segment")
        segment_feature = _string(segment.get("feature"), "segment.feature")
        segment_edges = _numbers(segment.get("edges"), "segment.edges")
        if not segment_edges:
            raise _fail("segment.edges", "a segment needs at least one edge")
        _increasing(segment_edges, "segment.edges")
    segments = len(segment_edges) + 1
    raw_specialists = data.get("specialists")
    if not isinstance(raw_specialists, list) or not raw_specialists:
        raise _fail("specialists", "expected a non-empty list")
    owners: list[str] = []
    by_segment: list[list[_Term]] = [[] for _ in range(segments)]
    seen: set[str] = set()
    for i, raw in enumerate(raw_specialists):
        where = f"specialists[{i}]"
        specialist = _mapping(raw, where)
        name = _string(specialist.get("name"), f"{where}.name")
        if name in seen:
            raise _fail(f"{where}.name", f"duplicate specialist {name!r}")
        seen.add(name)
        _number(specialist.get("weight"), f"{where}.weight")
        raw_terms = specialist.get("features")
        if not isinstance(raw_terms, list) or not raw_terms:
            raise _fail(f"{where}.features", "expected a non-empty list")
        names: set[str] = set()
        for j, raw_term in enumerate(raw_terms):
            per_segment = _term(raw_term, f"{where}.features[{j}]", segments)
            if per_segment[0][0] in names:
                raise _fail(f"{where}.features[{j}]", f"duplicate feature {per_segment[0][0]!r}")
            names.add(per_segment[0][0])
            owners.append(name)
            for s in range(segments):
                by_segment[s].append(per_segment[s])
    if data.get("training") is not None:
        _mapping(data["training"], "training")
    try:
        artifact = json.loads(json.dumps(data, allow_nan=False))
    except (TypeError, ValueError, RecursionError) as e:
        raise _fail("the top level", f"not JSON-safe ({e})") from None
    return Council(
        version=version,
        base_log_odds=base,
        segment_feature=segment_feature,
        segment_edges=segment_edges,
        owners=tuple(owners),
        terms=tuple(tuple(ts) for ts in by_segment),
        artifact=artifact,
    )
