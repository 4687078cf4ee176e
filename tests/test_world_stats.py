"""studies/world_stats.py: its name-confusability and demonstrator helpers, and one small world end to end."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load():
    spec = importlib.util.spec_from_file_location("studies_world_stats", ROOT / "studies" / "world_stats.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_deletion_variants():
    ws = load()
    assert ws.deletion_variants("Abc") == {"bc", "ac", "ab"}


def test_confusable_words_one_edit_and_prefix():
    ws = load()
    near, prefix = ws.confusable_words(["Torval", "Torvel", "Torvalsar", "Mirko", "Zanith"])
    assert near == {"torval", "torvel"}      # one substitution apart
    assert prefix == {"torval"}              # a proper prefix of Torvalsar
    assert ws.confusable_words(["Korvar", "Korvra"])[0] == {"korvar", "korvra"}  # adjacent swap
    assert ws.confusable_words(["Mirko", "Zanith"]) == (set(), set())


def test_demonstrator_success():
    ws = load()
    assert ws.demonstrator_success(0, 0.6) == 1.0
    assert ws.demonstrator_success(2, 0.6) == pytest.approx(0.16)


def test_world_stats_on_a_small_world(tmp_path):
    ws = load()
    res = ws.world_stats(0, tmp_path, entities=60)
    assert res["passages"]["tokens_mean"] > res["passages"]["words_mean"] > 10
    for scope in ("all", "test", "warmup"):
        for stats in res["per_hops"][scope].values():
            assert 0.0 <= stats["recall@1"] <= stats["recall@2"] <= stats["recall@3"] <= 1.0
            assert 0.0 <= stats["demo_success"] <= 1.0
    assert res["per_hops"]["all"][1]["lookalike_hops_mean"] == 0  # a 1-hop question has no non-final hop
    assert res["sft"]["examples"] > 0 and res["sft"]["rollout_settings"]["topk"] == 2
    table = ws.markdown_tables([res])
    assert table.startswith("| world | hops |") and "\n| 0 | 1 |" in table
