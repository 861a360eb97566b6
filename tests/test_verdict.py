"""experiments/verdict.py: retention and gain retention per seed, their mean and standard error over
seeds, and the rule that names the failing axis of the paper's claim."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location("verdict", Path(__file__).parents[1] / "experiments" / "verdict.py")
verdict = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(verdict)


def row(name, skill, recall, known, n_skill=500, n_knowledge=200, n_known=50):
    return {"name": name, "skill_accuracy": skill, "skill_stderr": math.sqrt(skill * (1 - skill) / n_skill),
            "knowledge_recall": recall, "knowledge_stderr": math.sqrt(recall * (1 - recall) / n_knowledge),
            "known_recall": known, "known_stderr": math.sqrt(known * (1 - known) / n_known),
            "n_skill": n_skill, "n_knowledge": n_knowledge}


def run(tmp_path, name, rows):
    d = tmp_path / name
    d.mkdir()
    (d / "report.json").write_text(json.dumps({"rows": rows}))
    return d


def test_gain_retention_is_zero_at_the_base_and_one_at_the_expert(tmp_path):
    a = run(tmp_path, "s0", [row("base", 0.3, 0.0, 0.8), row("expert", 0.5, 0.0, 0.8),
                             row("lora", 0.4, 0.4, 0.4), row("x", 0.49, 0.36, 0.6)])
    t = verdict.setting_table([a])
    assert t["base"]["gain"][0] == 0 and t["expert"]["gain"][0] == pytest.approx(1)
    assert t["lora"]["gain"][0] == pytest.approx(0.5) and t["lora"]["retention"][0] == pytest.approx(0.8)
    # one seed: the binomial standard error of the test number, scaled like the number
    assert t["x"]["retention"][1] == pytest.approx(math.sqrt(0.49 * 0.51 / 500) / 0.5)
    assert t["x"]["gain"][1] == pytest.approx(math.sqrt(0.49 * 0.51 / 500) / 0.2)
    assert t["x"]["recall_gap"][0] == pytest.approx(-0.04)
    assert t["x"]["capitals"][0] == pytest.approx(0.75)
    assert verdict.verdict(t["x"]) == "holds"  # 98 % retention, 90 % of LoRA's recall


def test_over_seeds_the_error_is_that_of_the_mean_and_the_rule_names_the_failing_axis(tmp_path):
    runs = [run(tmp_path, f"s{i}", [row("base", 0.0, 0.0, 0.9), row("expert", 0.5, 0.0, 0.9),
                                    row("lora", 0.3, 0.4, 0.3), row("low", 0.5, r, 0.3),
                                    row("weak", 0.4 + 0.02 * i, 0.4, 0.3)])
            for i, r in enumerate((0.2, 0.3))]
    t = verdict.setting_table(runs)
    assert t["weak"]["retention"] == pytest.approx((0.82, 0.02))  # (0.8, 0.84): std/√2 = 0.02
    assert verdict.verdict(t["weak"]) == "retention"
    assert t["low"]["recall_ratio"][0] == pytest.approx(0.25 / 0.4)
    assert verdict.verdict(t["low"]) == "recall"


def test_matched_recall_reads_lora_s_pareto_front_between_its_rates(tmp_path):
    """LoRA at three rates per seed: the dominated point (less recall and less skill than another)
    is dropped, the method is compared with the line between the neighbours on the front, and a
    recall beyond the front's ends counts as not bracketed."""
    for seed in (0, 1):
        run(tmp_path, f"s{seed}-low", [row("base", 0.0, 0.0, 0.9) | {"seed": seed},
                                        row("expert", 0.5, 0.0, 0.9) | {"seed": seed}, row("lora", 0.4, 0.1, 0.5)])
        run(tmp_path, f"s{seed}-mid", [row("base", 0.0, 0.0, 0.9) | {"seed": seed},
                                        row("expert", 0.5, 0.0, 0.9) | {"seed": seed}, row("lora", 0.1, 0.7, 0.5)])
    runs = [run(tmp_path, f"s{seed}", [row("base", 0.0, 0.0, 0.9) | {"seed": seed},
                                       row("expert", 0.5, 0.0, 0.9) | {"seed": seed},
                                       row("lora", 0.0, 0.6, 0.1),  # dominated by the mid rate
                                       row("x", 0.45, 0.4, 0.5), row("far", 0.5, 0.9, 0.5)])
            for seed in (0, 1)]
    line = [str(tmp_path / "s{seed}-low"), str(tmp_path / "s{seed}-mid")]
    assert verdict.lora_front([(0.1, 0.8), (0.6, 0.0), (0.7, 0.2)]) == [(0.1, 0.8), (0.7, 0.2)]
    t = verdict.setting_table(runs, line)
    # front (0.1, 0.8) – (0.7, 0.2): at recall 0.4, LoRA keeps 0.5; x keeps 0.9
    assert t["x"]["bracketed"] == 2 and t["x"]["matched_gap"][0] == pytest.approx(0.4)
    assert t["far"]["bracketed"] == 0 and "matched_gap" not in t["far"]
    assert "bracketed" not in t["lora"]
    assert "bracketed" not in verdict.setting_table(runs)["x"]  # no line: no matched recall
    # a method's run of another seed holding no LoRA row of its own: no recall gap, the line still reads
    bare = run(tmp_path, "s1-x", [row("base", 0.0, 0.0, 0.9) | {"seed": 1}, row("expert", 0.5, 0.0, 0.9) | {"seed": 1},
                                  row("x", 0.45, 0.4, 0.5)])
    mixed = verdict.setting_table([runs[0], bare], [str(tmp_path / "s{seed}-low"), str(tmp_path / "s{seed}-mid")])
    assert "recall_gap" not in mixed["x"] and mixed["x"]["matched_gap"][0] == pytest.approx(0.4)
    run(tmp_path, "s2-low", [row("base", 0.0, 0.0, 0.9) | {"seed": 2}, row("expert", 0.4, 0.0, 0.9) | {"seed": 2},
                             row("lora", 0.3, 0.1, 0.5)])
    other = run(tmp_path, "s2", [row("base", 0.0, 0.0, 0.9) | {"seed": 2}, row("expert", 0.5, 0.0, 0.9) | {"seed": 2},
                                 row("lora", 0.0, 0.6, 0.1), row("x", 0.45, 0.4, 0.5)])
    with pytest.raises(SystemExit, match="another expert"):
        verdict.setting_table([other], [str(tmp_path / "s{seed}-low")])


