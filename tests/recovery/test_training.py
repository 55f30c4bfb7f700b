"""Councils fitted on generated data with known effects; evaluate(); the benchmark smoke run."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from recovery.council import Council, FeatureValue
from recovery.training import Hyperparameters, evaluate, fit_council

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "tests" / "fixtures" / "uci-online-shoppers" / "sample.csv"
SPECIALISTS = {"shape": ["x", "noise"], "kind": ["channel"], "gate": ["page_value"]}
CHANNEL_EFFECT = {"email": -1.0, "ads": 0.8, "direct": 0.0, "social": 0.4}


def generated(n: int, seed: int) -> tuple[list[dict[str, FeatureValue]], list[int], np.ndarray]:
    """Abandonment with a U-shaped effect of x, a categorical effect, and an x effect that only
    exists when page_value > 0 (a segment to find). About 5% of x are missing (neutral)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, n)
    channel = rng.choice(list(CHANNEL_EFFECT), n)
    page_value = np.where(rng.random(n) < 0.6, 0.0, rng.exponential(10, n))
    noise = rng.normal(size=n)
    missing = rng.random(n) < 0.05
    z = 1.2 * x**2 - 1.5 + np.array([CHANNEL_EFFECT[c] for c in channel])
    z = z + np.where(page_value > 0, -1.0 + 0.8 * x, 0.0)
    z = np.where(missing, 0.0, z)
    labels = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    rows: list[dict[str, FeatureValue]] = [
        {
            "x": None if missing[i] else float(x[i]),
            "channel": str(channel[i]),
            "page_value": float(page_value[i]),
            "noise": float(noise[i]),
        }
        for i in range(n)
    ]
    return rows, labels.tolist(), z


def linear_auc(train, train_labels, test, test_labels) -> float:
    def matrix(rows):
        return np.array(
            [
                [
                    0.0 if r["x"] is None else r["x"],
                    r["x"] is None,
                    r["page_value"],
                    r["noise"],
                    *(r["channel"] == c for c in CHANNEL_EFFECT),
                ]
                for r in rows
            ],
            dtype=float,
        )

    model = LogisticRegression(max_iter=2000).fit(matrix(train), train_labels)
    return float(roc_auc_score(test_labels, model.predict_proba(matrix(test))[:, 1]))


@pytest.fixture(scope="module")
def data():
    train, train_labels, _ = generated(4000, seed=1)
    test, test_labels, _ = generated(4000, seed=2)
    return train, train_labels, test, test_labels


@pytest.fixture(scope="module")
def council(data) -> Council:
    train, train_labels, _, _ = data
    return fit_council(
        train, train_labels, specialists=SPECIALISTS, categorical={"channel"}, version="gen-1"
    )


def test_the_council_captures_the_non_linear_and_categorical_effects(data, council):
    train, train_labels, test, test_labels = data

    auc = roc_auc_score(test_labels, [council.probability(r) for r in test])

    assert auc > linear_auc(train, train_labels, test, test_labels) + 0.1
    assert auc > 0.8
    # The shape of x is a U: high at both ends, low in the middle (page_value 0, email).
    base = {"channel": "email", "page_value": 0.0, "noise": 0.0}
    u = [council.probability({**base, "x": x}) for x in (-1.9, -1.0, 0.0, 1.0, 1.9)]
    assert u[0] > u[1] > u[2] < u[3] < u[4]
    by_channel = {c: council.probability({**base, "x": 0.0, "channel": c}) for c in CHANNEL_EFFECT}
    assert sorted(by_channel, key=by_channel.__getitem__) == ["email", "direct", "social", "ads"]


def test_the_council_finds_the_segment_and_stays_exact(data, council):
    _, _, test, _ = data
    artifact = council.to_dict()

    assert artifact["format"] == 1
    assert artifact["segment"]["feature"] == "page_value"
    assert 0 < artifact["segment"]["edges"][0] < 1
    assert council.specialist_names == ("shape", "kind", "gate")
    assert council.feature_names == ("x", "noise", "channel", "page_value")
    for row in test[:50]:
        e = council.explain(row)
        assert e.log_odds == pytest.approx(
            e.base_log_odds + sum(s.log_odds for s in e.specialists), abs=1e-9
        )
        assert council.probability(row) == pytest.approx(e.probability, abs=1e-12)


