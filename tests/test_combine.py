"""Several experts in one protected subspace: the union contains every expert's subspace, is
orthonormal and no larger than their sum; the weighted rule keeps one probe's budget; `palora probe
--extra-runs` unites the experts of other run directories and records them in the file."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from invariants import stage_digest as digest
from palora.cli import main
from palora.config import load, resolve
from palora.core.combine import orthonormal_span, shares, union_of_components, unite
from palora.core.linalg import orthonormality_error, thin_svd
from palora.core.probe import SelectionRule
from palora.core.subspace import Subspace
from palora.errors import ConfigError
from test_cli import data, write_jsonl  # noqa: F401  (the module-scoped data fixture)
from tiny import save_tiny_checkpoint

TINY = 1e-5


def residual(Q: torch.Tensor, X: torch.Tensor) -> float:
    """``‖(I − QQᵀ) X‖ / ‖X‖``: 0 when ``span(X) ⊆ span(Q)``."""
    if X.shape[1] == 0:
        return 0.0
    return float(torch.linalg.matrix_norm(X - Q @ (Q.T @ X)) / torch.linalg.matrix_norm(X))


def random_orthonormal(d: int, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(d, k, generator=g))[0]


# ----------------------------------------------------------------------------- the math


@pytest.mark.parametrize("shared", [0, 3, 5])
def test_union_of_spans_contains_each_block_and_drops_shared_directions(shared):
    d = 40
    common = random_orthonormal(d, 5, 0)[:, :shared]
    Q1 = torch.linalg.qr(torch.cat([common, random_orthonormal(d, 6, 1)], 1))[0]  # (d, shared + 6)
    Q2 = torch.linalg.qr(torch.cat([common, random_orthonormal(d, 4, 2)], 1))[0]  # (d, shared + 4)
    Q = orthonormal_span([Q1, Q2])
    assert orthonormality_error(Q) < TINY
    assert residual(Q, Q1) < TINY and residual(Q, Q2) < TINY
    assert Q.shape[1] == Q1.shape[1] + Q2.shape[1] - shared <= Q1.shape[1] + Q2.shape[1]
    assert orthonormal_span([Q1, Q1]).shape[1] == Q1.shape[1]  # a block twice is one block
    assert orthonormal_span([torch.zeros(d, 0), torch.zeros(d, 0)]).shape == (d, 0)


def test_union_of_components_is_the_union_of_index_sets():
    W = torch.randn(12, 9, generator=torch.Generator().manual_seed(3))
    svd = thin_svd(W)
    a = Subspace.from_svd(svd, torch.tensor([0, 2, 5]), torch.tensor([1.0, 0.2, 0.5]))
    b = Subspace.from_svd(svd, torch.tensor([2, 3, 8]), torch.tensor([0.9, 1.0, 0.1]))
    u = union_of_components([a, b])
    assert u.indices.tolist() == [0, 2, 3, 5, 8]
    torch.testing.assert_close(u.U, svd.U[:, u.indices], rtol=0, atol=0)
    torch.testing.assert_close(u.V, svd.V[:, u.indices], rtol=0, atol=0)
    assert u.weights.tolist() == pytest.approx([1.0, 0.9, 1.0, 0.5, 0.1])  # the largest weight of each index
    for part in (a, b):
        assert residual(u.U, part.U) < TINY and residual(u.V, part.V) < TINY
    assert union_of_components([a, Subspace.from_svd(svd, torch.tensor([1]))]).weights is None
    # the span union of the same parts is the same subspace (its basis differs)
    spans = unite([{"w": a}, {"w": b}], "activation")["w"]
    assert spans.V.shape[1] == 5 and residual(spans.V, u.V) < TINY and residual(u.V, spans.V) < TINY


def test_split_budget_scales_each_rule():
    assert shares(None, 4) == [0.25] * 4 and shares([1, 3], 2) == [0.25, 0.75]
    with pytest.raises(ValueError):
        shares([1.0], 2)
    assert SelectionRule("fraction", fraction=0.5).scaled(0.5).fraction == 0.25
    assert SelectionRule("global", fraction=0.4).scaled(0.25).fraction == pytest.approx(0.1)
    assert SelectionRule("topk", k=10).scaled(0.25).k == 2
    assert SelectionRule("energy", energy=0.8).scaled(0.5).energy == pytest.approx(0.4)
    with pytest.raises(ValueError, match="threshold"):
        SelectionRule("threshold").scaled(0.5)


# ----------------------------------------------------------------------------- palora probe --extra-runs

FAST = ["--set", "svf.train.steps=3", "--set", "svf.train.batch_size=4", "--quiet"]
#: the method that reads each probe basis, and the basis's subspace file, statistics and stage
METHOD = {"singular": "palora", "activation": "act-protect"}
SUBSPACE = {"singular": "subspace.safetensors", "activation": "subspace-activation.safetensors"}
STATS = {"singular": "probe_stats.json", "activation": "probe_stats-activation.json"}
STAGE = {"singular": "probe", "activation": "probe:activation"}


def groups(path: Path) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, str]]:
    with safe_open(str(path), framework="pt") as f:
        out: dict[str, dict[str, torch.Tensor]] = {}
        for k in f.keys():  # noqa: SIM118
            name, _, field = k.rpartition(".")
            out.setdefault(name, {})[field] = f.get_tensor(k)
        return out, f.metadata()


@pytest.fixture(scope="module")
def two_experts(tmp_path_factory, data):  # noqa: F811
    """Two SVF experts of one tiny base: addition (run A) and subtraction (run B), each probed alone."""
    root = tmp_path_factory.mktemp("experts")
    model = save_tiny_checkpoint(root / "base", "llama", seed=0)
    minus = write_jsonl(root / "minus.jsonl", [
        {"prompt": f"Question: what is {a} - {b}? Answer:", "completion": f" {a - b}"} for a in range(5, 11)
        for b in range(1, 4)])
    runs = {}
    for name, skill in (("a", data["skill_train"]), ("b", minus)):
        out = root / name
        assert main(["svf", "--model", str(model), "--skill-train", skill, "--out", str(out), "--seed", "0",
                     *FAST]) == 0
        runs[name] = out
    return runs


def own_probe(run: Path, tmp: Path, basis: str, *settings: str) -> dict[str, dict[str, torch.Tensor]]:
    """The run's expert probed alone (in a copy of the run, so the fixture stays untouched)."""
    copy = tmp / f"{run.name}-alone"
    shutil.copytree(run, copy)
    assert main(["probe", "--out", str(copy), *settings, "--quiet"]) == 0
    return groups(copy / SUBSPACE[basis])[0]


