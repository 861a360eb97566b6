"""Stage digests stay what earlier palora versions recorded, so that their run directories resume.

The digests below were recorded by palora 0.1 before the package was reorganised (stages declared
next to their code, one digest system); a change to a stage's inputs that is not meant to
invalidate every earlier run directory must leave them alone. The data files have fixed bytes.
The ``data`` stage's digests changed once, on purpose, when it began to write the known facts of
four relations, their protect split and general text (``data_gen``'s new keys): an old demo
directory rewrites its data, and only the stages whose files changed run again.
"""

from __future__ import annotations

import pytest

from invariants import stage_digest
from palora.config import resolve

METHODS = ["palora", "lora", "palora-in", "palora-out", "palora-soft", "olora-penalty", "protect-top", "protect-random"]
FILES = ("skill_train", "knowledge_train", "skill_eval", "knowledge_eval", "known_eval")

#: case -> (--set overrides, {stage key: digest}); ``{d}`` is the data folder (a digest records the
#: path of an earlier adapter, /tmp/dg here, which need not exist)
RECORDED = {
    "default": ([], {
        "data": "7cfa81b6cafeac06", "svf": "0980f69fc2e893cc", "probe": "90d220be95acdded",
        "eval": "fa98a0e2088b9510", "inject:palora": "b0cad00f03bdbcf3", "inject:lora": "b0cad00f03bdbcf3",
        "inject:olora-penalty": "350b7c67a0cdf5ef", "inject:protect-top": "b0cad00f03bdbcf3",
    }),
    "known": (["data.known_eval={d}/known_eval.jsonl"], {
        "data": "7cfa81b6cafeac06", "svf": "0980f69fc2e893cc", "probe": "90d220be95acdded",
        "eval": "28973a130d40c49b", "inject:palora": "b0cad00f03bdbcf3", "inject:lora": "b0cad00f03bdbcf3",
        "inject:olora-penalty": "350b7c67a0cdf5ef", "inject:protect-top": "b0cad00f03bdbcf3",
    }),
    "fisher": (["probe.score=fisher", "probe.rule=global", "probe.fraction=0.1"], {
        "data": "7cfa81b6cafeac06", "svf": "0980f69fc2e893cc", "probe": "4c46a7845626870d",
        "eval": "fa98a0e2088b9510", "inject:palora": "b0cad00f03bdbcf3", "inject:lora": "b0cad00f03bdbcf3",
        "inject:olora-penalty": "350b7c67a0cdf5ef", "inject:protect-top": "b0cad00f03bdbcf3",
    }),
    "t2": (["svf.parametrization=t2", "svf.train.steps=7", "inject.rank=8"], {
        "data": "7cfa81b6cafeac06", "svf": "58d1e12763a317aa", "probe": "90d220be95acdded",
        "eval": "fa98a0e2088b9510", "inject:palora": "55ade85beba99ede", "inject:lora": "55ade85beba99ede",
        "inject:olora-penalty": "9d2bbf085f87668c", "inject:protect-top": "55ade85beba99ede",
    }),
    "reinforce": (["svf.objective=reinforce", "svf.reinforce.kl_coeff=0.1"], {
        "data": "7cfa81b6cafeac06", "svf": "659872bd650b85d4", "probe": "90d220be95acdded",
        "eval": "fa98a0e2088b9510", "inject:palora": "b0cad00f03bdbcf3", "inject:lora": "b0cad00f03bdbcf3",
        "inject:olora-penalty": "350b7c67a0cdf5ef", "inject:protect-top": "b0cad00f03bdbcf3",
    }),
    "skill_data": (["probe.skill_data=[{d}/skill_train.jsonl,{d}/known_eval.jsonl]", "probe.combine=weighted"], {
        "data": "7cfa81b6cafeac06", "svf": "0980f69fc2e893cc", "probe": "c879279f78935786",
        "eval": "fa98a0e2088b9510", "inject:palora": "b0cad00f03bdbcf3", "inject:lora": "b0cad00f03bdbcf3",
        "inject:olora-penalty": "350b7c67a0cdf5ef", "inject:protect-top": "b0cad00f03bdbcf3",
    }),
    "protect_adapter": (["inject.protect_adapter=/tmp/dg", "inject.protect_adapter_side=in"], {
        "data": "7cfa81b6cafeac06", "svf": "0980f69fc2e893cc", "probe": "90d220be95acdded",
        "eval": "fa98a0e2088b9510", "inject:palora": "0b5eeddea7c61989", "inject:lora": "0b5eeddea7c61989",
        "inject:olora-penalty": "fd8f9fce3dc96361", "inject:protect-top": "0b5eeddea7c61989",
    }),
    "targets": (["model.target_modules=[gate_proj,down_proj]", "model.dtype=bfloat16"], {
        "data": "a066ebf291efbc52", "svf": "0b888264e69a1735", "probe": "90d220be95acdded",
        "eval": "287d4b6856c4761f", "inject:palora": "b0cad00f03bdbcf3", "inject:lora": "b0cad00f03bdbcf3",
        "inject:olora-penalty": "350b7c67a0cdf5ef", "inject:protect-top": "b0cad00f03bdbcf3",
    }),
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("digest-data")
    for f in FILES:
        (d / f"{f}.jsonl").write_text(f'{{"prompt": "{f}", "completion": "x", "answer": "1"}}\n', encoding="utf-8")
    return d


@pytest.mark.parametrize("case", RECORDED)
def test_stage_digests_are_the_recorded_ones(folder, case):
    sets, recorded = RECORDED[case]
    files = {f"data.{f}": str(folder / f"{f}.jsonl") for f in FILES[:4]}
    cfg = resolve(None, [f"inject.methods=[{','.join(METHODS)}]", *(s.format(d=folder) for s in sets)], files)
    assert {key: stage_digest(cfg, key) for key in recorded} == recorded
