"""IG scoring benchmark: the tree scorer against the naive scorer, same inputs, same process.

Batches of world-like rollouts (G rollouts x Q questions, a fixed or mixed number of search steps,
N random counterfactuals per step) are scored by ``compute_information_gain`` with both scorers,
under the tiny policy shape and a ~0.5B Qwen2.5 shape (random weights). Reported per case:
tokens forwarded (real, non-pad), wall time, peak memory and the max |IG difference| between the
two scorers.

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` during the phase; on the CPU, the
process resident-set high-water mark (Linux VmHWM, reset through /proc/self/clear_refs before the
phase) minus the resident set before it, i.e. the extra memory the phase needed.

The rollouts are synthetic but shaped like oracle rollouts of the world with query noise: the
rollouts of a group share the prompt, often the first query (and so its documents and refine),
and differ after a noisy query. Each documents block holds 3 passages of 40-70 words.

    python bench/ig_scoring.py --quick    # a few minutes on a laptop CPU
The last line is ``tokens_ratio=<naive/tree> time_ratio=<naive/tree> max_ig_diff=<value>`` for the
headline case (tiny policy, 3 steps, N=3).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from igsearch.data.prompts import ALL_TAGS, REFINE_TEMPLATE  # noqa: E402
from igsearch.ig import compute_information_gain  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SYLLABLES = ["ka", "lo", "mer", "tis", "an", "vel", "dor", "si", "ru", "pen", "ost", "ya", "bri", "gal", "zum"]
RELATIONS = ["founder", "birthplace", "capital", "spouse", "employer", "river", "author", "director"]
FILLER = ("is a known place that lies near the old road and was described in many records from the "
          "northern archives where scholars wrote about its history trade people and customs over "
          "several centuries with notes on weather harvests festivals and notable families").split()


# ----------------------------------------------------------------------------- synthetic world rollouts


def _name(rng):
    return " ".join(
        "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()
        for _ in range(rng.randint(1, 2))
    )


def _passage(rng, subject):
    words = rng.sample(FILLER, k=min(len(FILLER), rng.randint(30, 45)))
    rel, obj = rng.choice(RELATIONS), _name(rng)
    return f"{subject}\nThe {rel} of {subject} is {obj}. {subject} " + " ".join(words) + "."


def _docs_text(passages):
    lines = []
    for rank, p in enumerate(passages, 1):
        title, _, body = p.partition("\n")
        lines.append(f"Doc {rank}(Title: {title}) {body}")
    return "<documents>\n" + "\n".join(lines) + "\n</documents>"


def make_rollouts(G, Q, steps, seed=0, noise=0.35):
    """G rollouts for each of Q questions. ``steps``: an int, or (lo, hi) drawn per rollout.

    Returns (texts, golds). A clean hop's query (and documents, refine) is the same for every
    rollout of the group; a noisy hop gets its own query, documents and refine.
    """
    rng = random.Random(seed)
    texts, golds = [], []
    for q in range(Q):
        chain = [_name(rng) for _ in range(5)]
        question = f"What is the {rng.choice(RELATIONS)} of the {rng.choice(RELATIONS)} of {chain[0]}"
        prompt = (
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
            + REFINE_TEMPLATE.render(question) + "<|im_end|>\n<|im_start|>assistant\n"
        )
        clean = []
        for h in range(4):
            passages = [_passage(rng, chain[h])] + [_passage(rng, _name(rng)) for _ in range(2)]
            clean.append((f"{chain[h]} {rng.choice(RELATIONS)}", _docs_text(passages),
                          f"The fact: {chain[h]} leads to {chain[h + 1]}."))
        gold = chain[-1]
        for g in range(G):
            n = steps if isinstance(steps, int) else rng.randint(*steps)
            body = "<think> I should search. </think>\n"
            for h in range(n):
                if rng.random() < noise:
                    wrong = _name(rng)
                    passages = [_passage(rng, wrong) for _ in range(3)]
                    query, docs, refine = f"{wrong} {rng.choice(RELATIONS)}", _docs_text(passages), "no relevant information"
                else:
                    query, docs, refine = clean[h]
                body += f"<search> {query} </search>\n{docs}\n<refine> {refine} </refine>\n"
            texts.append(prompt + body + f"<answer> {gold} </answer><|im_end|>")
            golds.append([gold, gold.split()[0]])
    return texts, golds


# ----------------------------------------------------------------------------- models


def build_tokenizer(texts):
    try:
        from igsearch.policy.tiny import build_tokenizer as lead_builder

        return lead_builder(texts, vocab_size=4096)
    except ImportError:  # pragma: no cover - fallback while the policy module is missing
        from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
        from transformers import PreTrainedTokenizerFast

        core = Tokenizer(models.BPE())
        core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        core.decoder = decoders.ByteLevel()
        core.train_from_iterator(texts, trainers.BpeTrainer(
            vocab_size=4096, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
        core.add_tokens([AddedToken(t, normalized=False) for t in ALL_TAGS])
        return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>")


SHAPES = {
    "tiny": dict(hidden_size=256, intermediate_size=704, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=64, vocab_size=None),
    "qwen2.5-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, head_dim=64, vocab_size=151936),
}


def build_model(shape, tokenizer, layers=None, dtype=torch.float32, device="cpu"):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    dims = dict(SHAPES[shape])
    dims["vocab_size"] = dims["vocab_size"] or len(tokenizer)
    if layers:
        dims["num_hidden_layers"] = layers
    cfg = Qwen2Config(max_position_embeddings=8192, tie_word_embeddings=(shape != "tiny"), **dims)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(cfg)
    for p in model.parameters():  # default init std 0.02 is fine; keep logits in a sane range
        p.requires_grad_(False)
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


def device_name(device):
    if device == "cuda":
        return "GPU " + torch.cuda.get_device_name(0)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"CPU {line.split(':', 1)[1].strip()} ({torch.get_num_threads()} threads)"
    except OSError:
        pass
    return f"CPU {platform.processor()}"


def run_case(name, model, tokenizer, texts, golds, n_random, device, repeats):
    kw = dict(n_random=n_random, max_gold_variants=1, seed=0)
    row = {"case": name, "rollouts": len(texts), "n_random": n_random}
    igs = {}
    for scorer in ("naive", "tree"):
        best = None
        for _ in range(repeats):
            with torch.inference_mode():
                res, secs, peak = measure(
                    lambda: compute_information_gain(texts, golds, model, tokenizer, scorer=scorer, **kw), device)
            best = (res, secs, peak) if best is None or secs < best[1] else best
        res, secs, peak = best
        igs[scorer] = res.step_ig
        row[scorer] = {
            "tokens_forwarded": res.stats["tokens_forwarded"],
            "padded_tokens": res.stats["padded_tokens"],
            "n_sequences": res.stats["n_sequences"],
            "n_forwards": res.stats["n_forwards"],
            "seconds": secs,
            "peak_mib": peak,
        }
    diffs = [abs(a - b) for ra, rb in zip(igs["naive"], igs["tree"]) for a, b in zip(ra, rb) if a is not None]
    row["steps_scored"] = len(diffs)
    row["max_ig_diff"] = max(diffs) if diffs else 0.0
    row["tokens_ratio"] = row["naive"]["tokens_forwarded"] / max(1, row["tree"]["tokens_forwarded"])
    row["time_ratio"] = row["naive"]["seconds"] / row["tree"]["seconds"]
    row["mem_ratio"] = row["naive"]["peak_mib"] / max(1e-9, row["tree"]["peak_mib"])
    return row


def table(rows, mem_label):
    head = ("| model | case | rollouts | steps scored | tokens naive | tokens tree | tokens ratio | "
            f"time naive s | time tree s | time ratio | {mem_label} naive | {mem_label} tree | max IG diff |")
    lines = [head, "|" + "---|" * head.count("|")[:-1] if False else "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['case']} | {r['rollouts']} | {r['steps_scored']} | "
            f"{r['naive']['tokens_forwarded']} | {r['tree']['tokens_forwarded']} | {r['tokens_ratio']:.2f} | "
            f"{r['naive']['seconds']:.2f} | {r['tree']['seconds']:.2f} | {r['time_ratio']:.2f} | "
            f"{r['naive']['peak_mib']:.0f} | {r['tree']['peak_mib']:.0f} | {r['max_ig_diff']:.2e} |"
        )
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small batches, 0.5B shape cut to 4 layers")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--n-random", type=int, default=3)
    ap.add_argument("--skip-large", action="store_true", help="only the tiny policy shape")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: on a shared CPU, oversubscribed OpenMP threads "
                         "make elementwise ops ~40x slower and timings meaningless)")
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/ig_scoring-<time>.json)")
    args = ap.parse_args(argv)
    device, dtype = args.device, getattr(torch, args.dtype)
    if device == "cpu":
        torch.set_num_threads(args.threads)
    on_gpu = device == "cuda"
    quick = args.quick

    # Case list: (model shape, layers or None, case name, G, Q, steps)
    if quick:
        cases = [("tiny", None, "3 steps", 4, 3, 3), ("tiny", None, "1-4 steps", 4, 3, (1, 4))]
        large = [("qwen2.5-0.5b", None if on_gpu else 4, "3 steps", 2, 2 if on_gpu else 1, 3)]
    else:
        cases = [("tiny", None, "3 steps", 5, 8, 3), ("tiny", None, "1-4 steps", 5, 8, (1, 4))]
        large = [("qwen2.5-0.5b", None, "3 steps", 4 if on_gpu else 2, 4 if on_gpu else 2, 3),
                 ("qwen2.5-0.5b", None, "1-4 steps", 4 if on_gpu else 2, 4 if on_gpu else 2, (1, 4))]
    if not args.skip_large:
        cases += large

    all_texts = [make_rollouts(G, Q, s, seed=7)[0] for _, _, _, G, Q, s in cases]
    tokenizer = build_tokenizer([t for ts in all_texts for t in ts])
    rows, models = [], {}
    headline = None
    for (shape, layers, name, G, Q, steps) in cases:
        key = (shape, layers)
        if key not in models:
            models.clear()
            gc.collect()
            models[key] = build_model(shape, tokenizer, layers, dtype, device)
            model, dims = models[key]
            warm_t, warm_g = make_rollouts(2, 1, 1, seed=1)
            for scorer in ("naive", "tree"):  # warm-up: first-call overheads out of the timings
                compute_information_gain(warm_t, warm_g, model, tokenizer, scorer=scorer, seed=0)
        model, dims = models[key]
        texts, golds = make_rollouts(G, Q, steps, seed=7)
        row = run_case(name, model, tokenizer, texts, golds, args.n_random, device, repeats=1)
        row["model"] = shape + (f" ({dims['num_hidden_layers']} layers)" if layers else "")
        row["shape"] = {k: v for k, v in dims.items()}
        row["G"], row["Q"], row["steps"] = G, Q, steps
        rows.append(row)
        print(f"[ig_scoring] {row['model']} {name}: tokens {row['tokens_ratio']:.2f}x, "
              f"time {row['time_ratio']:.2f}x, max IG diff {row['max_ig_diff']:.2e}", flush=True)
        if headline is None and shape == "tiny" and steps == 3:
            headline = row

    mem_label = "peak MiB (cuda max allocated)" if on_gpu else "peak MiB (RSS high-water delta)"
    result = {
        "benchmark": "ig_scoring",
        "time": datetime.now(timezone.utc).isoformat(),
        "device": device_name(device),
        "dtype": args.dtype,
        "quick": quick,
        "n_random": args.n_random,
        "memory_metric": mem_label,
        "torch": torch.__version__,
        "notes": ("naive = every sequence on its own, left-padded micro-batches (sorted by length), "
                  "logits at the continuation positions only; tree = trie packing, fast Qwen2 path "
                  "(torch SDPA on the tree mask unless igsearch_kernels are used); timings are one run "
                  "each after a warm-up; the CPU is shared, so times are noisy"),
        "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else RESULTS / f"ig_scoring-{'quick-' if quick else ''}{stamp}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"\nIG scoring, naive vs tree, {result['device']}, {args.dtype}, N={args.n_random}. JSON: {out}\n")
    print(table(rows, mem_label))
    print(f"tokens_ratio={headline['tokens_ratio']:.3f} time_ratio={headline['time_ratio']:.3f} "
          f"max_ig_diff={headline['max_ig_diff']:.3e}")


if __name__ == "__main__":
    main()
