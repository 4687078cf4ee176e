"""The ``dense`` world (``build_world(relations="dense")``): the base graph plus six relations, each fact stated
and found, each look-alike another entity, five times the questions, and the demonstrators working on it."""

from __future__ import annotations

import argparse
import json
import random

import pytest

from igsearch.data.loaders import load_corpus, load_qa
from igsearch.data.metrics import exact_match, extract_answer
from igsearch.retrieval.bm25 import BM25Retriever
from igsearch.warmstart import WarmStartConfig, world_split_sizes
from igsearch.world import build_world, oracle_response
from igsearch.world.cli import add_world_commands
from igsearch.world.graph import RELATION_SETS, RELATIONS, generate_entities
from igsearch.world.passages import find_fact, find_lookalike
from igsearch.world.questions import all_questions

DENSE_ONLY = [r for r in RELATION_SETS["dense"] if r not in RELATION_SETS["base"]]


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    out = tmp_path_factory.mktemp("dense")
    manifest = build_world(out, seed=5, n_entities=150, relations="dense")
    return out, manifest, BM25Retriever.from_corpus(out / "corpus.jsonl")


def test_dense_graph_is_the_base_graph_plus_six_relations():
    base = generate_entities(random.Random("w"), 200)
    dense = generate_entities(random.Random("w"), 200, relations="dense")
    assert [e.name for e in base] == [e.name for e in dense]
    for b, d in zip(base, dense):
        assert {k: v for k, v in d.relations.items() if k in RELATION_SETS["base"]} == b.relations
        assert set(d.relations) - set(b.relations) <= set(DENSE_ONLY)
        assert all(RELATIONS[k].subject_kind == d.kind and RELATIONS[k].object_kind == dense[v].kind
                   for k, v in d.relations.items())
        assert d.relations.get("mentor") != d.index
    assert {k for e in dense for k in e.relations} == set(RELATION_SETS["dense"])
    with pytest.raises(ValueError, match="relations 'sparse' is not one of base, dense"):
        generate_entities(random.Random("w"), 200, relations="sparse")


def test_every_dense_fact_is_in_its_passage_and_its_lookalike_is_another_entity(dense):
    out, manifest, _ = dense
    assert manifest["relations"] == sorted(RELATION_SETS["dense"])
    entities = generate_entities(random.Random("igsearch-world-5"), 150, relations="dense")
    passages = {p["id"]: p["contents"] for p in load_corpus(out / "corpus.jsonl")}
    lookalikes = 0
    for e in entities:
        for key, obj in e.relations.items():
            fact = find_fact([passages[str(e.index)]], key, e.name)
            assert fact is not None and fact[1] == entities[obj].name, (e.name, key)
            if key in DENSE_ONLY and key != "mentor":  # mentor's look-alike (a colleague) is drawn for most
                other = find_lookalike([passages[str(e.index)]], key, e.name)
                assert other is not None and other[1] != entities[obj].name, (e.name, key)
                lookalikes += 1
    assert lookalikes > 100


def test_dense_world_fits_1000_question_dev_and_test_at_800_entities(tmp_path):
    sizes = world_split_sizes(800, 1000)
    base = all_questions(generate_entities(random.Random("igsearch-world-0"), 800))
    assert sum(len(q) for chains in base.values() for q in chains.values()) < sum(sizes.values())
    manifest = build_world(tmp_path, seed=0, n_entities=800, split_sizes=sizes, relations="dense", parquet=False)
    assert manifest["n_passages"] == 800 and manifest["splits"]["test"] == manifest["splits"]["dev"] == 1000
    assert manifest["hops"]["test"] == {"1hop": 400, "2hop": 350, "3hop": 250}  # the hop shares, no shortfall
    assert manifest["hops"]["warmup"] == {"1hop": 640, "2hop": 560, "3hop": 400}
    ids = [{r.question for r in load_qa(tmp_path / f"{s}.jsonl")} for s in manifest["splits"]]
    assert sum(map(len, ids)) == len(set().union(*ids))  # no question in two splits


def test_hops_are_found_by_bm25_and_the_demonstrators_work_on_a_dense_world(dense):
    out, _, retriever = dense
    rows = load_qa(out / "dev.jsonl")
    hops = [hop for row in rows for hop in row.extra_info["hops"]]
    assert {h["relation"] for h in hops} & set(DENSE_ONLY)
    found = retriever.retrieve([hop["query"] for hop in hops], 2)
    assert sum(res[0].id == hop["passage_id"] for res, hop in zip(found, hops)) >= 0.97 * len(hops)
    assert all(exact_match(extract_answer(oracle_response(r, retriever, topk=2)), r.golden_answers) == 1.0
               for r in rows)
    multi = [r for r in rows if len(r.extra_info["hops"]) > 1 and r.extra_info["hops"][0]["relation"] in DENSE_ONLY]
    astray = [oracle_response(r, retriever, topk=2, distractor=1.0) for r in multi]
    assert multi and sum(exact_match(extract_answer(t), r.golden_answers) == 0 for t, r in zip(astray, multi)) \
        >= 0.7 * len(multi)


def test_relations_reach_the_warm_start_key_and_the_world_command(tmp_path, capsys):
    assert "relations" not in WarmStartConfig().setup_key()
    assert WarmStartConfig(relations="dense").setup_key()["relations"] == "dense"
    parser = argparse.ArgumentParser(prog="igsearch")
    add_world_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["world", "build", "--out", str(tmp_path), "--entities", "60", "--no-parquet",
                              "--relations", "dense"])
    assert args.func(args) == 0 and json.loads(capsys.readouterr().out)["n_passages"] == 60
    assert json.loads((tmp_path / "manifest.json").read_text())["relations"] == sorted(RELATION_SETS["dense"])
