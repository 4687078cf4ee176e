"""The synthetic world: determinism, sizes, question validity, oracle trajectories, CLI."""

from __future__ import annotations

import argparse
import json
import random
import re

import pytest

from igsearch.data.loaders import load_corpus, load_qa
from igsearch.data.metrics import exact_match, extract_answer
from igsearch.data.prompts import REFINE_TEMPLATE, SEARCH_R1_TEMPLATE, format_documents
from igsearch.retrieval.bm25 import BM25Retriever
from igsearch.world import (
    NO_INFORMATION, build_world, oracle_response, oracle_texts, world_texts,
)
from igsearch.world.cli import add_world_commands
from igsearch.world.graph import RELATIONS

SMALL = 120
FILES = ("corpus.jsonl", "train.jsonl", "dev.jsonl", "test.jsonl", "train.parquet",
         "dev.parquet", "test.parquet", "manifest.json")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    manifest = build_world(out, seed=3, n_entities=SMALL)
    return out, manifest


@pytest.fixture(scope="module")
def retriever(world):
    return BM25Retriever.from_corpus(world[0] / "corpus.jsonl")


def test_same_seed_same_bytes_and_other_seed_differs(world, tmp_path):
    out, _ = world
    again = build_world(tmp_path / "again", seed=3, n_entities=SMALL)
    for name in FILES:
        assert (out / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    assert again["files"]["corpus.jsonl"] == json.loads((out / "manifest.json").read_text())[
        "files"]["corpus.jsonl"]
    other = build_world(tmp_path / "other", seed=4, n_entities=SMALL, parquet=False)
    assert other["files"]["corpus.jsonl"] != again["files"]["corpus.jsonl"]
    assert (tmp_path / "other" / "train.jsonl").read_bytes() != (out / "train.jsonl").read_bytes()


def test_default_world_has_the_documented_sizes(tmp_path):
    manifest = build_world(tmp_path, parquet=False)
    assert manifest["n_passages"] == manifest["n_entities"] == 800
    assert manifest["splits"] == {"train": 1500, "dev": 200, "test": 300}
    hops = manifest["hops"]["train"]
    assert hops == {"1hop": 600, "2hop": 525, "3hop": 375}
    assert len(manifest["relations"]) >= 6


def test_manifest_counts_match_the_files(world):
    out, manifest = world
    assert manifest["seed"] == 3 and manifest["version"]
    assert len(load_corpus(out / "corpus.jsonl")) == manifest["n_passages"] == SMALL
    for split, count in manifest["splits"].items():
        rows = load_qa(out / f"{split}.jsonl")
        assert len(rows) == count > 0
        assert len(load_qa(out / f"{split}.parquet")) == count
        by_hops = {f"{h}hop": sum(r.data_source == f"world_{h}hop" for r in rows)
                   for h in (1, 2, 3)}
        assert by_hops == manifest["hops"][split]
    total = sum(manifest["splits"].values())
    one_hop = sum(manifest["hops"][s]["1hop"] for s in manifest["splits"])
    assert 0.3 < one_hop / total < 0.5


def test_rows_follow_the_search_r1_format_and_chain_correctly(world):
    out, _ = world
    corpus = {d["id"]: d["contents"] for d in load_corpus(out / "corpus.jsonl")}
    questions = set()
    for split in ("train", "dev", "test"):
        for line in (out / f"{split}.jsonl").read_text().splitlines():
            row = json.loads(line)
            assert set(row) == {"id", "question", "golden_answers", "data_source", "prompt",
                                "ability", "reward_model", "extra_info"}
            assert row["prompt"] == [{"role": "user",
                                      "content": REFINE_TEMPLATE.render(row["question"])}]
            assert row["reward_model"]["ground_truth"]["target"] == row["golden_answers"]
            hops = row["extra_info"]["hops"]
            assert row["data_source"] == f"world_{len(hops)}hop"
            assert row["extra_info"]["split"] == split
            assert hops[0]["entity"] in row["question"]
            for hop, nxt in zip(hops, hops[1:]):
                assert nxt["entity"] == hop["answer"]
            assert hops[-1]["answer"] == row["golden_answers"][0]
            for hop in hops:
                passage = corpus[hop["passage_id"]]
                assert passage.startswith(f'"{hop["entity"]}"\n')
                assert hop["fact"] in passage
                assert hop["answer"] in hop["fact"] and hop["query"].startswith(hop["entity"])
            assert row["question"] not in questions
            questions.add(row["question"])


def test_names_are_invented_from_the_syllable_inventory(world):
    out, _ = world
    titles = [d["contents"].split("\n")[0].strip('"') for d in load_corpus(out / "corpus.jsonl")]
    assert len(set(titles)) == len(titles)
    for title in titles:
        assert re.fullmatch(r"[A-Z][a-z]+( [a-zA-Z]+)*", title), title


def test_every_hop_fact_is_found_first_by_bm25(world, retriever):
    out, _ = world
    hops = [hop for split in ("train", "dev", "test")
            for row in load_qa(out / f"{split}.jsonl") for hop in row.extra_info["hops"]]
    results = retriever.retrieve([hop["query"] for hop in hops], 3)
    assert all(res[0].id == hop["passage_id"] for res, hop in zip(results, hops))


def test_oracle_has_the_exact_shape_and_answers_right(world, retriever):
    out, _ = world
    rows = load_qa(out / "dev.jsonl")
    row = next(r for r in rows if len(r.extra_info["hops"]) == 2)
    expected = ""
    for hop in row.extra_info["hops"]:
        docs = format_documents(retriever.retrieve([hop["query"]], 3)[0], REFINE_TEMPLATE)
        expected += f"<search> {hop['query']} </search>{docs}<refine> {hop['fact']} </refine>\n"
    expected += f"<answer> {row.golden_answers[0]} </answer>"
    assert oracle_response(row, retriever) == expected

    texts = oracle_texts(rows, retriever)
    assert all(exact_match(extract_answer(t), r.golden_answers) == 1.0 for t, r in zip(texts, rows))
    # A raw dict row works too.
    raw = json.loads((out / "dev.jsonl").read_text().splitlines()[0])
    assert oracle_response(raw, retriever) == texts[0]


def test_oracle_with_the_search_r1_template_has_no_refine(world, retriever):
    row = load_qa(world[0] / "dev.jsonl")[0]
    text = oracle_response(row, retriever, template=SEARCH_R1_TEMPLATE)
    assert "<refine>" not in text and "<documents>" not in text
    assert text.count("<information>") == len(row.extra_info["hops"])
    assert text.endswith(f"<answer> {row.golden_answers[0]} </answer>")


def test_query_noise_is_reproducible_and_changes_trajectories(world, retriever):
    rows = load_qa(world[0] / "train.jsonl")[:40]
    noisy = oracle_texts(rows, retriever, query_noise=1.0)
    assert noisy == oracle_texts(rows, retriever, query_noise=1.0)
    clean = oracle_texts(rows, retriever)
    assert sum(a != b for a, b in zip(noisy, clean)) >= len(rows) // 2
    assert any(NO_INFORMATION in t for t in noisy)
    assert all(extract_answer(t) for t in noisy)
    seeded = [oracle_response(r, retriever, query_noise=0.5, rng=random.Random(1)) for r in rows]
    assert seeded == [oracle_response(r, retriever, query_noise=0.5, rng=random.Random(1))
                      for r in rows]


def test_world_texts_cover_passages_prompts_and_tags(world):
    texts = list(world_texts(world[0]))
    joined = "\n".join(texts)
    assert all(isinstance(t, str) and t for t in texts)
    for needle in ("<search>", "</documents>", "<refine>", "<answer>", "<information>",
                   "Doc 1(Title:"):
        assert needle in joined


def test_world_build_command(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="igsearch")
    add_world_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["world", "build", "--seed", "1", "--out", str(tmp_path),
                              "--entities", "60", "--no-parquet"])
    assert args.func(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["seed"] == 1 and summary["n_passages"] == 60
    assert (tmp_path / "manifest.json").exists() and not (tmp_path / "train.parquet").exists()


def test_too_small_a_world_is_refused(tmp_path):
    with pytest.raises(ValueError, match="at least 30"):
        build_world(tmp_path, n_entities=10)


def test_early_answer_stops_after_a_hop_and_answers_the_bridge_entity(world, retriever):
    rows = load_qa(world[0] / "train.jsonl")
    multi = [r for r in rows if len(r.extra_info["hops"]) > 1][:20]
    single = [r for r in rows if len(r.extra_info["hops"]) == 1][:10]
    for row in multi:
        text = oracle_response(row, retriever, early_answer=1.0)
        assert text.count("<search>") == 1
        assert extract_answer(text) == row.extra_info["hops"][0]["answer"]
        assert exact_match(extract_answer(text), row.golden_answers) == 0.0
    for row in single:  # nothing to stop early from
        assert oracle_response(row, retriever, early_answer=1.0) == oracle_response(row, retriever)
    stopped = sum(oracle_response(r, retriever, early_answer=0.5).count("<search>") < len(r.extra_info["hops"])
                  for r in multi)
    assert 3 <= stopped <= 17


def test_disjoint_world_uses_no_name_word_of_the_other(world, tmp_path):
    from igsearch.world.build import world_name_words

    other = build_world(tmp_path / "other", seed=4, n_entities=SMALL, parquet=False, disjoint_from=[world[0]])
    from igsearch.world.graph import BOOK_NOUNS, COMPANY_SUFFIXES, FILM_NOUNS

    fixed = {w.lower() for w in (*BOOK_NOUNS, *COMPANY_SUFFIXES, *FILM_NOUNS, "of")}
    words = world_name_words(world[0]) - fixed
    assert len(words) > SMALL and not words & world_name_words(tmp_path / "other")
    assert other["disjoint_from"] == [json.loads((world[0] / "manifest.json").read_text())["files"]["corpus.jsonl"]]
    again = build_world(tmp_path / "again", seed=4, n_entities=SMALL, parquet=False, disjoint_from=[world[0]])
    assert (tmp_path / "again" / "corpus.jsonl").read_bytes() == (tmp_path / "other" / "corpus.jsonl").read_bytes()
    assert again["files"] == other["files"]


def test_policy_build_command_builds_the_named_size(tmp_path, capsys):
    from igsearch.cli import main
    from igsearch.policy.tiny import policy_shape
    from igsearch.warmstart import WarmStartConfig

    build_world(tmp_path / "world", seed=0, n_entities=40)
    assert main(["policy", "build", "--world", str(tmp_path / "world"), "--out", str(tmp_path / "p"),
                 "--vocab-size", "400"]) == 0
    config = json.loads((tmp_path / "p" / "config.json").read_text())
    default = policy_shape(WarmStartConfig.policy_size)
    assert (config["hidden_size"], config["num_hidden_layers"]) == (default["hidden_size"], default["num_hidden_layers"])
    assert main(["policy", "build", "--world", str(tmp_path / "world"), "--out", str(tmp_path / "q"),
                 "--vocab-size", "400", "--size", "large"]) == 0
    assert json.loads((tmp_path / "q" / "config.json").read_text())["hidden_size"] == policy_shape("large")["hidden_size"]
    with pytest.raises(SystemExit):
        main(["policy", "build", "--world", str(tmp_path / "world"), "--out", str(tmp_path / "r"), "--size", "huge"])
    assert "invalid choice: 'huge'" in capsys.readouterr().err


def test_distractor_demonstrator_reads_both_and_follows_the_lookalike(world, retriever):
    """With distractor q the demonstrator's refine after a non-final hop states the fact and its look-alike;
    q = 1 follows the look-alike (a wrong answer, as many searches as the oracle), q = 0 is the oracle."""
    from igsearch.world.passages import find_lookalike

    rows = load_qa(world[0] / "train.jsonl")
    multi = [r for r in rows if len(r.extra_info["hops"]) > 1]
    single = [r for r in rows if len(r.extra_info["hops"]) == 1][:10]
    with_lookalike = wrong = 0
    for row in multi[:40]:
        oracle = oracle_response(row, retriever, topk=2)
        astray = oracle_response(row, retriever, topk=2, distractor=1.0)
        assert oracle_response(row, retriever, topk=2, distractor=0.0) == oracle
        first = row.extra_info["hops"][0]
        docs = [p.contents for p in retriever.retrieve([f"{first['entity']} {RELATIONS[first['relation']].word}"], 2)[0]]
        lookalike = find_lookalike(docs, first["relation"], first["entity"])
        if lookalike is None:
            continue
        with_lookalike += 1
        refine = astray.split("<refine>")[1].split("</refine>")[0]
        assert lookalike[0] in refine and first["fact"] in refine
        assert astray.split("<search>")[2].strip().startswith(lookalike[1])
        wrong += exact_match(extract_answer(astray), row.golden_answers) == 0.0  # a chain can rejoin the right one
        assert astray.count("<search>") <= oracle.count("<search>")
        assert exact_match(extract_answer(oracle), row.golden_answers) == 1.0
    assert with_lookalike >= 10 and wrong >= 0.7 * with_lookalike
    for row in single:  # no next entity to choose
        assert oracle_response(row, retriever, distractor=1.0) == oracle_response(row, retriever)
    followed = sum(exact_match(extract_answer(oracle_response(r, retriever, topk=2, distractor=0.5)), r.golden_answers) == 0
                   for r in multi[:40])
    assert 5 <= followed <= 35