def test_the_council_is_calibrated(data, council):
    _, _, test, test_labels = data

    result = evaluate([council.probability(r) for r in test], test_labels)

    bins = result["calibration"]
    assert sum(b["count"] for b in bins) == len(test)
    predicted = sum(b["mean_predicted"] * b["count"] for b in bins) / len(test)
    assert predicted == pytest.approx(np.mean(test_labels), abs=0.02)
    # Expected calibration error; the true probabilities score 0.013 on this sample.
    gaps = [abs(b["mean_predicted"] - b["observed_rate"]) * b["count"] for b in bins]
    assert sum(gaps) / len(test) < 0.04
    assert all(g / b["count"] < 0.1 for g, b in zip(gaps, bins, strict=True) if b["count"] >= 300)


def test_missing_and_unseen_values_are_served(council):
    known = council.probability({"x": 0.0, "channel": "email", "page_value": 0.0, "noise": 0.0})

    assert 0 < council.probability({}) < 1
    assert 0 < council.probability({"x": None, "channel": "carrier pigeon"}) < 1
    e = council.explain({"channel": "carrier pigeon", "x": 0.0, "page_value": 0.0, "noise": 0.0})
    assert e.probability != known
    channel = next(c for s in e.specialists for c in s.features if c.feature == "channel")
    assert channel.log_odds == pytest.approx(0.0, abs=1e-12)  # no rare category: neutral


def test_fitting_is_deterministic_given_the_seed(data, council):
    train, train_labels, _, _ = data

    again = fit_council(
        train, train_labels, specialists=SPECIALISTS, categorical={"channel"}, version="gen-1"
    )

    assert again.to_dict() == council.to_dict()


def test_sample_weight_is_respected():
    # A hidden group (not a feature) abandons more; weighting it 4x must raise the predictions
    # to the weighted rate, and zero weights must take rows out entirely.
    rng = np.random.default_rng(5)
    n = 3000
    hidden = rng.random(n) < 0.5
    labels = (rng.random(n) < np.where(hidden, 0.8, 0.3)).astype(int).tolist()
    rows: list[dict[str, FeatureValue]] = [{"v": float(v)} for v in rng.normal(size=n)]
    hp = Hyperparameters(segment=False)

    def mean_prediction(weights):
        c = fit_council(
            rows,
            labels,
            specialists={"only": ["v"]},
            sample_weight=weights,
            version="w",
            hyperparameters=hp,
        )
        return float(np.mean([c.probability(r) for r in rows]))

    weights = np.where(hidden, 4.0, 1.0)
    weighted_rate = float(np.average(labels, weights=weights))
    assert mean_prediction(None) == pytest.approx(np.mean(labels), abs=0.01)
    assert mean_prediction(weights.tolist()) == pytest.approx(weighted_rate, abs=0.01)
    assert mean_prediction(np.where(hidden, 1.0, 0.0).tolist()) == pytest.approx(
        np.mean(np.array(labels)[hidden]), abs=0.01
    )
    # The weights' scale does not matter.
    assert mean_prediction((weights / 24).tolist()) == pytest.approx(weighted_rate, abs=0.01)


def test_a_feature_may_serve_two_specialists_and_groups_keep_rows_together():
    rows, labels, _ = generated(1200, seed=3)
    groups = [i // 4 for i in range(len(rows))]

    c = fit_council(
        rows,
        labels,
        specialists={"a": ["x", "channel"], "b": ["x"]},
        categorical=["channel"],
        version="g",
        groups=groups,
        seed=7,
    )

    e = c.explain(rows[0])
    assert [(s.name, [f.feature for f in s.features]) for s in e.specialists] == [
        ("a", ["x", "channel"]),
        ("b", ["x"]),
    ]
    assert c.to_dict()["training"]["seed"] == 7


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"labels": [0, 1, 2, 1]}, "Labels must be 0"),
        ({"labels": [1, 1, 1, 1]}, "Both classes"),
        ({"labels": [0, 1, 0]}, "4 rows but 3 labels"),
        ({"sample_weight": [1, 1, -1, 1]}, "finite and non-negative"),
        ({"sample_weight": [1, 1]}, "4 labels but 2 sample weights"),
        ({"specialists": {}}, "At least one specialist"),
        ({"specialists": {"a": []}}, "'a' has no features"),
        ({"specialists": {"a": ["x", "x"]}}, "lists a feature twice"),
        ({"version": ""}, "version must be"),
        ({"specialists": {"a": ["channel"]}}, "'channel' is numeric but row 0 has str"),
        ({}, r"At least 2 examples of each class"),
    ],
)
def test_bad_inputs_are_refused(kwargs, message):
    arguments = {
        "rows": [{"x": 1.0, "channel": "a"}, {"x": 2.0}, {"x": 3.0}, {"x": None}],
        "labels": [0, 1, 1, 1],
        "specialists": {"a": ["x"]},
        "version": "v",
        **kwargs,
    }

    with pytest.raises(ValueError, match=message):
        fit_council(**arguments)


