"""The activation basis: top eigenvectors of the skill's input covariance, input side."""

from __future__ import annotations

import torch

from palora.core.covariance import activation_subspaces
from palora.core.probe import SelectionRule


def test_selects_the_top_eigenvectors_and_reports_their_energy():
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g))
    lam = torch.tensor([10.0, 5.0, 1.0, 0.5, 0.1, 0.0])
    C = Q @ torch.diag(lam) @ Q.T
    subs, stats = activation_subspaces({"w": C}, {"w": 4}, SelectionRule("fraction", fraction=0.5))
    s = subs["w"]
    assert s.indices.tolist() == [0, 1, 2] and s.U.shape == (4, 0) and s.V.shape == (6, 3)
    # span(V_S) is the span of the three leading eigenvectors (up to sign)
    P = s.V @ s.V.T
    torch.testing.assert_close(P, Q[:, :3] @ Q[:, :3].T, atol=1e-5, rtol=0)
    assert abs(stats["energy_share"]["w"] - 16 / 16.6) < 1e-5
    torch.testing.assert_close(s.weights, torch.tensor([1.0, 0.5, 0.1]))


def test_energy_rule_on_eigenvalues():
    C = torch.diag(torch.tensor([8.0, 1.0, 1.0]))
    subs, _ = activation_subspaces({"w": C}, {"w": 2}, SelectionRule("energy", energy=0.8))
    assert subs["w"].k == 1