@pytest.mark.parametrize("basis", ["singular", "activation"])
def test_probe_unites_the_experts_of_other_runs(two_experts, tmp_path, basis):
    settings = ["--methods", METHOD[basis], "--set", "probe.fraction=0.25", "--set", "probe.stat_batches=2"]
    alone = {name: own_probe(run, tmp_path, basis, *settings) for name, run in two_experts.items()}
    out = tmp_path / "united"
    shutil.copytree(two_experts["a"], out)
    assert main(["probe", "--out", str(out), "--extra-runs", str(two_experts["b"]), *settings, "--quiet"]) == 0
    united, meta = groups(out / SUBSPACE[basis])
    experts = json.loads(meta["experts"])
    assert [e["run"] for e in experts] == [str(out), str(two_experts["b"])] and meta["combine"] == "union"
    assert experts[1]["skill_train"].endswith("minus.jsonl")
    assert set(united) == set(alone["a"])
    grown = False
    for name, g in united.items():
        U, V = g["U"], g["V"]
        assert orthonormality_error(V) < TINY and (U.shape[1] == 0 or orthonormality_error(U) < TINY)
        for part in alone.values():  # each expert's own subspace lies in the union
            assert residual(V, part[name]["V"]) < TINY and residual(U, part[name]["U"]) < TINY
        assert V.shape[1] <= alone["a"][name]["V"].shape[1] + alone["b"][name]["V"].shape[1]
        grown |= V.shape[1] > alone["a"][name]["V"].shape[1]
        if basis == "singular":
            expected = set(alone["a"][name]["indices"].tolist()) | set(alone["b"][name]["indices"].tolist())
            assert g["indices"].tolist() == sorted(expected)
    assert grown  # the second skill protects something the first does not
    stats = json.loads((out / STATS[basis]).read_text())
    assert len(stats["experts"]) == 2 and stats["selected"] == sum(g["V"].shape[1] for g in united.values())
    stage = json.loads((out / "stages.json").read_text())[STAGE[basis]]
    assert stage["experts"] == 2 and stage["combine"] == "union"