def test_the_plot_puts_settings_with_the_same_lora_fronts_in_one_panel(tmp_path):
    """A method at another rate on the same experts (its runs hold no LoRA row of their own) shares
    the panel of its setting when its line gives the same fronts; another line gets its own."""
    def seed_run(name, seed, *rows):
        return run(tmp_path, name, [row("base", 0.0, 0.0, 0.9) | {"seed": seed},
                                    row("expert", 0.5, 0.0, 0.9) | {"seed": seed}, *rows])

    main, other_rate = [], []
    for seed in (0, 1):
        seed_run(f"s{seed}-low", seed, row("lora", 0.4, 0.1, 0.5))
        main.append(seed_run(f"s{seed}", seed, row("lora", 0.1, 0.7, 0.5), row("x", 0.45, 0.4, 0.5)))
        other_rate.append(seed_run(f"s{seed}-x1e-3", seed, row("x", 0.48, 0.2, 0.5)))
    pattern = str(tmp_path / "s{seed}")
    settings = {"B": main, "B, x at 1e-3": other_rate, "B, low only": main}
    lines = {"B": [pattern + "-low"], "B, x at 1e-3": [pattern, pattern + "-low"], "B, low only": []}
    path = tmp_path / "lines.png"
    panels = verdict.plot_lines(settings, lines, path)
    assert panels == [["B", "B, x at 1e-3"], ["B, low only"]]
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit, match="--line"):
        verdict.plot_lines(settings, {}, tmp_path / "none.png")
