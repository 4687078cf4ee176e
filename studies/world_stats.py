"""Cheap statistics of the demo's worlds, per world seed and hop count, that need no training (issue #38).

The warm start of world seed 2 reached test EM 0.353 against 0.481 on world 0; before methods are compared
there, this asks what differs between the worlds. For world seeds 0..4 (the demo's world: 800 entities,
``igsearch.warmstart.world_split_sizes(800)``, built by ``igsearch.world.build_world`` exactly as
``build_warm_start`` builds it) it measures:

- passages: length in whitespace words and in tokens of the world's tiny BPE tokenizer
  (``igsearch.policy.tiny.build_tokenizer`` on ``igsearch.world.texts.world_texts``, as ``build_tiny_policy``
  trains it), and the tokens per entity name;
- names: invented name words that are confusable with another (one edit apart: a shared one-deletion
  variant) or a prefix of another, and entities sharing a name word;
- look-alikes: the non-final hops whose gold passage names a look-alike (``find_lookalike``), and the share
  of the look-alike demonstrator's (p 0.6) demonstrations that end at the gold answer;
- relation mix: the relations of every hop and of the last hop;
- BM25: the oracle's query of every hop (``"<subject> <relation word>"``) against the world's corpus:
  recall@1/2/3 of the gold passage, whether the fact is readable (``find_fact``) in the top 2, and whether
  the final answer string is in the last hop's top 2;
- SFT: the warm start's demonstrations (``igsearch.train.sft.build_sft_examples`` on the warm-up split with
  the demo's recipe): their response length, the share cut at ``max_len``, the rollout settings they imply
  (``sft_rollout_settings``), and how often the evaluation questions' gold passages appear in them.

Statistics are given over all questions of the world (``all``) and over its test split (``test``).

    PYTHONPATH=. python studies/world_stats.py            # seeds 0-4 -> studies/results/world_stats.{json,md}
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
HOPS = (1, 2, 3)


def deletion_variants(word: str) -> set[str]:
    """``word`` with one letter deleted, every way (lower-cased): two words sharing one are one edit apart
    (a substitution, an insertion or deletion, or an adjacent swap) or equal."""
    w = word.lower()
    return {w[:i] + w[i + 1:] for i in range(len(w))}


def confusable_words(words) -> tuple[set[str], set[str]]:
    """(words one edit from another word, words that are a proper prefix of another word), lower-cased."""
    words = sorted({w.lower() for w in words})
    by_variant: dict[str, set[str]] = {}
    for w in words:
        for v in deletion_variants(w) | {w}:
            by_variant.setdefault(v, set()).add(w)
    near = {w for group in by_variant.values() if len(group) > 1 for w in group}
    prefix = {a for a, b in zip(words, words[1:]) if b.startswith(a)}
    # a sorted neighbour may not be the only extension: check every later word sharing the first letters
    for i, a in enumerate(words):
        for b in words[i + 1:]:
            if not b.startswith(a[:1]):
                break
            if b.startswith(a) and b != a:
                prefix.add(a)
                break
    return near, prefix


def demonstrator_success(lookalike_hops: int, distractor: float) -> float:
    """Probability that the look-alike demonstrator reaches the gold answer: it follows each of the
    ``lookalike_hops`` look-alikes it meets with probability ``distractor``."""
    return (1.0 - distractor) ** lookalike_hops


def _mean(xs) -> float | None:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else None


def world_stats(seed: int, work: Path, *, entities: int = 800) -> dict:
    """Every statistic of the world of ``seed`` (built under ``work``)."""
    from igsearch.data.loaders import load_corpus, load_qa
    from igsearch.policy.tiny import build_tokenizer
    from igsearch.retrieval.bm25 import BM25Retriever
    from igsearch.train.sft import build_sft_examples, sft_rollout_settings
    from igsearch.warmstart import DEMONSTRATORS, WarmStartConfig, world_split_sizes
    from igsearch.world import build_world
    from igsearch.world.graph import generate_entities
    from igsearch.world.passages import _FACT_PATTERNS, find_fact, find_lookalike
    from igsearch.world.texts import world_texts

    t0 = time.perf_counter()
    cfg = replace(WarmStartConfig(), entities=entities, distractor=DEMONSTRATORS["lookalike"])
    world = work / f"world{seed}"
    manifest = build_world(world, seed=seed, n_entities=entities,
                           split_sizes=world_split_sizes(entities, cfg.eval_split_size))
    # the same entities build_world drew (its first use of this rng)
    ents = generate_entities(random.Random(f"igsearch-world-{seed}"), entities)
    docs = load_corpus(world / "corpus.jsonl")
    contents = {d["id"]: d["contents"] for d in docs}
    splits = {name: load_qa(world / f"{name}.jsonl") for name in manifest["splits"]}
    tokenizer = build_tokenizer(world_texts(world), vocab_size=cfg.vocab_size)
    retriever = BM25Retriever.build(docs)

    # passages and names
    n_tok = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    words = [len(d["contents"].split()) for d in docs]
    toks = [n_tok(d["contents"]) for d in docs]
    name_toks = [n_tok(" " + e.name) for e in ents]
    invented = {w for e in ents for w in e.name.split() if w[0].isupper() and w.lower() not in
                {"of"}}
    # template nouns (Dawn, Songs, Works, ...) are shared on purpose; invented words are the rest
    shared_word = Counter(w for e in ents for w in set(e.name.split()))
    template_words = {w for w, c in shared_word.items() if c > 1}
    invented -= template_words
    near, prefix = confusable_words(invented)
    ent_confusable = sum(any(w.lower() in near or w.lower() in prefix for w in e.name.split()) for e in ents)
    passage = {
        "words_mean": statistics.mean(words), "words_p90": sorted(words)[int(0.9 * len(words))],
        "tokens_mean": statistics.mean(toks), "tokens_p90": sorted(toks)[int(0.9 * len(toks))],
        "tokens_max": max(toks),
        "tokens_mean_by_kind": {k: statistics.mean(n_tok(contents[str(e.index)]) for e in ents if e.kind == k)
                                for k in sorted({e.kind for e in ents})},
        "name_tokens_mean": statistics.mean(name_toks),
    }
    word_toks = [n_tok(" " + w) for w in invented]
    names = {
        "invented_words": len(invented),
        "tokens_per_invented_word": statistics.mean(word_toks),
        "single_token_word_share": _mean(t == 1 for t in word_toks),
        "duplicate_names": len(ents) - len({e.name.lower() for e in ents}),
        "one_edit_words": len(near), "prefix_words": len(prefix),
        "share_entities_confusable": ent_confusable / len(ents),
        "entities_sharing_a_template_word": sum(any(w in template_words for w in e.name.split()) for e in ents),
        "kinds": Counter(e.kind for e in ents),
    }
    # how many passages mention each entity's name (hard negatives for its queries)
    mentions = Counter()
    lowered = [d["contents"].lower() for d in docs]
    name_of = {str(e.index): e.name.lower() for e in ents}

    # BM25 of every hop of every question, in one batch
    queries, keys = [], []
    for split, rows in splits.items():
        for r, row in enumerate(rows):
            for h, hop in enumerate(row.extra_info["hops"]):
                queries.append(hop["query"])
                keys.append((split, r, h))
    ranked = retriever.retrieve(queries, 3)
    hop_results: dict[tuple, list] = {}
    for key, passages in zip(keys, ranked):
        hop_results[key] = passages

    scopes = {"all": list(splits), "test": ["test"], "warmup": ["warmup"]}
    per_scope: dict[str, dict] = {}
    for scope, names_ in scopes.items():
        out = {}
        for n_hops in HOPS:
            hop_recs, q_recs = [], []
            for split in names_:
                for r, row in enumerate(splits[split]):
                    hops = row.extra_info["hops"]
                    if len(hops) != n_hops:
                        continue
                    la = 0
                    for h, hop in enumerate(hops):
                        got = hop_results[(split, r, h)]
                        ids = [p.id for p in got]
                        top2 = [p.contents for p in got[:2]]
                        gold_text = contents[hop["passage_id"]]
                        has_la = h < n_hops - 1 and find_lookalike([gold_text], hop["relation"], hop["entity"]) is not None
                        la += has_la
                        if hop["passage_id"] not in mentions:
                            mentions[hop["passage_id"]] = sum(name_of[hop["passage_id"]] in t for t in lowered) - 1
                        hop_recs.append({
                            "r1": ids[:1] == [hop["passage_id"]], "r2": hop["passage_id"] in ids[:2],
                            "r3": hop["passage_id"] in ids[:3],
                            "fact2": find_fact(top2, hop["relation"], hop["entity"]) is not None,
                            "rival2": any(_FACT_PATTERNS[hop["relation"]].search(p.contents) is not None
                                          for p in got[:2] if p.id != hop["passage_id"]),
                            "rival_names_subject2": any(hop["entity"].lower() in p.contents.lower()
                                                        for p in got[:2] if p.id != hop["passage_id"]),
                            "relation": hop["relation"], "lookalike": has_la,
                            "mentions": mentions[hop["passage_id"]],
                        })
                    last = hop_results[(split, r, n_hops - 1)]
                    answers = [a.lower() for a in row.golden_answers]
                    q_recs.append({
                        "answer_in_top2": any(a in p.contents.lower() for p in last[:2] for a in answers),
                        "all_hops_r2": all(hop["passage_id"] in [p.id for p in hop_results[(split, r, h)][:2]]
                                           for h, hop in enumerate(hops)),
                        "lookalike_hops": la,
                        "demo_success": demonstrator_success(la, cfg.distractor),
                        "last_relation": hops[-1]["relation"],
                        "question_tokens": n_tok(row.question),
                    })
            if not q_recs:
                continue
            out[n_hops] = {
                "questions": len(q_recs), "hops": len(hop_recs),
                "recall@1": _mean(x["r1"] for x in hop_recs), "recall@2": _mean(x["r2"] for x in hop_recs),
                "recall@3": _mean(x["r3"] for x in hop_recs), "fact_in_top2": _mean(x["fact2"] for x in hop_recs),
                "rival_fact_in_top2": _mean(x["rival2"] for x in hop_recs),
                "rival_names_subject_in_top2": _mean(x["rival_names_subject2"] for x in hop_recs),
                "rival_fact_in_top2_by_relation": {
                    rel: _mean(x["rival2"] for x in hop_recs if x["relation"] == rel)
                    for rel in sorted({x["relation"] for x in hop_recs})},
                "all_hops_recall@2": _mean(x["all_hops_r2"] for x in q_recs),
                "answer_in_top2": _mean(x["answer_in_top2"] for x in q_recs),
                "lookalike_hops_mean": _mean(x["lookalike_hops"] for x in q_recs),
                "demo_success": _mean(x["demo_success"] for x in q_recs),
                "gold_mentions_mean": _mean(x["mentions"] for x in hop_recs),
                "question_tokens_mean": _mean(x["question_tokens"] for x in q_recs),
                "relations": dict(Counter(x["relation"] for x in hop_recs).most_common()),
                "last_relations": dict(Counter(x["last_relation"] for x in q_recs).most_common()),
                "recall@2_by_relation": {rel: _mean(x["r2"] for x in hop_recs if x["relation"] == rel)
                                         for rel in sorted({x["relation"] for x in hop_recs})},
            }
        per_scope[scope] = out

    # the warm start's demonstrations: the demo's recipe on the warm-up split
    examples = build_sft_examples(splits["warmup"], tokenizer, retriever, template="refine", topk=list(cfg.sft_topks),
                                  distractor=cfg.distractor, early_answer=cfg.early_answer,
                                  query_noise=cfg.query_noise, max_len=cfg.max_len, seed=0)
    full = build_sft_examples(splits["warmup"], tokenizer, retriever, template="refine", topk=list(cfg.sft_topks),
                              distractor=cfg.distractor, early_answer=cfg.early_answer,
                              query_noise=cfg.query_noise, max_len=None, seed=0)
    cut = Counter(e.hops for e, f in zip(examples, full) if len(f.ids) > len(e.ids))
    by_hops = Counter(e.hops for e in examples)
    settings = sft_rollout_settings(examples, tokenizer, template="refine", topk=list(cfg.sft_topks),
                                    max_len=cfg.max_len)
    # passages the demonstrations show (the document LM loss) and their coverage of dev/test gold passages
    shown = Counter()
    for row in splits["warmup"]:
        k = random.Random(f"sft-topk-0-{row.id}").choice(list(cfg.sft_topks))
        for h, hop in enumerate(row.extra_info["hops"]):
            for p in retriever.retrieve([hop["query"]], k)[0]:
                shown[p.id] += 1
    # names the demonstrations make the policy write (each hop's object, in the refine and the answer)
    written = Counter(hop["answer"] for row in splits["warmup"] for hop in row.extra_info["hops"])
    coverage = {}
    for split in ("dev", "test"):
        golds = [hop["passage_id"] for row in splits[split] for hop in row.extra_info["hops"]]
        finals = [row.extra_info["hops"][-1]["answer"] for row in splits[split]]
        coverage[split] = {"gold_passages_shown_share": _mean(shown[g] > 0 for g in golds),
                           "gold_passage_shows_mean": _mean(shown[g] for g in golds),
                           "answer_written_in_sft_share": _mean(written[a] > 0 for a in finals),
                           "answer_written_in_sft_mean": _mean(written[a] for a in finals),
                           "answer_tokens_mean": _mean(n_tok(" " + a) for a in finals)}
    sft = {
        "examples": len(examples), "examples_by_hops": dict(sorted(by_hops.items())),
        "cut_share_by_hops": {h: cut[h] / by_hops[h] for h in sorted(by_hops)},
        "response_tokens_mean_by_hops": {h: _mean(len(e.ids) - e.prompt_len for e in full if e.hops == h)
                                         for h in sorted(by_hops)},
        "response_tokens_max": max(len(e.ids) - e.prompt_len for e in full),
        "rollout_settings": settings,
        "passages_shown": len(shown), "passages_shown_share": len(shown) / len(docs),
        "coverage": coverage,
        "epochs_per_example": cfg.steps * cfg.batch_size / len(examples),
    }
    return {"seed": seed, "manifest_hops": manifest["hops"], "passages": passage, "names": names,
            "per_hops": per_scope, "sft": sft, "seconds": time.perf_counter() - t0}


def eval_records(sft_dir, world_dir, splits=("dev", "test"), limit: int | None = None,
                 topk: int | None = None) -> dict[str, list[dict]]:
    """Greedy rollouts of the warm start ``sft_dir`` on ``world_dir``'s splits under the model folder's rollout
    settings (as ``igsearch eval`` runs them, on the HF engine; ``topk`` overrides the passages per search): one
    record per question with its chain, the entities of its path, the prediction, EM and the response text."""
    import torch

    from igsearch.data.loaders import load_corpus, load_qa
    from igsearch.data.metrics import exact_match
    from igsearch.data.prompts import get_template, question_prompt
    from igsearch.policy.load import load_tokenizer
    from igsearch.retrieval.bm25 import BM25Retriever
    from igsearch.rollout.agent import RolloutConfig, SearchAgent
    from igsearch.rollout.engine import build_engine
    from igsearch.rollout.trained import read_rollout_settings

    torch.set_num_threads(1)
    settings = read_rollout_settings(sft_dir)
    template = get_template(settings.pop("template"))
    settings.pop("source", None)
    if topk is not None:
        settings["topk"] = topk
    cfg = RolloutConfig(**settings, rollouts_per_question=1, temperature=0.0)
    tokenizer = load_tokenizer(sft_dir)
    agent = SearchAgent(build_engine("hf", sft_dir, dtype="float32"),
                        BM25Retriever.build(load_corpus(Path(world_dir) / "corpus.jsonl")), tokenizer, cfg,
                        template=template)
    out = {}
    for split in splits:
        rows = load_qa(Path(world_dir) / f"{split}.jsonl", limit=limit)
        recs = []
        for lo in range(0, len(rows), 64):
            batch = rows[lo:lo + 64]
            trajs, _ = agent.run([question_prompt(tokenizer, r, template) for r in batch],
                                 [r.golden_answers for r in batch], [r.data_source for r in batch], seed=lo)
            for r, t in zip(batch, trajs):
                hops = r.extra_info["hops"]
                recs.append({"id": r.id, "hops": r.data_source, "chain": [h["relation"] for h in hops],
                             "path": [h["entity"] for h in hops] + [hops[-1]["answer"]], "gold": r.golden_answers,
                             "pred": t.answer, "finish": t.finish_reason,
                             "em": exact_match(t.answer or "", r.golden_answers) if t.answer is not None else 0.0,
                             "text": tokenizer.decode(t.response_ids)})
        out[split] = recs
    return out


def classify_failure(rec: dict, passages: dict[str, str]) -> str:
    """The first thing that went wrong in an eval record (:func:`eval_records`), hop by hop: ``passages`` maps
    lower-cased entity names to their passages. ``correct`` when EM is 1."""
    import re

    from igsearch.world.graph import RELATIONS
    from igsearch.world.passages import find_lookalike

    if rec["em"]:
        return "correct"
    queries = [q.strip() for q in re.findall(r"<search>(.*?)</search>", rec["text"], flags=re.S)]
    refines = re.findall(r"<refine>(.*?)</refine>", rec["text"], flags=re.S)
    path, chain = rec["path"], rec["chain"]
    for k, rel in enumerate(chain):
        if k >= len(queries):
            return "answered too early" if rec["pred"] is not None else "no answer"
        entity, _, word = queries[k].rpartition(" ")
        if queries[k] == f"{path[k]} {RELATIONS[rel].word}":
            if k < len(refines) and path[k + 1].lower() not in refines[k].lower():
                return "misread: refine lacks the fact"
            continue
        if entity.lower() == path[k].lower():
            return "wrong relation word"
        if k > 0:
            lookalike = find_lookalike([passages.get(path[k - 1].lower(), "")], chain[k - 1], path[k - 1])
            if lookalike and entity.lower() == lookalike[1].lower():
                return "followed the look-alike"
        return "searched another entity" if entity.lower() in passages else "miscopied name in query"
    if rec["pred"] is None:
        return "no answer"
    if len(queries) > len(chain):
        return "searched too much"
    return "answered another entity" if rec["pred"].lower() in passages else "miscopied answer"


def failure_summary(records: dict[str, list[dict]], world_dir) -> dict:
    """Per split and hop count: EM, failure classes (:func:`classify_failure`) and, for 1-hop questions, EM per
    relation."""
    from igsearch.data.loaders import load_corpus

    passages = {d["contents"].partition("\n")[0].strip('"').lower(): d["contents"]
                for d in load_corpus(Path(world_dir) / "corpus.jsonl")}
    out = {}
    for split, recs in records.items():
        per = {}
        for h in HOPS:
            xs = [r for r in recs if r["hops"] == f"world_{h}hop"]
            if xs:
                per[h] = {"n": len(xs), "em": _mean(r["em"] for r in xs),
                          "failures": dict(Counter(classify_failure(r, passages) for r in xs).most_common())}
        one = [r for r in recs if r["hops"] == "world_1hop"]
        per["em_1hop_by_relation"] = {rel: {"n": sum(r["chain"][-1] == rel for r in one),
                                            "em": _mean(r["em"] for r in one if r["chain"][-1] == rel)}
                                      for rel in sorted({r["chain"][-1] for r in one})}
        per["overall"] = _mean(r["em"] for r in recs)
        out[split] = per
    return out


#: failure classes the look-alike demonstrator itself shows (it follows look-alikes; a chain gone astray may end early)
DEMONSTRATED = ("followed the look-alike", "answered too early")


def warm_start_tables(summaries: dict) -> str:
    """Markdown: EM per split and hop count of each evaluated warm start, then its failures over dev and test
    together, split into those the demonstrator shows (:data:`DEMONSTRATED`) and the reading and protocol errors."""
    lines = ["| warm start | split | 1-hop | 2-hop | 3-hop | overall |", "|---|---|---:|---:|---:|---:|"]
    for label, entry in summaries.items():
        for split, per in entry["summary"].items():
            lines.append(f"| {label} | {split} | " + " | ".join(_f(per[h]["em"]) if h in per else "-" for h in HOPS)
                         + f" | {_f(per['overall'])} |")
    classes = sorted({c for e in summaries.values() for per in e["summary"].values() for h in HOPS if h in per
                      for c in per[h]["failures"]} - {"correct"}, key=lambda c: (c not in DEMONSTRATED, c))
    lines += ["", "Dev and test together, questions per first failure:", "",
              "| warm start | hops | n | correct | " + " | ".join(classes) + " | demonstrated | reading and protocol |",
              "|---|---:|---:|---:|" + "---:|" * (len(classes) + 2)]
    for label, entry in summaries.items():
        for h in HOPS:
            total = Counter()
            n = 0
            for per in entry["summary"].values():
                if h in per:
                    total.update(per[h]["failures"])
                    n += per[h]["n"]
            demo = sum(total[c] for c in DEMONSTRATED)
            other = n - total["correct"] - demo
            lines.append(f"| {label} | {h} | {n} | {total['correct']} | " + " | ".join(str(total[c]) for c in classes)
                         + f" | {demo} | {other} |")
    return "\n".join(lines) + "\n"


def _f(x, digits=3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def markdown_tables(results: list[dict]) -> str:
    lines = ["| world | hops | questions | passage tokens (mean / p90) | confusable names | look-alike hops / q |"
             " demo success | recall@1 | recall@2 | recall@3 | fact in top 2 | all hops @2 | answer in top 2 |"
             " rival fact in top 2 | rival names subject |"
             " SFT cut at max_len |",
             "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for res in results:
        p, n = res["passages"], res["names"]
        for h in HOPS:
            s = res["per_hops"]["all"].get(h)
            if s is None:
                continue
            lines.append(
                f"| {res['seed']} | {h} | {s['questions']} | {p['tokens_mean']:.1f} / {p['tokens_p90']} | "
                f"{n['share_entities_confusable']:.3f} | {s['lookalike_hops_mean']:.2f} | {s['demo_success']:.3f} | "
                f"{_f(s['recall@1'])} | {_f(s['recall@2'])} | {_f(s['recall@3'])} | {_f(s['fact_in_top2'])} | "
                f"{_f(s['all_hops_recall@2'])} | {_f(s['answer_in_top2'])} | "
                f"{_f(s['rival_fact_in_top2'])} | {_f(s['rival_names_subject_in_top2'])} | "
                f"{res['sft']['cut_share_by_hops'].get(h, 0):.3f} |")
    lines += ["", "Test split only (the questions behind the EM figures):", "",
              "| world | hops | questions | recall@2 | all hops @2 | answer in top 2 | rival fact in top 2 |"
              " look-alike hops / q | demo success |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for res in results:
        for h in HOPS:
            s = res["per_hops"]["test"].get(h)
            if s is None:
                continue
            lines.append(f"| {res['seed']} | {h} | {s['questions']} | {_f(s['recall@2'])} | "
                         f"{_f(s['all_hops_recall@2'])} | {_f(s['answer_in_top2'])} | {_f(s['rival_fact_in_top2'])} | "
                         f"{s['lookalike_hops_mean']:.2f} | {s['demo_success']:.3f} |")
    lines += ["", "Per world: names, passages and the SFT demonstrations (warm-up split, the demo's recipe):", "",
              "| world | invented words | one-edit words | prefix words | name tokens | passage words | "
              "passage tokens max | SFT examples | response tokens (1/2/3 hops) | max_response_tokens | "
              "max_new_tokens_per_turn | dev/test gold passages shown in SFT |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|"]
    for res in results:
        p, n, s = res["passages"], res["names"], res["sft"]
        rt = " / ".join(f"{s['response_tokens_mean_by_hops'][h]:.0f}" for h in sorted(s["response_tokens_mean_by_hops"]))
        cov = " / ".join(f"{s['coverage'][k]['gold_passages_shown_share']:.3f}" for k in ("dev", "test"))
        lines.append(f"| {res['seed']} | {n['invented_words']} | {n['one_edit_words']} | {n['prefix_words']} | "
                     f"{p['name_tokens_mean']:.2f} | {p['words_mean']:.1f} | {p['tokens_max']} | {s['examples']} | {rt} | "
                     f"{s['rollout_settings']['max_response_tokens']} | "
                     f"{s['rollout_settings']['max_new_tokens_per_turn']} | {cov} |")
    lines += ["", "Last-hop relation mix of the test split, 1-hop questions (count):", "",
              "| world | " + " | ".join(sorted({r for res in results for r in res['per_hops']['test'][1]['last_relations']}))
              + " |"]
    rels = sorted({r for res in results for r in res["per_hops"]["test"][1]["last_relations"]})
    lines.append("|---:|" + "---:|" * len(rels))
    for res in results:
        lr = res["per_hops"]["test"][1]["last_relations"]
        lines.append(f"| {res['seed']} | " + " | ".join(str(lr.get(r, 0)) for r in rels) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--entities", type=int, default=800)
    ap.add_argument("--out", default=str(RESULTS / "world_stats"), help="results stem (.json, .md)")
    ap.add_argument("--warm-start", action="append", default=[], metavar="LABEL=SFT_DIR:WORLD_DIR",
                    help="instead of the statistics: evaluate these warm starts greedily on dev and test and classify "
                         "their failures (-> <out>_warmstarts.json)")
    ap.add_argument("--limit", type=int, default=None, help="with --warm-start: the first N questions per split")
    ap.add_argument("--topk", type=int, default=None,
                    help="with --warm-start: passages per search (default: the model folder's); a LABEL=...@K "
                         "spec sets it for one warm start")
    args = ap.parse_args(argv)
    from igsearch.machine import describe_cpu

    if args.warm_start:
        summaries = {}
        for spec in args.warm_start:
            label, _, dirs = spec.partition("=")
            dirs, _, k = dirs.partition("@")
            sft, _, world = dirs.partition(":")
            topk = int(k) if k else args.topk
            t0 = time.perf_counter()
            summaries[label] = {"sft": sft, "world": world, "topk": topk,
                                "summary": failure_summary(eval_records(sft, world, limit=args.limit, topk=topk),
                                                           world)}
            summaries[label]["seconds"] = time.perf_counter() - t0
            print(label, json.dumps(summaries[label]["summary"], indent=1), flush=True)
        path = Path(args.out + "_warmstarts.json")
        meta = {"machine": describe_cpu(), "date": time.strftime("%Y-%m-%d")}
        path.write_text(json.dumps({**meta, "warm_starts": summaries}, indent=1) + "\n")
        table = warm_start_tables(summaries)
        print(table)
        path.with_suffix(".md").write_text(f"# Warm starts evaluated by studies/world_stats.py --warm-start\n\n"
                                           f"{meta['date']}, {meta['machine']}\n\n" + table)
        print(f"wrote {path} and {path.with_suffix('.md')}", file=sys.stderr)
        return 0

    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    results = []
    with tempfile.TemporaryDirectory(prefix="world-stats-") as tmp:
        for seed in seeds:
            res = world_stats(seed, Path(tmp), entities=args.entities)
            print(f"[world_stats] world {seed}: {res['seconds']:.0f} s", file=sys.stderr, flush=True)
            results.append(res)
    table = markdown_tables(results)
    print(table)
    meta = {"machine": describe_cpu(), "date": time.strftime("%Y-%m-%d"), "entities": args.entities,
            "seeds": seeds}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({**meta, "worlds": results}, indent=1, default=str) + "\n")
    tables = out.with_name(out.name + "_tables.md")
    tables.write_text(f"# World statistics (generated by studies/world_stats.py)\n\n{meta['date']}, "
                      f"{meta['machine']}\n\n" + table)
    print(f"wrote {out.with_suffix('.json')} and {tables}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
