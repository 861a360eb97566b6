"""The probe on hand-made numbers: scores, every selection rule, spectrum statistics, soft weights."""

from __future__ import annotations

import math

import pytest
import torch

from palora.core.probe import SelectionRule, component_scores, select, soft_weights, spectrum_stats


def t(*xs: float) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float32)


def idx(*xs: int) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.long)


def assert_indices(got: torch.Tensor, *expected: int) -> None:
    assert got.dtype == torch.int64
    assert got.tolist() == list(expected)


# ----------------------------------------------------------------------------- scores


def test_scores_delta_and_sigma_delta():
    s = t(1.0, 1.5, 0.25, 1.0, -1.0)
    sigma = t(4.0, 3.0, 2.0, 1.0, 0.5)
    torch.testing.assert_close(component_scores(s, sigma, "delta"), t(0.0, 0.5, 0.75, 0.0, 2.0))
    torch.testing.assert_close(component_scores(s, sigma, "sigma_delta"), t(0.0, 1.5, 1.5, 0.0, 1.0))
    assert component_scores(s.double(), sigma, "delta").dtype == torch.float32
    with pytest.raises(ValueError, match="fisher"):
        component_scores(s, sigma, "fisher")


def test_signed_scores_split_delta_by_direction():
    s = t(1.0, 1.5, 0.25, 1.0, -1.0)
    sigma = t(4.0, 3.0, 2.0, 1.0, 0.5)
    up, down = component_scores(s, sigma, "amplified"), component_scores(s, sigma, "damped")
    torch.testing.assert_close(up, t(0.0, 0.5, 0.0, 0.0, 0.0))
    torch.testing.assert_close(down, t(0.0, 0.0, 0.75, 0.0, 2.0))
    # the two directions partition |s - 1|: every moved component scores on exactly one side
    torch.testing.assert_close(up + down, component_scores(s, sigma, "delta"))
    assert bool(((up > 0) & (down > 0)).sum() == 0)
    # the strengthened components are picked first, then spectral order among the untouched
    assert_indices(select({"w": up}, SelectionRule("topk", k=2))["w"], 0, 1)


# ----------------------------------------------------------------------------- selection rules

SCORES = t(0.1, 0.9, 0.0, 0.5, 0.7, 0.3, 0.2, 0.8, 0.05, 0.6)  # r = 10; order: 1 7 4 9 3 5 6 0 8 2


def test_topk():
    assert_indices(select({"w": SCORES}, SelectionRule("topk", k=3))["w"], 1, 4, 7)
    assert_indices(select({"w": SCORES}, SelectionRule("topk", k=0))["w"])
    assert_indices(select({"w": SCORES}, SelectionRule("topk", k=99))["w"], *range(10))


def test_topk_ties_keep_spectral_order():
    assert_indices(select({"w": t(1, 2, 2, 2, 1)}, SelectionRule("topk", k=2))["w"], 1, 2)


@pytest.mark.parametrize(
    "fraction, expected",
    [(0.0, []), (0.25, [1, 4, 7]), (0.3, [1, 4, 7]), (0.31, [1, 4, 7, 9]), (1.0, list(range(10)))],
)
def test_fraction(fraction, expected):
    got = select({"w": SCORES, "v": t(3, 1, 2)}, SelectionRule("fraction", fraction=fraction))
    assert_indices(got["w"], *expected)
    assert got["v"].numel() == math.ceil(fraction * 3)


def test_global_compares_across_matrices_of_different_sizes():
    scores = {"small": t(1.0, 2.0), "big": t(0.5, 3.0, 0.1, 2.5, 0.2, 0.05)}  # 8 components in all
    got = select(scores, SelectionRule("global", fraction=0.5))  # 4 best: 3.0, 2.5, 2.0, 1.0
    assert_indices(got["small"], 0, 1)
    assert_indices(got["big"], 1, 3)
    got = select(scores, SelectionRule("global", fraction=0.25))  # 3.0, 2.5: none in "small"
    assert_indices(got["small"])
    assert_indices(got["big"], 1, 3)
    got = select(scores, SelectionRule("global", fraction=0.0))
    assert all(v.numel() == 0 and v.dtype == torch.int64 for v in got.values())
    got = select(scores, SelectionRule("global", fraction=1.0))
    assert_indices(got["small"], 0, 1)
    assert_indices(got["big"], *range(6))


