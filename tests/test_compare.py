"""`palora compare` end to end on a tiny Llama: every method, the learning-rate choice on
validation only, seeds, the budget sweep, resuming, and the table's statistics."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from palora.cli import main
from palora.compare.plan import grid_of, plan
from palora.compare.table import (
    CPU_PEAK,
    budget_curves,
    budget_markdown,
    choose_lr,
    grid_lines,
    grid_markdown,
    mean_std,
    summarize,
    with_retention,
)
from palora.config import resolve
from palora.methods.registry import METHODS as COMPARE_METHODS
from test_cli import write_jsonl
from tiny import save_tiny_checkpoint

FAST = ["--set", "svf.train.steps=2", "--set", "inject.train.steps=2", "--set", "svf.train.batch_size=4",
        "--set", "inject.train.batch_size=4", "--set", "inject.rank=4", "--set", "eval.max_new_tokens=3",
        "--set", "eval.limit=3", "--set", "probe.stat_batches=2", "--set", "probe.stat_batch_size=4",
        "--set", "probe.fraction=0.5", "--set", "compare.seeds=[0,1]", "--set", "compare.lr_grid=[0.001,0.01]",
        "--set", "compare.full_lr_grid=[0.0001]",
        "--set", "compare.svd_init_lr_grid=[0.001,0.0001]", "--set", "compare.budget_fractions=[0,0.5,1.0]",
        "--set", "compare.budget_seeds=[0]", "--quiet"]


@pytest.fixture(scope="module")
def compared(tmp_path_factory) -> tuple[Path, Path, list[str]]:
    root = tmp_path_factory.mktemp("compare")
    model = save_tiny_checkpoint(root / "base", "llama", seed=0)
    d = root / "data"
    d.mkdir()
    sums = [(a, b) for a in range(1, 7) for b in range(2, 5)]
    skill = [{"prompt": f"Q: {a} + {b}? A:", "answer": a + b} for a, b in sums]
    facts = [{"prompt": "The capital of Zorbia is", "answer": "Quell"}, {"prompt": "Alice Marsh was born in",
                                                                         "answer": "1901"}]
    files = {
        "skill_train": write_jsonl(d / "skill_train.jsonl", [{"prompt": s["prompt"], "completion": f" {s['answer']}"}
                                                              for s in skill]),
        "skill_val": write_jsonl(d / "skill_val.jsonl", skill[:6]),
        "skill_eval": write_jsonl(d / "skill_test.jsonl", skill[6:12]),
        "knowledge_train": write_jsonl(d / "facts_train.jsonl", [{"text": "The capital of Zorbia is Quell."},
                                                                 {"text": "Alice Marsh was born in 1901."}]),
        "knowledge_val": write_jsonl(d / "facts_val.jsonl", facts),
        "knowledge_eval": write_jsonl(d / "facts_test.jsonl", facts[::-1]),
        "known_eval": write_jsonl(d / "known.jsonl", [{"prompt": "The capital of France is", "answer": "Paris"}]),
    }
    keep = write_jsonl(d / "keep.jsonl", [{"text": "The history of Paris is long."},
                                         {"prompt": "The capital of Italy is", "completion": " Rome"}])
    out = root / "cmp"
    argv = ["compare", "--model", str(model), "--out", str(out), "--config", "compare", *FAST,
            *[x for k, v in files.items() for x in ("--set", f"data.{k}={v}")], "--set", f"probe.keep_data=[{keep}]"]
    assert main(argv) == 0
    return out, model, argv


def rows(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "compare.jsonl").read_text().splitlines()]


def test_every_method_runs_on_each_seed_at_its_chosen_rate(compared):
    out, _, _ = compared
    got = rows(out)
    result = json.loads((out / "compare.json").read_text())
    chosen = result["chosen_lr"]
    for m in COMPARE_METHODS:
        grid = {r["lr"] for r in got if r["method"] == m and r["phase"] == "grid"}
        expected = {"svf": {None}, "full-mlp": {0.0001}, "pissa": {0.001, 0.0001}, "corda-kpm": {0.001, 0.0001}}
        assert grid == expected.get(m, {0.001, 0.01}), m
        seeds = {r["seed"] for r in got if r["method"] == m and r["fraction"] is None
                 and (m == "svf" or r["lr"] == chosen[m])}
        assert seeds == {0, 1}, m
    assert {t["method"] for t in result["table"]} == set(COMPARE_METHODS)
    assert (out / "compare.md").is_file() and (out / "plots" / "tradeoff.png").is_file()
    assert (out / "plots" / "budget.png").is_file() and (out / "plots" / "grid.png").is_file()
    # the report shows every rate tried on the first seed's validation splits, the chosen one marked
    grid = result["grid"]
    assert {(g["method"], g["lr"]) for g in grid} == {(r["method"], r["lr"]) for r in got
                                                      if r["phase"] == "grid" and r["lr"] is not None}
    assert all(g["chosen"] == (g["lr"] == chosen[g["method"]]) for g in grid)
    assert "## Learning-rate grid (validation splits, seed 0)" in (out / "compare.md").read_text()
    # the budget sweep: shares 0 (lora), 0.5 (the probe's own, main rows) and 1.0, seed 0 only
    assert "## Protected budget (test splits, seed 0)" in (out / "compare.md").read_text()
    assert all([p["fraction"] for p in result["budget"][m]] == [0.0, 0.5, 1.0] and
               all(p["recall"][2] == 1 for p in result["budget"][m]) for m in ("palora", "protect-top"))
    # one SVF expert per seed, in an ordinary run directory
    for s in (0, 1):
        assert (out / f"seed{s}" / "svf_expert.safetensors").is_file()


def test_learning_rate_is_chosen_on_validation_only(compared):
    out, _, _ = compared
    got = with_retention(rows(out))
    chosen = json.loads((out / "compare.json").read_text())["chosen_lr"]
    for m in ("lora", "palora"):
        grid = [r for r in got if r["method"] == m and r["phase"] == "grid"]
        def score(r):  # the skill accuracy stands in for retention where the tiny expert scores 0
            kept = r["val"]["retention"] if r["val"]["retention"] is not None else r["val"]["skill"]
            return (kept + r["val"]["recall"]) / 2, -r["lr"]

        best = max(grid, key=score)
        assert chosen[m] == best["lr"]
    # rows after the grid carry no validation numbers: nothing else was chosen on them
    assert all("val" not in r for r in got if r["phase"] != "grid")


def test_projected_methods_certify_and_ablations_share_the_budget(compared):
    out, _, _ = compared
    got = rows(out)
    for r in got:
        if r["method"] in ("palora", "palora-in", "palora-out", "protect-top", "protect-random", "act-protect") \
                and r["fraction"] != 1.0:
            assert r["certificate"] < 1e-5, r
            assert r["update_norm"] > 1e-4, r  # something was learnt
    main_rows = [r for r in got if r["fraction"] is None and r["seed"] == 0 and r["phase"] == "grid"]
    k = {r["method"]: r["protected"] for r in main_rows if "protected" in r}
    assert k["palora"] == k["protect-top"] == k["protect-random"] > 0
    # the sweep: protecting everything on both sides leaves nothing to learn (no row for share 0: that is lora)
    budget = [r for r in got if r["phase"] == "budget"]
    assert {r["fraction"] for r in budget} == {1.0}  # 0.5 is the probe's own share: the main rows
    assert all(r["update_norm"] < 1e-6 for r in budget)


def test_trainable_parameters_per_method(compared):
    out, _, _ = compared
    p = {r["method"]: r["trainable_parameters"] for r in rows(out) if "trainable_parameters" in r}
    lora = p["lora"]
    for m in ("pissa", "corda-kpm", "milora", "olora-penalty", "palora", "protect-top", "act-protect"):
        assert p[m] == lora, m
    assert p["full-mlp"] == 2 * 3 * 64 * 96  # 2 layers x gate, up, down
    assert "trainable_parameters" not in {r["method"]: r for r in rows(out)}["svf"]


def test_rerun_continues_and_runs_nothing_new(compared, capsys):
    out, _, argv = compared
    before = (out / "compare.jsonl").read_bytes()
    assert main(argv) == 0
    assert (out / "compare.jsonl").read_bytes() == before
    assert "0 rows run now" in capsys.readouterr().out


def test_a_row_cut_short_by_a_kill_is_measured_again(compared, capsys):
    out, _, argv = compared
    full = (out / "compare.jsonl").read_text()
    last = full.splitlines()[-1]
    (out / "compare.jsonl").write_text(full[: -len(last) // 2 - 1])  # the last row half written
    assert main(argv) == 0
    assert "1 rows run now" in capsys.readouterr().out
    again = (out / "compare.jsonl").read_text().splitlines()
    assert len(again) == len(full.splitlines())
    assert {k: v for k, v in json.loads(again[-1]).items() if "time" not in k and "memory" not in k} == \
        {k: v for k, v in json.loads(last).items() if "time" not in k and "memory" not in k}


def test_a_diverging_rate_is_recorded_and_never_chosen(tmp_path, compared, capsys):
    _, model, argv = compared
    out = tmp_path / "nan"
    argv = [a if a != str(compared[0]) else str(out) for a in argv]
    argv += ["--methods", "lora", "--set", "compare.seeds=[0]", "--set", "compare.lr_grid=[0.001,1e30]",
             "--set", "compare.budget_methods=[]"]
    assert main(argv) == 0
    got = rows(out)
    failed = [r for r in got if "failed" in r]
    assert [r["lr"] for r in failed] == [1e30] and "loss became" in failed[0]["failed"]
    assert "test" not in failed[0]
    assert json.loads((out / "compare.json").read_text())["chosen_lr"]["lora"] == 0.001
    assert "Protected budget" not in (out / "compare.md").read_text()  # no sweep asked, no empty section


def test_mean_std_is_the_sample_statistics():
    assert mean_std([]) == (None, None, 0)
    assert mean_std([0.5]) == (0.5, None, 1)
    mean, std, n = mean_std([1.0, 2.0, 4.0])
    assert n == 3 and mean == pytest.approx(7 / 3)
    assert std == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2))


def _row(seed, method, lr, skill, recall, phase="grid"):
    r = {"seed": seed, "method": method, "lr": lr, "fraction": None, "phase": phase,
         "test": {"skill": skill, "recall": recall}}
    if phase == "grid":
        r["val"] = {"skill": skill, "recall": recall}
    return r


def test_table_uses_each_seeds_own_expert_and_the_chosen_rate():
    table_rows = [_row(0, "svf", None, 0.5, 0.0), _row(1, "svf", None, 0.4, 0.0, "seeds"),
                  _row(0, "lora", 1e-3, 0.5, 0.1), _row(0, "lora", 3e-3, 0.25, 0.6),
                  _row(1, "lora", 3e-3, 0.2, 0.4, "seeds"), _row(1, "lora", 1e-3, 0.0, 0.0, "seeds")]
    scored = with_retention(table_rows)
    # validation: (1.0 + 0.1) / 2 = 0.55 against (0.5 + 0.6) / 2 = 0.55: a tie goes to the smaller rate
    assert choose_lr(scored, "lora", 0, "balanced") == 1e-3
    assert choose_lr(scored, "lora", 0, "recall") == 3e-3
    (line,) = [t for t in summarize(scored, ["svf", "lora"], {"lora": 3e-3}) if t["method"] == "lora"]
    assert line["seeds"] == [0, 1]
    mean, std, n = line["retention"]
    assert n == 2 and mean == pytest.approx((0.25 / 0.5 + 0.2 / 0.4) / 2) and std == pytest.approx(0.0)
    assert line["recall"][0] == pytest.approx(0.5)


def test_grid_lists_every_rate_with_its_score_and_the_choice():
    rows_ = [_row(0, "svf", None, 0.5, 0.0), _row(0, "lora", 1e-3, 0.4, 0.1), _row(0, "lora", 3e-3, 0.25, 0.6),
             _row(1, "lora", 3e-3, 0.2, 0.4, "seeds"),
             {"seed": 0, "method": "lora", "lr": 1e-2, "fraction": None, "phase": "grid", "failed": "loss is nan"}]
    scored = with_retention(rows_)
    chosen = {"lora": choose_lr(scored, "lora", 0, "balanced")}
    lines = grid_lines(scored, ["svf", "lora"], 0, "balanced", chosen)
    assert [(g["lr"], g["chosen"]) for g in lines] == [(1e-2, False), (3e-3, True), (1e-3, False)]  # seed 0 only
    diverged, high, low = lines
    assert diverged["failed"] == "loss is nan" and diverged["score"] is None
    assert high["score"] == pytest.approx((0.25 / 0.5 + 0.6) / 2) and low["score"] == pytest.approx((0.8 + 0.1) / 2)
    text = grid_markdown(lines)
    assert "| lora | 0.003 | 50.0 | 60.0 | 0.550 | ✓ |" in text and "failed: loss is nan" in text


def test_budget_curve_counts_only_the_sweeps_seeds():
    """Share 0 is LoRA at the method's own rate, the probe's own share the main rows, other shares
    the sweep's rows; a seed outside the sweep moves no point, and other rates are not on the curve."""
    rows_ = [_row(0, "svf", None, 0.5, 0.0), _row(1, "svf", None, 0.4, 0.0, "seeds"),
             _row(0, "lora", 1e-3, 0.45, 0.1), _row(0, "lora", 3e-3, 0.4, 0.2), _row(1, "lora", 3e-3, 0.1, 0.9, "seeds"),
             _row(0, "palora", 3e-3, 0.45, 0.3), _row(0, "palora", 1e-3, 0.05, 0.0),
             _row(1, "palora", 3e-3, 0.0, 0.9, "seeds"),
             {**_row(0, "palora", 3e-3, 0.25, 0.1, "budget"), "fraction": 0.25}]
    chosen = {"lora": 1e-3, "palora": 3e-3}
    curves = budget_curves(with_retention(rows_), ["palora"], 0.5, chosen, [0])
    got = [(p["fraction"], p["retention"], p["recall"]) for p in curves["palora"]]
    assert got == [(0.0, (pytest.approx(0.8), None, 1), (0.2, None, 1)),
                   (0.25, (pytest.approx(0.5), None, 1), (0.1, None, 1)),
                   (0.5, (pytest.approx(0.9), None, 1), (0.3, None, 1))]
    both = budget_curves(with_retention(rows_), ["palora"], 0.5, chosen, [0, 1])
    assert [p["recall"][2] for p in both["palora"]] == [2, 1, 2]
    assert [p["fraction"] for p in budget_curves(with_retention(rows_), ["palora"], 0.5,
                                                 {"lora": 1e-3, "palora": 1e-2}, [0])["palora"]] == []
    text = budget_markdown(curves)
    assert "| palora | 0.25 | 1 | 50.0 | 10.0 |" in text and "| palora | 0 | 1 | 80.0 | 20.0 |" in text