def test_weighted_keeps_one_probe_budget(two_experts, tmp_path):
    fraction = 0.5
    settings = ["--methods", "palora", "--set", f"probe.fraction={fraction}", "--set", "probe.combine=weighted",
                "--set", "probe.combine_weights=[1,1]"]
    out = tmp_path / "weighted"
    shutil.copytree(two_experts["a"], out)
    assert main(["probe", "--out", str(out), "--extra-runs", str(two_experts["b"]), *settings, "--quiet"]) == 0
    united, meta = groups(out / "subspace.safetensors")
    assert [e["rule"] for e in json.loads(meta["experts"])] == ["fraction=0.25", "fraction=0.25"]
    for g in united.values():
        r = g["V"].shape[0] if g["V"].shape[0] < g["U"].shape[0] else g["U"].shape[0]
        assert g["indices"].numel() <= 2 * math.ceil(0.25 * r) <= math.ceil(fraction * r) + 1


def test_extra_runs_enter_the_probe_digest_only_when_set(two_experts, tmp_path, capsys):
    base = resolve(None, [])
    assert digest(resolve(None, ["probe.combine=weighted"]), "probe") == digest(base, "probe")  # no extras: no effect
    with_b = resolve(None, [f"probe.extra_runs={two_experts['b']}"])
    assert digest(with_b, "probe") != digest(base, "probe")
    # a missing run directory is refused in one line
    out = tmp_path / "missing"
    shutil.copytree(two_experts["a"], out)
    assert main(["probe", "--out", str(out), "--extra-runs", str(tmp_path / "nope"), "--quiet"]) == 2
    assert "nope" in capsys.readouterr().err


@pytest.mark.parametrize("basis", ["singular", "activation"])
def test_one_expert_probed_on_several_skills_unites_its_selections(two_experts, tmp_path, basis):
    """``--probe-data plus,minus``: run A's expert probed on each skill's data, the selections
    united; one file alone is the plain probe of that data; each skill's own selection lies in
    the union."""
    settings = ["--methods", METHOD[basis], "--set", "probe.score=activation", "--set", "probe.fraction=0.25",
                "--set", "probe.stat_batches=2"]
    plus = load(two_experts["a"] / "config.yaml").data.skill_train
    minus = load(two_experts["b"] / "config.yaml").data.skill_train
    plain = own_probe(two_experts["a"], tmp_path, basis, *settings)
    alone = {}
    for name, path in (("plus", plus), ("minus", minus)):
        run = tmp_path / name
        shutil.copytree(two_experts["a"], run)
        assert main(["probe", "--out", str(run), "--probe-data", path, *settings, "--quiet"]) == 0
        alone[name] = groups(run / SUBSPACE[basis])[0]
    out = tmp_path / "both"
    shutil.copytree(two_experts["a"], out)
    assert main(["probe", "--out", str(out), "--probe-data", f"{plus},{minus}", *settings, "--quiet"]) == 0
    united, meta = groups(out / SUBSPACE[basis])
    assert [e["skill_train"] for e in json.loads(meta["experts"])] == [plus, minus]
    grown = False
    for name, g in united.items():
        torch.testing.assert_close(alone["plus"][name]["V"], plain[name]["V"])  # the run's own data: the plain probe
        for part in alone.values():
            assert residual(g["V"], part[name]["V"]) < TINY and residual(g["U"], part[name]["U"]) < TINY
        grown |= g["V"].shape[1] > alone["plus"][name]["V"].shape[1]
    assert grown  # the second skill's data picks directions the first's does not


