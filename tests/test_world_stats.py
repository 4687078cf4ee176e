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


def test_classify_failure():
    ws = load()
    passages = {"velmo dawn": '"Velmo Dawn"\nVelmo Dawn is a 2001 drama film. Karin Tos plays the lead role in Velmo Dawn. The director of Velmo Dawn is Ala Bren.',
                "ala bren": '"Ala Bren"\nThe birthplace of Ala Bren is Orsa.', "karin tos": '"Karin Tos"\n...',
                "orsa": '"Orsa"\n...', "zelka": '"Zelka"\n...'}
    base = {"chain": ["director", "birthplace"], "path": ["Velmo Dawn", "Ala Bren", "Orsa"], "em": 0.0}

    def rec(text, pred):
        return {**base, "text": text, "pred": pred}

    good = "<search> Velmo Dawn director </search><refine> The director of Velmo Dawn is Ala Bren. </refine>"
    assert ws.classify_failure({**rec("", "Orsa"), "em": 1.0}, passages) == "correct"
    assert ws.classify_failure(rec("<search> Velmo Dawn director </search><refine> x </refine>", "Orsa"),
                               passages) == "misread: refine lacks the fact"
    assert ws.classify_failure(rec(good + "<search> Karin Tos birthplace </search>", "Zelka"),
                               passages) == "followed the look-alike"
    assert ws.classify_failure(rec(good + "<search> Zelka birthplace </search>", "Zelka"),
                               passages) == "searched another entity"
    assert ws.classify_failure(rec(good + "<search> Ala Brem birthplace </search>", "Zelka"),
                               passages) == "miscopied name in query"
    assert ws.classify_failure(rec(good, "Ala Bren"), passages) == "answered too early"
    assert ws.classify_failure(rec(good + "<search> Ala Bren spouse </search>", "Zelka"),
                               passages) == "wrong relation word"
    done = good + "<search> Ala Bren birthplace </search><refine> The birthplace of Ala Bren is Orsa. </refine>"
    assert ws.classify_failure(rec(done, "Zelka"), passages) == "answered another entity"
    assert ws.classify_failure(rec(done, "Orsaa"), passages) == "miscopied answer"
    assert ws.classify_failure(rec(done + "<search> Orsa country </search>", "Zelka"), passages) == "searched too much"
    assert ws.classify_failure(rec(done, None), passages) == "no answer"


def test_warm_start_tables_split_demonstrated_from_reading_errors():
    ws = load()
    per = {1: {"n": 4, "em": 0.5, "failures": {"correct": 2, "misread: refine lacks the fact": 2}},
           2: {"n": 3, "em": 0.0, "failures": {"followed the look-alike": 2, "searched too much": 1}},
           "overall": 2 / 7}
    table = ws.warm_start_tables({"w": {"summary": {"dev": per}}})
    assert "| w | dev | 0.500 | 0.000 | - | 0.286 |" in table
    assert "| w | 1 | 4 | 2 | 0 | 2 | 0 | 0 | 2 |" in table   # demonstrated 0, reading 2
    assert "| w | 2 | 3 | 0 | 2 | 0 | 1 | 2 | 1 |" in table