def test_each_sweep_seed_gets_lora_at_each_swept_rate():
    """Share 0 of a sweep seed is plain LoRA at every swept method's rate, each run once."""
    cfg = resolve(overrides=["compare.seeds=[0,1]", "compare.budget_seeds=[0,1,7]", "compare.lr_grid=[0.003,0.001]",
                             "compare.budget_methods=[palora,protect-top]", "compare.budget_fractions=[0,0.25,0.5]",
                             "probe.fraction=0.5"])
    scores = {("lora", 3e-3): 0.9, ("palora", 3e-3): 0.9, ("protect-top", 1e-3): 0.9}
    rows_ = [_row(0, "svf", None, 0.5, 0.0)] + [_row(0, m, lr, 0.4, scores.get((m, lr), 0.0))
                                                 for m in cfg.compare.methods if m != "svf"
                                                 for lr in grid_of(cfg, m)]
    jobs, chosen = plan(cfg, rows_)
    assert chosen["palora"] == 3e-3 and chosen["protect-top"] == 1e-3
    seven = {(j.method, j.lr, j.fraction) for j in jobs if j.seed == 7}
    assert seven == {("svf", None, None), ("lora", 3e-3, None), ("lora", 1e-3, None),
                     ("palora", 3e-3, 0.25), ("palora", 3e-3, 0.5), ("protect-top", 1e-3, 0.25),
                     ("protect-top", 1e-3, 0.5)}
    assert {(j.method, j.fraction) for j in jobs if j.seed == 0 and j.phase == "budget"} == {
        ("palora", 0.25), ("protect-top", 0.25)}  # share 0.5 is seed 0's main row, share 0 its grid row
    # a seed of the table: LoRA's chosen rate (3e-3) ran in the seeds phase, protect-top's 1e-3 did not
    assert {(j.method, j.lr, j.fraction) for j in jobs if j.seed == 1 and j.phase == "budget"} == {
        ("lora", 1e-3, None), ("palora", 3e-3, 0.25), ("protect-top", 1e-3, 0.25)}
    assert ("lora", 3e-3) in {(j.method, j.lr) for j in jobs if j.seed == 1 and j.phase == "seeds"}
    assert len({j.key() for j in jobs}) == len(jobs)


