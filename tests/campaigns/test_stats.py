"""campaigns.stats: interval estimates checked against published worked examples, no database."""

import pytest

from campaigns import stats


def test_z_for_95_percent_is_the_usual_quantile():
    assert stats.z_for(0.95) == pytest.approx(1.959964, abs=1e-6)


@pytest.mark.parametrize("confidence", [0.0, 1.0, -0.5, 1.5])
def test_z_for_refuses_a_confidence_outside_0_1(confidence):
    with pytest.raises(ValueError):
        stats.z_for(confidence)


# Newcombe, "Two-sided confidence intervals for the single proportion: comparison of seven
# methods", Statistics in Medicine 17 (1998), table I, method 3 (score, no continuity correction).
@pytest.mark.parametrize(
    ("x", "n", "low", "high"),
    [
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_matches_newcombes_table(x, n, low, high):
    interval = stats.wilson(x, n)

    assert round(interval.low, 4) == low
    assert round(interval.high, 4) == high


def test_wilson_stays_within_0_and_1_at_the_ends():
    assert stats.wilson(0, 5).low == 0.0
    assert stats.wilson(5, 5).high == 1.0


@pytest.mark.parametrize(("x", "n"), [(0, 0), (3, 2), (-1, 4)])
def test_wilson_refuses_impossible_counts(x, n):
    with pytest.raises(ValueError):
        stats.wilson(x, n)


# Newcombe, "Interval estimation for the difference between independent proportions: comparison
# of eleven methods", Statistics in Medicine 17 (1998), table II, method 10 (hybrid score).
@pytest.mark.parametrize(
    ("x1", "n1", "x2", "n2", "estimate", "low", "high"),
    [
        (56, 70, 48, 80, 0.2000, 0.0524, 0.3339),
        (9, 10, 3, 10, 0.6000, 0.1705, 0.8090),
        (6, 7, 2, 7, 0.5714, 0.0582, 0.8062),
        (5, 56, 0, 29, 0.0893, -0.0381, 0.1926),
        (0, 10, 0, 20, 0.0000, -0.1611, 0.2775),
        (0, 10, 0, 10, 0.0000, -0.2775, 0.2775),
        (10, 10, 0, 20, 1.0000, 0.6791, 1.0000),
        (10, 10, 0, 10, 1.0000, 0.6075, 1.0000),
    ],
)
def test_newcombe_matches_the_papers_worked_examples(x1, n1, x2, n2, estimate, low, high):
    d = stats.newcombe(x1, n1, x2, n2)

    assert round(d.estimate, 4) == estimate
    assert round(d.low, 4) == low
    assert round(d.high, 4) == high


def test_newcombe_is_antisymmetric_in_its_groups():
    forward = stats.newcombe(56, 70, 48, 80)
    backward = stats.newcombe(48, 80, 56, 70)

    assert backward.estimate == pytest.approx(-forward.estimate, abs=1e-12)
    assert backward.low == pytest.approx(-forward.high, abs=1e-12)
    assert backward.high == pytest.approx(-forward.low, abs=1e-12)


def test_sample_of_nothing_one_and_several_values():
    assert stats.sample([]) == stats.Sample(n=0, mean=None, variance=None)
    assert stats.sample([7]) == stats.Sample(n=1, mean=7.0, variance=None)
    assert stats.sample([0, 0, 6]) == stats.Sample(n=3, mean=2.0, variance=12.0)


def test_mean_difference_uses_welchs_standard_error():
    # means 2 and 1, variances 12 and 2: se = sqrt(12/3 + 2/2) = sqrt(5)
    d = stats.mean_difference(stats.sample([0, 0, 6]), stats.sample([0, 2]))

    assert d is not None
    assert d.estimate == 1.0
    assert round(d.low, 4) == -3.3826
    assert round(d.high, 4) == 5.3826


def test_mean_difference_of_two_constant_groups_has_no_width():
    d = stats.mean_difference(stats.sample([5, 5]), stats.sample([2, 2, 2]))

    assert d == stats.Difference(estimate=3.0, low=3.0, high=3.0)


@pytest.mark.parametrize(("first", "second"), [([], [1, 2]), ([1], [1, 2]), ([1, 2], [3])])
def test_mean_difference_needs_two_values_in_each_group(first, second):
    assert stats.mean_difference(stats.sample(first), stats.sample(second)) is None