def test_evaluate_matches_scikit_learn_on_a_hand_example():
    p = [0.1, 0.4, 0.35, 0.8, 0.65]
    y = [0, 0, 1, 1, 0]
    w = [1.0, 2.0, 1.0, 1.0, 0.5]

    result = evaluate(p, y, bins=2)
    weighted = evaluate(p, y, sample_weight=w, bins=2)

    assert result["n"] == 5
    assert result["positives"] == 2
    assert result["roc_auc"] == pytest.approx(4 / 6)  # 4 of the 6 (pos, neg) pairs in order
    assert result["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert result["pr_auc"] == pytest.approx(average_precision_score(y, p))
    assert result["pr_auc"] == pytest.approx((1 / 1 + 2 / 4) / 2)
    assert result["brier"] == pytest.approx((0.01 + 0.16 + 0.4225 + 0.04 + 0.4225) / 5)
    assert result["brier"] == pytest.approx(brier_score_loss(y, p))
    assert result["calibration"] == [
        {
            "bin_lo": 0.0,
            "bin_hi": 0.5,
            "count": 3,
            "mean_predicted": pytest.approx(0.85 / 3),
            "observed_rate": pytest.approx(1 / 3),
        },
        {
            "bin_lo": 0.5,
            "bin_hi": 1.0,
            "count": 2,
            "mean_predicted": pytest.approx(0.725),
            "observed_rate": pytest.approx(0.5),
        },
    ]
    assert weighted["roc_auc"] == pytest.approx(roc_auc_score(y, p, sample_weight=w))
    assert weighted["pr_auc"] == pytest.approx(average_precision_score(y, p, sample_weight=w))
    assert weighted["brier"] == pytest.approx(brier_score_loss(y, p, sample_weight=w))
    assert weighted["calibration"][0]["mean_predicted"] == pytest.approx((0.1 + 0.8 + 0.35) / 4)
    assert json.loads(json.dumps(weighted, allow_nan=False)) == weighted


def test_evaluate_with_one_class_has_no_auc():
    result = evaluate([0.2, 0.7], [1, 1])

    assert result["roc_auc"] is None
    assert result["pr_auc"] is None
    assert result["brier"] == pytest.approx((0.64 + 0.09) / 2)


def test_the_benchmark_runs_on_the_sample():
    completed = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "scoring_quality.py"),
            "--quick",
            "--train",
            str(SAMPLE),
            "--test",
            str(SAMPLE),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )

    assert completed.returncode == 0, completed.stderr
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    assert summary["mode"] == "train/test"
    assert set(summary["models"]) == {"council", "logistic", "hgb"}
    for figures in summary["models"].values():
        assert set(figures) == {"roc_auc", "pr_auc", "brier"}
        assert 0.5 < figures["roc_auc"]["mean"] <= 1
        assert 0.5 < figures["pr_auc"]["mean"] <= 1
    assert set(summary["latency_us"]) >= {"council_probability", "council_score", "hgb", "logistic"}
    assert all(
        v["calls"] >= 2000 for k, v in summary["latency_us"].items() if k != "council_explain"
    )
    assert "hgb_p99_over_council_probability_p99" in summary["ratios"]
    assert set(summary["targets"]) == {
        "council_roc_auc_ge_hgb",
        "council_p99_le_50us",
        "hgb_p99_over_council_p99_ge_50",
    }
    assert all(isinstance(v, bool) for v in summary["targets"].values())
    assert math.isfinite(summary["latency_us"]["council_probability"]["p99"])