def test_peak_memory_averages_only_per_job_measurements():
    """Rows of older versions held the process's absolute resident peak (what earlier jobs left
    included): the table averages only the per-job kinds."""
    rows_ = [_row(0, "svf", None, 0.5, 0.0), _row(0, "lora", 3e-3, 0.25, 0.6), _row(1, "lora", 3e-3, 0.2, 0.4, "seeds")]
    rows_[1].update(peak_memory_mb=3000.0, peak_memory_kind="process resident set")
    rows_[2].update(peak_memory_mb=400.0, peak_memory_kind=CPU_PEAK)
    (line,) = [t for t in summarize(with_retention(rows_), ["lora"], {"lora": 3e-3})]
    assert line["peak_memory_mb"] == pytest.approx(400.0)


def test_cpu_peak_is_what_the_job_added(compared):
    out, _, _ = compared
    trained = [r for r in rows(out) if "peak_memory_mb" in r]
    assert trained and all(r["peak_memory_kind"] == CPU_PEAK for r in trained)
    assert all(0 <= r["peak_memory_mb"] < 300 for r in trained)  # a tiny model's job, not the process (> 400 MB)


def test_several_skills_are_refused_in_one_line(compared, tmp_path, capsys):
    """The comparison probes one skill; a multi-skill probe setting is refused, nothing is run."""
    _, _, argv = compared
    out = tmp_path / "multi"
    argv = [x if x != str(compared[0]) else str(out) for x in argv]
    assert main([*argv, "--set", "probe.skill_data=[a.jsonl,b.jsonl]"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "probe.skill_data" in err[0]
    assert not (out / "compare.jsonl").exists()


def test_a_row_is_reused_exactly_when_its_stages_would_be(compared, tmp_path, capsys):
    """A row's digest is its stages' own: the penalty's weight, which only olora-penalty reads,
    makes only its rows stale; the new rows replace them, the others are kept."""
    out, _, argv = compared
    copy = tmp_path / "penalty"
    shutil.copytree(out, copy)
    argv = [a if a != str(out) else str(copy) for a in argv]
    before = rows(copy)
    assert main([*argv, "--set", "inject.penalty_weight=0.5"]) == 0
    assert f"{sum(r['method'] == 'olora-penalty' for r in before)} rows of" in capsys.readouterr().out
    after = rows(copy)
    assert after[: len(before)] == before  # nothing rewritten; the stale rows stay in the file, ignored
    assert {r["method"] for r in after[len(before):]} == {"olora-penalty"}


def test_rows_of_an_earlier_digest_are_refused_in_one_line(compared, tmp_path, capsys):
    out, _, argv = compared
    old = tmp_path / "old"
    old.mkdir()
    legacy = [{k: v for k, v in r.items() if k != "digests"} for r in rows(out)[:3]]
    (old / "compare.jsonl").write_text("".join(json.dumps(r) + "\n" for r in legacy))
    argv = [a if a != str(out) else str(old) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "earlier palora" in err[0] and "move it away" in err[0]
