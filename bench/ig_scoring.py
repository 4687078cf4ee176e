"""IG scoring benchmark: every IG scorer on the same rollouts, same process.

Batches of world rollouts (G rollouts x Q questions, a fixed or mixed number of search steps, N
random counterfactuals per step) are scored by ``compute_information_gain`` with
- ``naive``: every sequence on its own (the baseline);
- ``tree``: shared prefixes forwarded once;
- ``trunk``: only the tokens off the rollouts' keys/values, which are given (the trainer's update
  forward leaves them); the forward that would compute them for IG alone is timed apart;
- ``vllm`` (unless ``--no-vllm``): the vLLM rollout engine with prefix-cache reads, its cache reset
  and refilled with the rollouts before each timing (the state right after generation);
under the tiny policy shape and a ~0.5B Qwen2.5 shape (random weights). Reported per case: tokens
forwarded (real, non-pad), the branch-token floor (the tokens no forward of the rollouts has
computed: what any exact scorer must forward), wall time (median of ``--repeats``, scorers
interleaved, with min and max), peak memory and the max |IG difference| from the naive scorer.

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` during the phase; on the CPU, the
process resident-set high-water mark (Linux VmHWM, reset through /proc/self/clear_refs before the
phase) minus the resident set before it, i.e. the extra memory the phase needed.

The rollouts are oracle rollouts of the synthetic world (seed 0, built in a temporary directory;
BM25 retrieval, top 3 unless the case says otherwise, refine template) with query noise 0.35, one
``random.Random`` per rollout: each text is the chat prompt of a train question plus
``oracle_response``. The G rollouts of a question are distinct; they share the prompt and often
their first steps, and differ after a noisy query (a near-miss entity, a misspelling, missing
words; a query that finds nothing adds a clean retry step). "3 steps" keeps only rollouts of 3-hop
questions with exactly 3 ``<documents>`` blocks; "1-4 steps" cycles through 3-, 1- and 2-hop
questions and keeps rollouts of 1 to 4 steps. The tiny policy and the tokenizer are the project's
own (``igsearch.policy.tiny``, tokenizer trained on the world's text); the 0.5B shape has
Qwen2.5's 151936-entry vocabulary. ``--busy`` runs everything beside a process that keeps one core
busy.

Precision (``--precision``, igsearch.precision): by default every case runs in fp32 and in bf16 (fp32 weights,
the scorers under bf16 autocast, as the trainer runs them), interleaved; the bf16 rows add each scorer's
speed-up over fp32 and how far its step IG moved (max and p99 |dIG|, Spearman, sign agreement). The vLLM peer
runs in the row of ``auto``'s precision (the engine's weight dtype).

    python bench/ig_scoring.py --quick    # a few minutes on a laptop CPU
The last line is ``tokens_ratio_floor=<best exact / floor> time_ratio=<naive / best exact>
best=<scorer> best_seconds=... vllm_seconds=... vllm_ig_diff=... tokens_ratio=<naive/tree>
max_ig_diff=<exact scorers vs naive> bf16_speedup_<scorer>=... bf16_ig_spearman=...`` for the headline case
(tiny policy, 3 steps, N=3; the bf16 row when both precisions ran); the line
before it gives the same for the 0.5B shape, and ``default_scorer=<best>`` the scorer to use on
this device.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import torch

from igsearch.data.prompts import DOCS_OPEN, REFINE_TEMPLATE
from igsearch.ig import compute_information_gain
from igsearch.machine import describe_cpu
from igsearch.measure import device_name

RESULTS = Path(__file__).resolve().parent / "results"
WORLD_SEED = 0
QUERY_NOISE = 0.35
TOPK = 3


# ----------------------------------------------------------------------------- world rollouts


def load_world(seed=WORLD_SEED):
    """Build the world of ``seed`` in a temporary directory; return (train rows by hop count,
    BM25 retriever, tokenizer trained on the world's text)."""
    from igsearch.data.loaders import load_qa
    from igsearch.policy.tiny import build_tokenizer
    from igsearch.retrieval.bm25 import BM25Retriever
    from igsearch.world import build_world, world_texts

    with tempfile.TemporaryDirectory(prefix="ig_scoring-world-") as tmp:
        world = Path(tmp)
        build_world(world, seed, parquet=False)
        retriever = BM25Retriever.from_corpus(world / "corpus.jsonl")
        rows = load_qa(world / "train.jsonl")
        tokenizer = build_tokenizer(world_texts(world))
    by_hops: dict[int, list] = {}
    for row in rows:
        by_hops.setdefault(len(row.extra_info["hops"]), []).append(row)
    return by_hops, retriever, tokenizer


def make_rollouts(world, tokenizer, G, Q, steps, *, skip=0, noise=QUERY_NOISE, max_tries=64, topk=TOPK):
    """G distinct oracle rollouts for each of Q world questions; returns (texts, golds, step counts).

    ``steps``: an int (questions with that many hops, rollouts with exactly that many steps) or
    (lo, hi) (questions cycling through the hop counts lo..hi the world has, the most hops first,
    then the fewest, ...; rollouts of lo to hi steps). The first ``skip`` questions of each hop
    count are left out (the warm-up uses them). A question that does not give G such rollouts in
    ``max_tries`` draws is skipped.
    """
    from igsearch.world import oracle_response

    by_hops, retriever = world
    lo, hi = (steps, steps) if isinstance(steps, int) else steps
    hops = [h for h in sorted(by_hops) if lo <= h <= hi] if lo < hi else [lo]
    # extremes first (3, 1, 2 hops), so that even two questions span the range of step counts
    hop_cycle = itertools.cycle([hops[-1 - i // 2] if i % 2 == 0 else hops[i // 2] for i in range(len(hops))])
    pools = {h: iter(rows[skip:]) for h, rows in by_hops.items()}
    texts, golds, counts = [], [], []
    while len(texts) < G * Q:
        row = next(pools[next(hop_cycle)], None)
        if row is None:
            raise ValueError(f"the world has too few questions for {Q} groups of {G} rollouts "
                             f"of {steps} steps")
        group = {}
        for k in range(max_tries):
            rng = random.Random(f"ig-bench-{row.id}-{k}")
            response = oracle_response(row, retriever, template=REFINE_TEMPLATE, topk=topk,
                                       query_noise=noise, rng=rng)
            n = response.count(DOCS_OPEN)
            if lo <= n <= hi and response not in group:
                group[response] = n
                if len(group) == G:
                    break
        if len(group) < G:
            continue
        prompt = tokenizer.apply_chat_template(row.prompt, tokenize=False, add_generation_prompt=True)
        for response, n in group.items():
            texts.append(prompt + response)
            golds.append(list(row.golden_answers))
            counts.append(n)
    return texts, golds, counts


# ----------------------------------------------------------------------------- models


SHAPES = {
    "qwen2.5-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, head_dim=64, vocab_size=151936),
}
DIM_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim", "vocab_size")


def build_model(shape, tokenizer, layers=None, dtype=torch.float32, device="cpu"):
    """``tiny``: the project's tiny policy (``build_tiny_model``); otherwise a shape of SHAPES.
    Random weights, no gradients, eval mode, sdpa attention (what the tree scorer needs)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cut = {"num_hidden_layers": layers} if layers else {}
    if shape == "tiny":
        from igsearch.policy.tiny import build_tiny_model

        with torch.device(device):
            model = build_tiny_model(tokenizer, seed=0, **cut)
        model.config._attn_implementation = "sdpa"
    else:
        dims = {**SHAPES[shape], **cut}
        dims["vocab_size"] = dims["vocab_size"] or len(tokenizer)
        cfg = Qwen2Config(max_position_embeddings=8192, tie_word_embeddings=True, **dims)
        cfg._attn_implementation = "sdpa"
        torch.manual_seed(0)
        with torch.device(device):
            model = Qwen2ForCausalLM(cfg)
    for p in model.parameters():  # default init std 0.02 is fine; keep logits in a sane range
        p.requires_grad_(False)
    dims = {k: getattr(model.config, k) for k in DIM_KEYS}
    return model.to(dtype).eval(), dims


# ----------------------------------------------------------------------------- measurement


def _rss_kib():
    return int(re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def _hwm_kib():
    return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def _release_freed_memory():
    """Give freed heap pages back to the OS so the RSS baseline of a phase is not inflated."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass


def measure(fn, device):
    """Run fn(); return (result, seconds, peak MiB of extra memory the run needed)."""
    gc.collect()
    _release_freed_memory()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")
        base = _rss_kib() * 1024
    t0 = time.perf_counter()
    out = fn()
    if device == "cuda":
        torch.cuda.synchronize()
    secs = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else _hwm_kib() * 1024
    return out, secs, max(0, peak - base) / 2**20


EXACT = ("naive", "tree", "trunk")  # trainer-side scorers: the same IG to rounding
#: The tree and trunk scorers on the per-block torch path (``use_kernels=False``), timed beside the
#: default (native ops on a CPU that built them, Triton on CUDA) when the two differ.
TORCH_PATH = {"tree-torch": "tree", "trunk-torch": "trunk"}


def kernel_variants(model) -> tuple[str, ...]:
    """The ``TORCH_PATH`` scorers when the default path uses kernels (else they would repeat it)."""
    from igsearch.scoring.tree import kernels_by_default

    return tuple(TORCH_PATH) if kernels_by_default(model) else ()

NEIGHBOUR = r"""
import os, time
import numpy as np
a = np.random.rand(400, 400)
while True:
    a = (a @ a) / 400.0
"""


def trunk_ids(tokenizer, texts):
    """The rollouts' token ids (what the policy read and what vLLM's prefix cache holds)."""
    from igsearch.ig.context import encode_text

    return [encode_text(tokenizer, t) for t in texts]


def scorer_kwargs(label, model, engine=None, trunks=None) -> dict:
    """The keyword arguments of ``compute_information_gain`` that select scorer ``label``: a name of
    ``EXACT``, a ``TORCH_PATH`` variant, or "vllm" (a ``Scorer`` bound to the rollout engine)."""
    from igsearch.scoring import Scorer

    if label == "vllm":
        return {"scorer": Scorer("vllm", model, engine=engine)}
    kwargs = {"scorer": TORCH_PATH.get(label, label)}
    if label in TORCH_PATH:
        kwargs["scorer_options"] = {"use_kernels": False}
    if kwargs["scorer"] == "trunk":
        kwargs["trunks"] = trunks
    return kwargs


def run_case(name, model, tokenizer, texts, golds, n_random, device, repeats, precisions, engine=None,
             engine_precision=None):
    """Score one batch with every scorer under every precision (``igsearch.precision.Precision``),
    ``repeats`` times each, interleaved (so that a change of the machine's load hits every scorer and
    precision alike); the median timing is reported, with the spread. Returns one row per precision.

    trunk: the rollouts' keys/values are given (as the trainer's update forward leaves them, in the
    same precision); the forward that would compute them for IG alone is timed apart
    (``trunk_kv_seconds``). vllm (with ``engine``, in the row of ``engine_precision``, the engine's
    weight dtype): the prefix cache is reset and refilled with the rollouts before each timing, as
    generation leaves it."""
    from igsearch.scoring import compute_trunk_kv

    kw = dict(n_random=n_random, max_gold_variants=1, seed=0)
    ids = trunk_ids(tokenizer, texts)
    variants = kernel_variants(model)
    rows, kvs, igs, timings = {}, {}, {}, {}
    for prec in precisions:
        with torch.inference_mode(), prec.autocast():
            kvs[prec.name], kv_secs, _ = measure(lambda: compute_trunk_kv(model, ids), device)
        rows[prec.name] = {"case": name, "precision": prec.name, "rollouts": len(texts), "n_random": n_random,
                           "rollout_tokens": sum(map(len, ids)), "trunk_kv_seconds": kv_secs}
        igs[prec.name], timings[prec.name] = {}, {}
    for _ in range(repeats):
        for prec in precisions:
            row = rows[prec.name]
            with_vllm = engine is not None and prec.name == engine_precision
            for label in EXACT + variants + (("vllm",) if with_vllm else ()):
                options = scorer_kwargs(label, model, engine, kvs[prec.name])
                if label == "vllm":
                    engine.llm.reset_prefix_cache()
                    engine.continuation_logprobs(ids, [len(x) for x in ids])  # the rollouts, as generated
                with torch.inference_mode(), prec.autocast():
                    res, secs, peak = measure(
                        lambda: compute_information_gain(texts, golds, model, tokenizer, **options, **kw), device)
                timings[prec.name].setdefault(label, []).append((secs, peak))
                igs[prec.name][label] = res.step_ig
                row[label] = {
                    "tokens_forwarded": res.stats["tokens_forwarded"],
                    "padded_tokens": res.stats["padded_tokens"],
                    "n_sequences": res.stats["n_sequences"],
                    "n_forwards": res.stats["n_forwards"],
                }
                if label == "trunk":
                    row["branch_floor_tokens"] = res.stats["branch_floor_tokens"]
    for prec in precisions:
        summarize_case(rows[prec.name], igs[prec.name], timings[prec.name], variants)
    if "fp32" in rows and "bf16" in rows:
        compare_precisions(rows["fp32"], rows["bf16"], igs["fp32"], igs["bf16"])
    return list(rows.values())


def summarize_case(row, igs, timings, variants):
    """Fill ``row`` (one precision of a case) with each scorer's timing spread and the ratios between
    scorers, from ``igs[label]`` (step IG per rollout) and ``timings[label]`` ([(seconds, peak MiB)])."""
    for scorer, runs in timings.items():
        secs = sorted(t for t, _ in runs)
        row[scorer].update(seconds=statistics.median(secs), seconds_min=secs[0], seconds_max=secs[-1],
                           seconds_all=[t for t, _ in runs], peak_mib=max(p for _, p in runs))

    def max_diff(a, b):
        d = [abs(x - y) for ra, rb in zip(igs[a], igs[b]) for x, y in zip(ra, rb) if x is not None]
        return max(d) if d else 0.0
    row["steps_scored"] = sum(x is not None for r in igs["naive"] for x in r)
    row["max_ig_diff"] = max(max_diff("naive", s) for s in ("tree", "trunk") + variants)
    row["kernels"] = "default" if not variants else "native ops (tree-torch/trunk-torch: per-block torch path)"
    for label in variants:  # speed-up of the kernels over the torch path, same scorer
        row[f"kernel_speedup_{TORCH_PATH[label]}"] = row[label]["seconds"] / row[TORCH_PATH[label]]["seconds"]
    row["tokens_ratio"] = row["naive"]["tokens_forwarded"] / max(1, row["tree"]["tokens_forwarded"])
    row["time_ratio_tree"] = row["naive"]["seconds"] / row["tree"]["seconds"]
    row["mem_ratio"] = row["naive"]["peak_mib"] / max(1e-9, row["tree"]["peak_mib"])
    best = min(("tree", "trunk"), key=lambda s: row[s]["seconds"])
    row["best_exact"] = best
    row["time_ratio"] = row["naive"]["seconds"] / row[best]["seconds"]
    row["tokens_ratio_floor"] = row[best]["tokens_forwarded"] / max(1, row["branch_floor_tokens"])
    row["time_ratio_trunk_with_kv"] = row["naive"]["seconds"] / (row["trunk"]["seconds"] + row["trunk_kv_seconds"])
    if "vllm" in igs:
        row["vllm_ig_diff"] = max_diff("naive", "vllm")
        row["vllm_vs_best"] = row["vllm"]["seconds"] / row[best]["seconds"]


def compare_precisions(fp32, bf16, igs32, igs16):
    """Add to the bf16 row, per scorer, its speed-up over the same scorer in fp32 (``bf16_speedup``) and
    the exactness of its step IG against fp32's (``igsearch.stats.precision_agreement``)."""
    from igsearch.stats import precision_agreement

    bf16["bf16_speedup"], bf16["ig_vs_fp32"] = {}, {}
    for label in igs16:
        if label in fp32:
            bf16["bf16_speedup"][label] = fp32[label]["seconds"] / bf16[label]["seconds"]
            pairs = [(a, b) for ra, rb in zip(igs32[label], igs16[label]) for a, b in zip(ra, rb) if a is not None]
            bf16["ig_vs_fp32"][label] = precision_agreement([a for a, _ in pairs], [b for _, b in pairs])
    bf16["bf16_speedup_kv"] = fp32["trunk_kv_seconds"] / bf16["trunk_kv_seconds"]


def table(rows, mem_label):
    scorers = [s for s in EXACT + tuple(TORCH_PATH) + ("vllm",) if any(s in r for r in rows)]
    head = ("| model | case | precision | rollouts | steps | branch floor | "
            + " | ".join(f"tokens {s}" for s in scorers) + " | "
            + " | ".join(f"s {s}" for s in scorers) + " | trunk KV fwd s | best | time ratio naive/best | "
            f"tokens best/floor | {mem_label} naive | {mem_label} tree | max IG diff (exact) | IG diff vllm |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['case']} | {r.get('precision', 'fp32')} | {r['rollouts']} | {r['steps_scored']} | "
            f"{r['branch_floor_tokens']} | "
            + " | ".join(str(r[s]["tokens_forwarded"]) if s in r else "-" for s in scorers) + " | "
            + " | ".join(f"{r[s]['seconds']:.2f}" if s in r else "-" for s in scorers)
            + f" | {r['trunk_kv_seconds']:.2f} | {r['best_exact']} | {r['time_ratio']:.2f} | "
            f"{r['tokens_ratio_floor']:.3f} | {r['naive']['peak_mib']:.0f} | {r['tree']['peak_mib']:.0f} | "
            f"{r['max_ig_diff']:.2e} | " + (f"{r['vllm_ig_diff']:.2e}" if "vllm_ig_diff" in r else "-") + " |"
        )
    return "\n".join(lines)


def start_vllm(model, tokenizer, workdir: Path, precision):
    """A vLLM rollout engine on ``model``'s weights (saved under ``workdir``) in ``precision``'s weight
    dtype, as the trainer makes it."""
    from igsearch.rollout.engine import VLLMEngine

    model.save_pretrained(workdir, safe_serialization=True)
    tokenizer.save_pretrained(workdir)
    return VLLMEngine(workdir, dtype=precision.engine_dtype, max_model_len=4096)


def precision_table(rows) -> str:
    """bf16 against fp32 per case and scorer: the speed-up and the agreement of step IG."""
    lines = ["| model | case | scorer | s fp32 | s bf16 | bf16 speed-up | max abs dIG | p99 abs dIG | "
             "Spearman | sign agreement |", "|" + "---|" * 10]
    fp32 = {(r["model"], r["case"]): r for r in rows if r.get("precision") == "fp32"}
    for r in rows:
        if "bf16_speedup" not in r:
            continue
        ref = fp32[(r["model"], r["case"])]
        for label, x in r["bf16_speedup"].items():
            a = r["ig_vs_fp32"][label]
            lines.append(f"| {r['model']} | {r['case']} | {label} | {ref[label]['seconds']:.2f} | "
                         f"{r[label]['seconds']:.2f} | {x:.2f}x | {a['max_abs_diff']:.1e} | {a['p99_abs_diff']:.1e} | "
                         f"{a['spearman']:.4f} | {a['sign_agreement']:.3f} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small batches, 0.5B shape cut to 4 layers")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", default="both", choices=["both", "auto", "fp32", "bf16"],
                    help="compute precision of the scorers (igsearch.precision; fp32 weights, bf16 under autocast); "
                         "both (default): fp32 and bf16 side by side, interleaved, with bf16's speed-up and IG "
                         "agreement per scorer")
    ap.add_argument("--n-random", type=int, default=3)
    ap.add_argument("--skip-large", action="store_true", help="only the tiny policy shape")
    ap.add_argument("--max-cases", type=int, default=None, help="run only the first N cases (a smoke test)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: on a shared CPU, oversubscribed OpenMP threads "
                         "make elementwise ops ~40x slower and timings meaningless)")
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/ig_scoring-<time>.json)")
    ap.add_argument("--no-vllm", action="store_true", help="leave out the vLLM prefix-cache peer")
    ap.add_argument("--repeats", type=int, default=3, help="timings per scorer and case (median reported; default 3)")
    ap.add_argument("--busy", action="store_true",
                    help="run beside a neighbour process that keeps one core busy (1-thread matrix products)")
    args = ap.parse_args(argv)
    from igsearch.precision import resolve_precision

    device = args.device
    precisions = [resolve_precision(p, device) for p in (("fp32", "bf16") if args.precision == "both"
                                                           else (args.precision,))]
    engine_precision = resolve_precision("auto", device) if args.precision == "both" else precisions[0]
    if device == "cpu":
        torch.set_num_threads(args.threads)
    on_gpu = device == "cuda"
    neighbour = None
    if args.busy:  # another process keeps one core busy for the whole run
        neighbour = subprocess.Popen([sys.executable, "-c", NEIGHBOUR], env={**os.environ, "OMP_NUM_THREADS": "1"})
    quick = args.quick

    # Case list: (model shape, layers or None, case name, G, Q, steps)
    if quick:
        cases = [("tiny", None, "3 steps", 4, 3, 3, TOPK), ("tiny", None, "1-4 steps", 4, 3, (1, 4), TOPK)]
        large = [("qwen2.5-0.5b", None if on_gpu else 4, "3 steps", 2, 2 if on_gpu else 1, 3, TOPK)]
    else:
        cases = [("tiny", None, "3 steps", 5, 8, 3, TOPK), ("tiny", None, "1-4 steps", 5, 8, (1, 4), TOPK),
                 ("tiny", None, "3 steps, 16 rollouts", 16, 4, 3, TOPK),
                 ("tiny", None, "3 steps, long documents (top 6)", 5, 8, 3, 6)]
        large = [("qwen2.5-0.5b", None, "3 steps", 4 if on_gpu else 2, 4 if on_gpu else 2, 3, TOPK),
                 ("qwen2.5-0.5b", None, "1-4 steps", 4 if on_gpu else 2, 4 if on_gpu else 2, (1, 4), TOPK)]
    if not args.skip_large:
        cases += large
    cases = cases[: args.max_cases] if args.max_cases else cases

    by_hops, retriever, tokenizer = load_world()
    world = (by_hops, retriever)
    warm_t, warm_g, _ = make_rollouts(world, tokenizer, 2, 1, 1)  # skip=1 below: cases use other questions
    use_vllm = not args.no_vllm
    if use_vllm:
        try:
            import vllm  # noqa: F401
        except ImportError:
            print("[ig_scoring] vllm is not installed: the vLLM peer is left out", flush=True)
            use_vllm = False
    rows, models = [], {}
    engine, tmp = None, tempfile.TemporaryDirectory(prefix="ig_scoring-model-")
    headline = large_row = None
    for (shape, layers, name, G, Q, steps, topk) in cases:
        key = (shape, layers)
        if key not in models:
            if engine is not None:
                engine.close()
                engine = None
            models.clear()
            gc.collect()
            models[key] = build_model(shape, tokenizer, layers, torch.float32, device)
            model, dims = models[key]
            if use_vllm:
                t0 = time.perf_counter()
                engine = start_vllm(model, tokenizer, Path(tmp.name) / f"{shape}-{layers}", engine_precision)
                print(f"[ig_scoring] vLLM engine on {shape}: {time.perf_counter() - t0:.0f} s to start", flush=True)
            warm_ids = trunk_ids(tokenizer, warm_t)
            for prec in precisions:  # warm-up: first-call overheads out
                for label in EXACT + kernel_variants(model) + (("vllm",) if engine else ()):
                    with torch.inference_mode(), prec.autocast():
                        compute_information_gain(warm_t, warm_g, model, tokenizer, seed=0,
                                                 **scorer_kwargs(label, model, engine, warm_ids))
        model, dims = models[key]
        texts, golds, counts = make_rollouts(world, tokenizer, G, Q, steps, skip=1, topk=topk)
        case_rows = run_case(name, model, tokenizer, texts, golds, args.n_random, device, args.repeats, precisions,
                             engine=engine, engine_precision=engine_precision.name)
        for row in case_rows:
            row["topk"] = topk
            row["model"] = shape + (f" ({dims['num_hidden_layers']} layers)" if layers else "")
            row["shape"] = dims
            row["G"], row["Q"], row["steps"] = G, Q, steps
            row["step_counts"] = {str(k): v for k, v in sorted(Counter(counts).items())}
            row["mean_rollout_tokens"] = sum(len(tokenizer(t)["input_ids"]) for t in texts) / len(texts)
            rows.append(row)
            print(f"[ig_scoring] {row['model']} {name} {row['precision']}: best exact {row['best_exact']} "
                  f"{row['time_ratio']:.2f}x faster than naive, tokens {row['tokens_ratio_floor']:.3f}x the branch "
                  f"floor, max IG diff {row['max_ig_diff']:.2e}"
                  + "".join(f", {k.split('_')[-1]} {v:.2f}x faster with kernels"
                            for k, v in row.items() if k.startswith("kernel_speedup_"))
                  + (f", vLLM peer {row['vllm']['seconds']:.2f} s vs {row[row['best_exact']]['seconds']:.2f} s"
                     if "vllm" in row else "")
                  + "".join(f", {label} {x:.2f}x faster in bf16" for label, x in row.get("bf16_speedup", {}).items()),
                  flush=True)
        last = case_rows[-1]  # bf16's row when both ran: it carries the comparison
        if headline is None and shape == "tiny" and steps == 3:
            headline = last
        if large_row is None and shape != "tiny" and steps == 3:
            large_row = last
    if engine is not None:
        engine.close()
    tmp.cleanup()
    if neighbour is not None:
        neighbour.kill()
        neighbour.wait()

    mem_label = "peak MiB (cuda max allocated)" if on_gpu else "peak MiB (RSS high-water delta)"
    result = {
        "benchmark": "ig_scoring",
        "time": datetime.now(timezone.utc).isoformat(),
        "device": device_name(device),
        "precision": [p.to_dict() for p in precisions],
        "cpu": describe_cpu(),
        "quick": quick,
        "n_random": args.n_random,
        "rollouts": {"world_seed": WORLD_SEED, "split": "train", "query_noise": QUERY_NOISE, "topk": TOPK,
                     "template": "refine", "tokenizer_vocab": len(tokenizer)},
        "memory_metric": mem_label,
        "machine": "busy: one neighbour process on one core" if args.busy else "idle (as far as this run knows)",
        "repeats": args.repeats,
        "torch": torch.__version__,
        "threads": torch.get_num_threads() if device == "cpu" else None,
        "notes": ("naive = every sequence on its own, left-padded micro-batches (sorted by length), "
                  "logits at the continuation positions only; tree = trie packing, fast Qwen2 path "
                  "(torch SDPA on the tree mask unless igsearch_kernels are used); trunk = the tree's "
                  "fast path over the tokens off the rollouts' cached keys/values (given, as the "
                  "trainer's update forward leaves them; trunk_kv_seconds is that forward when run "
                  "for IG alone); vllm = the rollout engine with prefix-cache reads, its cache reset and "
                  "refilled with the rollouts before the timing; timings are one run each after a "
                  "warm-up; the CPU is shared, so times are noisy"),
        "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else RESULTS / f"ig_scoring-{'quick-' if quick else ''}{stamp}.json"
    out.write_text(json.dumps(result, indent=2))
    threads = f", {torch.get_num_threads()} thread(s)" if device == "cpu" else ""
    print(f"\nIG scoring, {result['device']}{threads}, {result['cpu']}, precision "
          f"{'/'.join(p.name for p in precisions)}, N={args.n_random}, {result['machine']}, "
          f"median of {args.repeats} timings. JSON: {out}\n")
    print(table(rows, mem_label))
    if any("bf16_speedup" in r for r in rows):
        print("\n" + precision_table(rows))
    if large_row is not None:
        print(f"large ({large_row['model']}): time_ratio={large_row['time_ratio']:.3f} "
              f"tokens_ratio_floor={large_row['tokens_ratio_floor']:.3f} best={large_row['best_exact']}"
              + (f" vllm_seconds={large_row['vllm']['seconds']:.3f}" if "vllm" in large_row else ""))
    wins = Counter(r["best_exact"] for r in rows)
    print(f"default_scorer={wins.most_common(1)[0][0]} (fastest exact scorer in {wins.most_common(1)[0][1]} of "
          f"{len(rows)} cases on {result['device']})")
    h = headline
    best_label = h["best_exact"]
    hv = next((r for r in rows if r["model"] == h["model"] and r["case"] == h["case"] and "vllm" in r), None)
    print(f"tokens_ratio_floor={h['tokens_ratio_floor']:.3f} time_ratio={h['time_ratio']:.3f} best={h['best_exact']} "
          f"best_seconds={h[h['best_exact']]['seconds']:.3f}"
          + (f" vllm_seconds={hv['vllm']['seconds']:.3f} vllm_ig_diff={hv['vllm_ig_diff']:.3e}" if hv else "")
          + f" tokens_ratio={h['tokens_ratio']:.3f} max_ig_diff={h['max_ig_diff']:.3e}"
          + "".join(f" bf16_speedup_{label}={x:.2f}" for label, x in h.get("bf16_speedup", {}).items())
          + (f" bf16_ig_spearman={h['ig_vs_fp32'][best_label]['spearman']:.4f}" if "ig_vs_fp32" in h else ""))


if __name__ == "__main__":
    main()
