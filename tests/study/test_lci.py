import numpy as np
import pytest

from ecg_transfer.study.lci import bounded_learning_curve_index, learning_curve_index


def test_hand_computed_five_point_curve():
    # d = [+0.2, -0.1, +0.2, -0.05]: mean(pos) = 0.2, |mean(neg)| = 0.075, best = 0.8
    curve = [0.5, 0.7, 0.6, 0.8, 0.75]
    expected = 0.8 * 0.2 / (0.075 + 1e-8)
    assert learning_curve_index(curve) == pytest.approx(expected, rel=1e-12)
    assert learning_curve_index(curve) == pytest.approx(2.1333333, rel=1e-6)


def test_steady_curve_beats_jagged_curve_with_same_best():
    steady = [0.5, 0.6, 0.7, 0.69, 0.8]
    jagged = [0.5, 0.8, 0.5, 0.8, 0.5]
    assert max(steady) == max(jagged)
    assert learning_curve_index(steady) > learning_curve_index(jagged)
    assert bounded_learning_curve_index(steady) > bounded_learning_curve_index(jagged)
    # jagged: equal mean rise and drop, so LCI is best F1 (up to eps)
    assert learning_curve_index(jagged) == pytest.approx(0.8, rel=1e-6)


def test_no_negative_change_stays_finite_and_huge():
    curve = [0.5, 0.6, 0.7, 0.8]
    value = learning_curve_index(curve)
    assert np.isfinite(value)
    assert value == pytest.approx(0.8 * 0.1 / 1e-8, rel=1e-9)
    assert bounded_learning_curve_index(curve) == pytest.approx(0.8)


def test_no_positive_change_scores_zero():
    assert learning_curve_index([0.8, 0.7, 0.6]) == 0.0
    assert bounded_learning_curve_index([0.8, 0.7, 0.6]) == 0.0
    assert learning_curve_index([0.8, 0.8, 0.8]) == 0.0
    assert bounded_learning_curve_index([0.8, 0.8, 0.8]) == 0.0


def test_zero_changes_count_in_neither_mean():
    # d = [+0.2, 0, -0.1, 0]: the zeros would halve both means if counted
    assert learning_curve_index([0.5, 0.7, 0.7, 0.6, 0.6]) == pytest.approx(0.7 * 0.2 / (0.1 + 1e-8))


def test_bounded_variant_hand_value():
    # mean(pos) = 0.2, |mean(neg)| = 0.075 -> 0.8 * 0.2 / 0.275
    assert bounded_learning_curve_index([0.5, 0.7, 0.6, 0.8, 0.75]) == pytest.approx(0.8 * 0.2 / 0.275)


@pytest.mark.parametrize("bad", [[0.5], [], [0.5, float("nan"), 0.6], [[0.5, 0.6], [0.7, 0.8]]])
def test_bad_curves_raise(bad):
    with pytest.raises(ValueError):
        learning_curve_index(bad)
    with pytest.raises(ValueError):
        bounded_learning_curve_index(bad)


def test_eps_must_be_positive():
    with pytest.raises(ValueError, match="eps"):
        learning_curve_index([0.5, 0.6], eps=0.0)


def test_curve_never_drops_marks_the_runs_whose_lci_explodes():
    from ecg_transfer.study.lci import curve_never_drops

    assert curve_never_drops([0.5, 0.6, 0.6, 0.8])  # plateaus are not drops
    assert learning_curve_index([0.5, 0.6, 0.6, 0.8]) > 1e6
    assert not curve_never_drops([0.5, 0.7, 0.69, 0.8])


def test_bounded_variant_orders_like_the_lci_only_at_equal_best_f1():
    # same best F1: both indices order the curves alike
    a, b = [0.5, 0.9, 0.8, 0.9], [0.5, 0.9, 0.6, 0.9]
    assert (learning_curve_index(a) > learning_curve_index(b)) == (
        bounded_learning_curve_index(a) > bounded_learning_curve_index(b)
    )
    # different best F1: best 0.9 with r = 1 against best 0.6 with r = 2 (docs/statistics.md)
    high = [0.7, 0.9, 0.7]  # rise 0.2, drop 0.2: LCI 0.9, bounded 0.45
    low = [0.2, 0.6, 0.4]  # rise 0.4, drop 0.2: LCI 1.2, bounded 0.4
    assert learning_curve_index(low) > learning_curve_index(high)
    assert bounded_learning_curve_index(low) < bounded_learning_curve_index(high)
    assert bounded_learning_curve_index(high) == pytest.approx(0.45)
    assert bounded_learning_curve_index(low) == pytest.approx(0.4)