def test_threshold_is_strict():
    assert_indices(select({"w": SCORES}, SelectionRule("threshold", threshold=0.5))["w"], 1, 4, 7, 9)
    assert_indices(select({"w": SCORES}, SelectionRule("threshold", threshold=0.9))["w"])
    assert_indices(select({"w": SCORES}, SelectionRule("threshold", threshold=-1))["w"], *range(10))


@pytest.mark.parametrize(
    "scores, energy, expected",
    [
        (t(1, 2, 3, 4), 0.4, [3]),  # 4 >= 4
        (t(1, 2, 3, 4), 0.41, [2, 3]),
        (t(1, 2, 3, 4), 0.7, [2, 3]),  # 4 + 3 = 7 >= 7 exactly
        (t(1, 2, 3, 4), 0.71, [1, 2, 3]),
        (t(1, 2, 3, 4), 1.0, [0, 1, 2, 3]),
        (t(0.3, 0.3, 0.4), 1.0, [0, 1, 2]),  # float round-off must not lose the last one
        (t(1, 0, 0, 0), 1.0, [0]),  # components with no score are not needed
        (t(1, 2, 3, 4), 0.0, []),
        (t(0, 0, 0), 0.5, []),  # nothing moved: nothing to protect
        (t(5), 0.5, [0]),
    ],
)
def test_energy(scores, energy, expected):
    assert_indices(select({"w": scores}, SelectionRule("energy", energy=energy))["w"], *expected)


def test_unknown_rule():
    with pytest.raises(ValueError, match="nope"):
        select({"w": SCORES}, SelectionRule("nope"))


def test_describe():
    assert SelectionRule("fraction", fraction=0.3).describe() == "fraction=0.3"
    assert SelectionRule("global", fraction=0.1).describe() == "global=0.1"
    assert SelectionRule("topk", k=8).describe() == "topk=8"
    assert SelectionRule("threshold", threshold=0.2).describe() == "threshold=0.2"
    assert SelectionRule("energy", energy=0.9).describe() == "energy=0.9"


# ----------------------------------------------------------------------------- statistics


def test_spectrum_stats():
    indices = {"a": idx(0, 3), "b": idx(), "c": idx(0, 1, 2, 5)}
    ranks = {"a": 4, "b": 6, "c": 8}
    st = spectrum_stats(indices, ranks, bins=4)
    assert st["selected"] == 6 and st["total"] == 18
    assert st["fraction"] == pytest.approx(6 / 18)
    # positions: a 0, .75; c 0, .125, .25, .625 -> bins [0,.25) [.25,.5) [.5,.75) [.75,1]
    assert st["position_histogram"] == [3, 1, 1, 1]
    # a: k=2, in the top-2 block only index 0; c: k=4, top-4 block holds 0, 1, 2
    assert st["per_matrix"]["a"] == {"k": 2, "rank": 4, "mean_position": pytest.approx(0.375), "in_top_block": 0.5}
    assert st["per_matrix"]["b"] == {"k": 0, "rank": 6, "mean_position": None, "in_top_block": None}
    assert st["per_matrix"]["c"]["in_top_block"] == pytest.approx(0.75)
    assert st["per_matrix"]["c"]["mean_position"] == pytest.approx((0 + 1 + 2 + 5) / 4 / 8)
    assert st["in_top_block"] == pytest.approx(4 / 6)


def test_spectrum_stats_nothing_selected():
    st = spectrum_stats({"a": idx()}, {"a": 5})
    assert st["selected"] == 0 and st["fraction"] == 0.0 and st["in_top_block"] is None
    assert st["position_histogram"] == [0] * 10


def test_top_block_selection_is_all_in_top_block():
    st = spectrum_stats({"a": idx(0, 1, 2)}, {"a": 12})
    assert st["in_top_block"] == 1.0


# ----------------------------------------------------------------------------- soft weights


def test_soft_weights():
    w = soft_weights(SCORES, idx(1, 3, 8))
    torch.testing.assert_close(w, t(1.0, 0.5 / 0.9, 0.05 / 0.9))
    assert ((w >= 0) & (w <= 1)).all()
    torch.testing.assert_close(soft_weights(t(0, 0, 0), idx(0, 2)), t(1, 1))
    assert soft_weights(SCORES, idx()).numel() == 0
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        a = torch.rand(50, generator=g) * 3
        w = soft_weights(a, torch.arange(0, 50, 2))
        assert ((w >= 0) & (w <= 1)).all() and float(w.max()) == 1.0
