"""The council's serving code on hand-built artifacts: exact log-odds, exact explanations."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import pytest

from recovery.council import (
    Contribution,
    Council,
    CouncilFormatError,
    FeatureValue,
    category_key,
    sigmoid,
)

ARTIFACT: dict[str, Any] = {
    "format": 1,
    "version": "hand-1",
    "base_log_odds": 0.5,
    "segment": None,
    "specialists": [
        {
            "name": "basket",
            "weight": 1.0,
            "features": [
                {
                    "feature": "value",
                    "type": "numeric",
                    "edges": [10.0, 50.0],
                    "values": [[-0.4, 0.1, 0.6]],
                    "missing": [0.2],
                },
                {
                    "feature": "device",
                    "type": "categorical",
                    "categories": ["desktop", "mobile"],
                    "values": [[-0.3, 0.25]],
                    "other": [0.05],
                    "missing": [0.0],
                },
            ],
        },
        {
            "name": "history",
            "weight": 0.8,
            "features": [
                {
                    "feature": "returning",
                    "type": "categorical",
                    "categories": ["true", "false", "3"],
                    "values": [[-0.7, 0.1, 0.45]],
                    "other": [0.0],
                    "missing": [0.15],
                },
                {
                    "feature": "visits",
                    "type": "numeric",
                    "edges": [1.5],
                    "values": [[0.3, -0.2]],
                    "missing": [-0.05],
                },
            ],
        },
    ],
}

# Two segments on page_value (< 2 and >= 2): every term has one table per segment.
SEGMENTED: dict[str, Any] = {
    "format": 1,
    "version": "hand-seg",
    "base_log_odds": -1.0,
    "segment": {"feature": "page_value", "edges": [2.0]},
    "specialists": [
        {
            "name": "intent",
            "weight": 1.2,
            "features": [
                {
                    "feature": "page_value",
                    "type": "numeric",
                    "edges": [2.0, 10.0],
                    "values": [[0.9, 0.0, 0.0], [0.0, -0.5, -1.5]],
                    "missing": [0.4, 0.0],
                }
            ],
        },
        {
            "name": "device",
            "weight": 1.0,
            "features": [
                {
                    "feature": "device",
                    "type": "categorical",
                    "categories": ["desktop", "mobile"],
                    "values": [[-0.1, 0.2], [-0.6, 0.7]],
                    "other": [0.01, 0.02],
                    "missing": [0.03, 0.04],
                }
            ],
        },
    ],
}

# (features, expected contributions in term order: value, device, returning, visits)
CASES: list[tuple[dict[str, FeatureValue], tuple[float, float, float, float]]] = [
    ({"value": 20, "device": "mobile", "returning": True, "visits": 3}, (0.1, 0.25, -0.7, -0.2)),
    ({"value": 5.5, "device": "desktop", "returning": False, "visits": 0}, (-0.4, -0.3, 0.1, 0.3)),
    ({}, (0.2, 0.0, 0.15, -0.05)),  # every key absent: missing
    (
        {"value": None, "device": None, "returning": None, "visits": float("nan")},
        (0.2, 0.0, 0.15, -0.05),
    ),
    (
        {"value": -1e12, "device": "tablet", "returning": "maybe", "visits": 1e12},
        (-0.4, 0.05, 0.0, -0.2),
    ),
    ({"value": 10.0, "device": "mobile", "returning": 3, "visits": 1.5}, (0.1, 0.25, 0.45, -0.2)),
    ({"value": 50, "device": "desktop", "returning": 3.0, "visits": True}, (0.6, -0.3, 0.45, 0.3)),
    (
        {"value": False, "device": "Mobile", "returning": "true", "visits": 2},
        (-0.4, 0.05, -0.7, -0.2),
    ),
    ({"value": 9.999, "unrelated": "ignored", "returning": 2.5}, (-0.4, 0.0, 0.0, -0.05)),
]
TERMS = (("basket", "value"), ("basket", "device"), ("history", "returning"), ("history", "visits"))


@pytest.fixture(scope="module")
def council() -> Council:
    return Council.from_dict(ARTIFACT)


def test_names_and_version(council):
    assert council.version == "hand-1"
    assert council.specialist_names == ("basket", "history")
    assert council.feature_names == ("value", "device", "returning", "visits")


@pytest.mark.parametrize(("features", "expected"), CASES)
def test_probability_is_the_logistic_of_base_plus_lookups(council, features, expected):
    z = 0.5 + sum(expected)
    assert council.probability(features) == pytest.approx(1 / (1 + math.exp(-z)), abs=1e-12)


@pytest.mark.parametrize(("features", "expected"), CASES)
def test_explanation_is_exact(council, features, expected):
    e = council.explain(features)

    contributions = [c for s in e.specialists for c in s.features]
    assert [(c.specialist, c.feature) for c in contributions] == list(TERMS)
    assert [c.log_odds for c in contributions] == pytest.approx(expected, abs=1e-12)
    assert [c.value for c in contributions][:1] == [features.get("value")]
    for s in e.specialists:
        assert s.log_odds == pytest.approx(sum(c.log_odds for c in s.features), abs=1e-12)
    assert e.base_log_odds == 0.5
    assert e.log_odds == pytest.approx(
        e.base_log_odds + sum(s.log_odds for s in e.specialists), abs=1e-9
    )
    assert e.probability == pytest.approx(1 / (1 + math.exp(-e.log_odds)), abs=1e-12)
    assert e.probability == pytest.approx(council.probability(features), abs=1e-12)


@pytest.mark.parametrize(("features", "expected"), CASES)
@pytest.mark.parametrize("n", [0, 1, 3, 4, 10])
def test_score_reasons_are_the_explanations_top_reasons(council, features, expected, n):
    probability, reasons = council.score(features, reasons=n)

    assert probability == pytest.approx(council.probability(features), abs=1e-15)
    assert reasons == council.explain(features).top_reasons(n)
    assert len(reasons) == min(n, 4)
    magnitudes = [abs(r.log_odds) for r in reasons]
    assert magnitudes == sorted(magnitudes, reverse=True)


def test_top_reasons_by_magnitude_ties_in_term_order(council):
    # value -0.4, device -0.3, returning 0.1, visits 0.3: |0.3| ties, device comes first.
    features = {"value": 1, "device": "desktop", "returning": False, "visits": 1}

    _, reasons = council.score(features)

    assert reasons == [
        Contribution("basket", "value", 1, pytest.approx(-0.4)),  # type: ignore[arg-type]
        Contribution("basket", "device", "desktop", pytest.approx(-0.3)),  # type: ignore[arg-type]
        Contribution("history", "visits", 1, pytest.approx(0.3)),  # type: ignore[arg-type]
    ]


def test_as_dict_is_json_safe(council):
    features: dict[str, FeatureValue] = {"value": float("nan"), "device": "mobile", "visits": 2}

    e = council.explain(features)
    data = json.loads(json.dumps(e.as_dict(), allow_nan=False))

    assert data["specialists"][0]["features"][0] == {
        "specialist": "basket",
        "feature": "value",
        "value": None,
        "log_odds": 0.2,
    }
    assert data["specialists"][0]["features"][1]["value"] == "mobile"
    assert data["log_odds"] == round(e.log_odds, 4)
    assert set(data) == {"probability", "log_odds", "base_log_odds", "specialists"}
    assert council.score(features)[1][0].as_dict() == {
        "specialist": "basket",
        "feature": "device",
        "value": "mobile",
        "log_odds": 0.25,
    }


@pytest.mark.parametrize(
    ("features", "terms"),
    [
        ({"page_value": 0, "device": "mobile"}, (0.9, 0.2)),
        ({"page_value": 1.99, "device": "desktop"}, (0.9, -0.1)),
        ({"page_value": 2.0, "device": "desktop"}, (-0.5, -0.6)),
        ({"page_value": 50, "device": "mobile"}, (-1.5, 0.7)),
        ({"page_value": 50, "device": "tv"}, (-1.5, 0.02)),
        ({"device": "mobile"}, (0.4, 0.2)),  # missing segment feature: segment 0
        ({"page_value": float("nan")}, (0.4, 0.03)),
        ({"page_value": True, "device": None}, (0.9, 0.03)),
    ],
)
def test_segment_picks_the_tables(features, terms):
    council = Council.from_dict(SEGMENTED)

    e = council.explain(features)

    assert [c.log_odds for s in e.specialists for c in s.features] == pytest.approx(terms)
    assert council.probability(features) == pytest.approx(sigmoid(-1.0 + sum(terms)), abs=1e-12)
    assert council.score(features, 2)[1] == e.top_reasons(2)
    assert council.feature_names == ("page_value", "device")


@pytest.mark.parametrize("artifact", [ARTIFACT, SEGMENTED])
def test_round_trip_gives_identical_outputs(artifact):
    council = Council.from_dict(artifact)

    data = council.to_dict()
    again = Council.from_dict(json.loads(json.dumps(data, allow_nan=False)))

    assert data == artifact
    assert again.to_dict() == data
    for features, _ in CASES:
        both = {**features, "page_value": features.get("value")}
        assert again.probability(both) == council.probability(both)
        assert again.explain(both) == council.explain(both)
        assert again.score(both) == council.score(both)


def test_to_dict_is_a_copy(council):
    data = council.to_dict()
    data["specialists"][0]["features"][0]["values"][0][0] = 99.0
    data["base_log_odds"] = 7

    assert council.to_dict() == ARTIFACT
    assert council.explain({"value": 0}).specialists[0].features[0].log_odds == -0.4


def test_a_numeric_feature_given_text_is_a_clear_error(council):
    with pytest.raises(TypeError, match=r"'value' is numeric; got str '12'"):
        council.probability({"value": "12"})
    with pytest.raises(TypeError, match=r"'visits' is numeric"):
        council.score({"visits": "many"})


@pytest.mark.parametrize(
    ("value", "key"),
    [("Mobile", "Mobile"), (True, "true"), (False, "false"), (3, "3"), (3.0, "3"), (2.5, "2.5")],
)
def test_category_key(value, key):
    assert category_key(value) == key


def _broken(path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(ARTIFACT)
    *parents, last = path.split(".")
    target: Any = data
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    if value is _DELETE:
        del target[int(last) if last.isdigit() else last]
    else:
        target[int(last) if last.isdigit() else last] = value
    return data


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("format", 2, r"format: expected 1, got 2"),
        ("format", _DELETE, r"format: expected 1, got None"),
        ("version", "", r"version: expected a non-empty string"),
        ("base_log_odds", "0.5", r"base_log_odds: expected a number, got str"),
        ("base_log_odds", float("inf"), r"base_log_odds: expected a finite number"),
        ("specialists", [], r"specialists: expected a non-empty list"),
        ("specialists.1.name", "basket", r"specialists\[1\]\.name: duplicate specialist 'basket'"),
        ("specialists.0.weight", None, r"specialists\[0\]\.weight: expected a number"),
        ("specialists.0.features", [], r"specialists\[0\]\.features: expected a non-empty list"),
        ("specialists.0.features.0.type", "spline", r"\.type: expected 'numeric' or 'categorical'"),
        ("specialists.0.features.0.edges", [50.0, 10.0], r"edges must be strictly increasing"),
        (
            "specialists.0.features.0.values",
            [[0.1, 0.2]],
            r"values\[0\]: expected 3 numbers, got 2",
        ),
        ("specialists.0.features.0.values", [[0, 0, 0], [0, 0, 0]], r"one list per segment \(1\)"),
        ("specialists.0.features.0.missing", [], r"missing: expected 1 numbers, got 0"),
        ("specialists.0.features.0.values", [[0.1, "x", 0.3]], r"values\[0\]\[1\]: expected a num"),
        ("specialists.0.features.1.categories", ["a", "a"], r"categories must be distinct"),
        ("specialists.0.features.1.categories", [1, 2], r"categories: expected a list of strings"),
        ("specialists.0.features.1.other", None, r"other: expected a list of numbers"),
        ("specialists.1.features.1.feature", "returning", r"duplicate feature 'returning'"),
        ("segment", {"feature": "value", "edges": []}, r"segment\.edges: a segment needs"),
        ("segment", {"feature": "value", "edges": [1.0]}, r"missing: expected 2 numbers, got 1"),
        ("segment", "value", r"segment: expected an object, got str"),
        ("training", [1], r"training: expected an object, got list"),
        ("training", {"when": object()}, r"not JSON-safe"),
    ],
)
def test_malformed_artifacts_are_refused_with_a_message(path, value, message):
    with pytest.raises(CouncilFormatError, match=message) as caught:
        Council.from_dict(_broken(path, value))

    assert isinstance(caught.value, ValueError)
    assert str(caught.value).startswith("Malformed council artifact at ")


@pytest.mark.parametrize("data", [None, [], "council", 1])
def test_an_artifact_that_is_not_an_object_is_refused(data):
    with pytest.raises(ValueError, match=r"the top level: expected an object"):
        Council.from_dict(data)