def test_skill_data_enters_the_probe_digest_only_when_set(two_experts):
    base = resolve(None, [])
    assert digest(resolve(None, ["probe.skill_data=[]"]), "probe") == digest(base, "probe")
    minus = load(two_experts["b"] / "config.yaml").data.skill_train
    assert digest(resolve(None, [f"probe.skill_data=[{minus}]"]), "probe") != digest(base, "probe")
    with pytest.raises(ConfigError, match="combine_weights"):  # one weight per selection
        resolve(None, [f"probe.skill_data=[{minus},x.jsonl]", "probe.combine_weights=[1,1,1]",
                       "probe.combine=weighted"])
    resolve(None, [f"probe.skill_data=[{minus},x.jsonl]", "probe.combine_weights=[1,1]", "probe.combine=weighted"])


# ----------------------------------------------------------------------------- what else the model keeps


def test_keep_data_joins_the_activation_probe_within_its_budget(two_experts, tmp_path):
    """``--keep-data``: the activation probe also picks the kept text's top input directions, with
    ``keep_share`` of the budget (equal parts) and the skill the rest; the skill's own directions
    at its share lie in the union; the singular probe ignores the kept data, file and digest."""
    general = write_jsonl(tmp_path / "general.jsonl", [{"text": f"The history of place {i} is long and old."}
                                                         for i in range(12)])
    known = write_jsonl(tmp_path / "known.jsonl", [{"prompt": f"The capital of land {i} is", "completion": " Quell"}
                                                    for i in range(12)])
    settings = ["--set", "probe.fraction=0.5", "--set", "probe.stat_batches=2", "--set", "probe.keep_share=0.5"]
    skill_alone = own_probe(two_experts["a"], tmp_path, "activation", "--methods", "act-protect", *settings[2:4],
                            "--set", "probe.fraction=0.25")  # (combine stays union: kept data share one budget anyway)
    out = tmp_path / "kept"
    shutil.copytree(two_experts["a"], out)
    assert main(["probe", "--out", str(out), "--methods", "act-protect,palora", "--keep-data", f"{general},{known}",
                 *settings, "--quiet"]) == 0
    united, meta = groups(out / SUBSPACE["activation"])
    experts = json.loads(meta["experts"])
    assert [e["skill_train"] for e in experts][1:] == [general, known]
    assert [e["rule"] for e in experts] == ["fraction=0.25", "fraction=0.125", "fraction=0.125"]
    for name, g in united.items():
        assert orthonormality_error(g["V"]) < TINY
        assert residual(g["V"], skill_alone[name]["V"]) < TINY
        assert g["V"].shape[1] <= math.ceil(0.5 * g["V"].shape[0]) + 2  # one probe's budget (rounding per part)
    (tmp_path / "singular").mkdir()
    plain = own_probe(two_experts["a"], tmp_path / "singular", "singular", "--methods", "palora",
                      "--set", "probe.fraction=0.5")
    singular, meta = groups(out / SUBSPACE["singular"])
    assert "experts" not in meta or meta["experts"] in ("", "null")
    for name, g in singular.items():
        assert g["indices"].tolist() == plain[name]["indices"].tolist()
    base = resolve(None, [])
    kept = resolve(None, [f"probe.keep_data=[{general}]"])
    assert digest(kept, "probe") == digest(base, "probe")  # the singular probe's
    assert digest(kept, "probe:activation") != digest(base, "probe:activation")
    assert digest(resolve(None, ["probe.keep_data=[]", "probe.keep_share=0.3"]), "probe:activation") == \
        digest(base, "probe:activation")
    with pytest.raises(ConfigError, match="keep_share"):
        resolve(None, ["probe.keep_share=1"])
    with pytest.raises(ConfigError, match="threshold"):
        resolve(None, [f"probe.keep_data=[{general}]", "probe.rule=threshold"])
