"""Kernel benchmarks: each kernel against its baselines, same inputs, same process, device named.

On a GPU (timings with ``triton.testing.do_bench``, milliseconds):

- gather_logprobs: ours vs a cuBLAS matmul of the same shape (the floor), eager logits +
  log_softmax + gather, torch.compile of that, and Liger's fused linear cross entropy when
  installed; forward and forward + backward; peak memory of ours vs eager.
- span_advantage_loss (forward + backward): ours vs the eager formula and its torch.compile.
- tree_attention (a shared-prefix tree of ~16k packed tokens): ours (block-mask build included)
  vs SDPA with the dense tree mask and FlexAttention with the same mask, the latter both warm and
  "per new tree shape" (create_block_mask + compile + first call).

On the CPU the dispatched torch paths are timed against the same eager baselines (and
FlexAttention, which compiles for the CPU). The Triton kernels are NOT timed on the CPU: they only
run there through Triton's interpreter, whose speed means nothing.

    python bench/kernels.py --quick

Writes bench/results/kernels-<device>.json and prints a markdown table last.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import re
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchutil import device_name  # noqa: E402

from igsearch_kernels import (  # noqa: E402
    build_tree_ancestry,
    build_tree_block_mask,
    gather_logprobs,
    gather_logprobs_reference,
    span_advantage_loss,
    span_advantage_loss_reference,
    tree_attention,
    tree_attention_reference,
    tree_token_mask,
)

RESULTS = Path(__file__).resolve().parent / "results"


# ----------------------------------------------------------------------------- timing


def timed(fn, device: str, reps: int) -> float:
    """Milliseconds per call: do_bench on CUDA, the median of `reps` wall-clock runs on the CPU."""
    if device == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=25, rep=100))
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def once_ms(fn, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1e3


def peak_bytes(fn, device: str) -> int | None:
    if device != "cuda":
        return None
    torch.cuda.synchronize()
    gc.collect()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def attempt(rows, kernel, case, name, fn, device, reps, **extra):
    """Time one implementation; a failure (e.g. no Liger, compile error) is recorded, not fatal."""
    try:
        ms = timed(fn, device, reps)
        rows.append(dict(kernel=kernel, case=case, impl=name, ms=ms, **extra))
    except Exception as exc:  # noqa: BLE001 - baselines are optional
        rows.append(dict(kernel=kernel, case=case, impl=name, ms=None, error=f"{type(exc).__name__}: {exc}"[:200]))
    return rows[-1]


# ----------------------------------------------------------------------------- gather_logprobs


def bench_gather(rows, device, quick, reps):
    if device == "cuda":
        shapes = [(2048, 151_936, 896), (8192, 151_936, 1536)] if not quick else [(2048, 151_936, 896)]
        dtype = torch.bfloat16
    else:
        shapes = [(256, 32_000, 256)] if quick else [(256, 32_000, 256), (1024, 151_936, 256)]
        dtype = torch.float32
    for m, v, d in shapes:
        case = f"M={m} V={v} d={d} {str(dtype)[6:]}"
        hidden = torch.randn(m, d, device=device, dtype=dtype)
        weight = torch.randn(v, d, device=device, dtype=dtype) * d**-0.5
        targets = torch.randint(0, v, (m,), device=device)

        def eager(h=hidden, w=weight):
            return torch.log_softmax((h @ w.t()).float(), -1).gather(1, targets[:, None]).squeeze(1)

        with torch.no_grad():
            ours = attempt(rows, "gather_logprobs", case + " fwd", "ours", lambda: gather_logprobs(hidden, weight, targets), device, reps)
            eager_row = attempt(rows, "gather_logprobs", case + " fwd", "eager logits+log_softmax", eager, device, reps)
            if device == "cuda":
                attempt(rows, "gather_logprobs", case + " fwd", "cuBLAS matmul (floor)", lambda: hidden @ weight.t(), device, reps)
                compiled = torch.compile(eager)
                attempt(rows, "gather_logprobs", case + " fwd", "torch.compile", compiled, device, reps)
        ours["peak_bytes"] = peak_bytes(lambda: gather_logprobs(hidden, weight, targets), device)
        eager_row["peak_bytes"] = peak_bytes(eager, device)

        h = hidden.clone().requires_grad_()
        w = weight.clone().requires_grad_()

        def ours_fb():
            h.grad = w.grad = None
            gather_logprobs(h, w, targets).sum().backward()

        def eager_fb():
            h.grad = w.grad = None
            gather_logprobs_reference(h, w, targets).sum().backward()

        attempt(rows, "gather_logprobs", case + " fwd+bwd", "ours", ours_fb, device, reps)
        attempt(rows, "gather_logprobs", case + " fwd+bwd", "eager logits+log_softmax", eager_fb, device, reps)
        if device == "cuda":
            try:
                from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

                def liger_fb():
                    h.grad = w.grad = None
                    liger_fused_linear_cross_entropy(h, w, targets, reduction="sum").backward()

                attempt(rows, "gather_logprobs", case + " fwd+bwd", "Liger FLCE", liger_fb, device, reps)
            except ImportError:
                rows.append(dict(kernel="gather_logprobs", case=case + " fwd+bwd", impl="Liger FLCE", ms=None, error="not installed"))
        del hidden, weight, h, w
        gc.collect()


# ----------------------------------------------------------------------------- span_advantage_loss


def bench_span_loss(rows, device, quick, reps):
    b, t = (64, 4096) if device == "cuda" else ((16, 1024) if quick else (64, 4096))
    case = f"B={b} T={t} 4 spans/seq kl"
    gen = torch.Generator(device=device).manual_seed(0)
    logp = torch.randn(b, t, device=device, generator=gen) * 0.5 - 2
    old = logp + 0.3 * torch.randn(b, t, device=device, generator=gen)
    ref = logp + 0.2 * torch.randn(b, t, device=device, generator=gen)
    mask = torch.rand(b, t, device=device, generator=gen) > 0.2
    seq_adv = torch.randn(b, device=device, generator=gen)
    starts = torch.arange(4, device=device) * (t // 4) + 7
    spans = torch.stack([torch.arange(b, device=device).repeat_interleave(4), starts.repeat(b), starts.repeat(b) + t // 16], 1)
    values = torch.randn(spans.shape[0], device=device, generator=gen)
    x = logp.clone().requires_grad_()
    kw = dict(ref_logp=ref, kl_coef=0.01, clip_high=0.28)

    def run(fn):
        def go():
            x.grad = None
            fn(x, old, mask, seq_adv, spans, values, **kw).backward()
        return go

    attempt(rows, "span_advantage_loss", case + " fwd+bwd", "ours", run(span_advantage_loss), device, reps)
    attempt(rows, "span_advantage_loss", case + " fwd+bwd", "eager", run(span_advantage_loss_reference), device, reps)
    compiled = torch.compile(span_advantage_loss_reference, dynamic=False)
    attempt(rows, "span_advantage_loss", case + " fwd+bwd", "torch.compile", run(compiled), device, reps)


# ----------------------------------------------------------------------------- tree_attention


def shared_prefix_tree(trunk, branches, branch_len, answer_len, device):
    """Trunk -> `branches` context branches -> one answer leaf each (the IG scoring shape)."""
    parent = [-1] + [0] * branches + list(range(1, branches + 1))
    lengths = [trunk] + [branch_len] * branches + [answer_len] * branches
    parent_t = torch.tensor(parent, device=device)
    node_of_token = torch.repeat_interleave(torch.arange(len(parent), device=device), torch.tensor(lengths, device=device))
    return node_of_token, build_tree_ancestry(parent_t)


def bench_tree(rows, device, quick, reps):
    if device == "cuda":
        trunk, branches, blen, alen, hq, hkv, d, dtype = 4096, 48, 232, 16, 28, 4, 128, torch.bfloat16
    else:
        trunk, branches, blen, alen, hq, hkv, d, dtype = (512, 8, 56, 8, 8, 2, 64, torch.float32) if quick else (1024, 16, 120, 8, 8, 2, 64, torch.float32)
    node_of_token, ancestry = shared_prefix_tree(trunk, branches, blen, alen, device)
    t = node_of_token.numel()
    case = f"T={t} ({branches} branches) Hq={hq} Hkv={hkv} D={d} {str(dtype)[6:]}"
    q = torch.randn(t, hq, d, device=device, dtype=dtype)
    k = torch.randn(t, hkv, d, device=device, dtype=dtype)
    v = torch.randn(t, hkv, d, device=device, dtype=dtype)

    if device == "cuda":
        bm = build_tree_block_mask(node_of_token, ancestry)
        attempt(rows, "tree_attention", case, "ours (block mask reused)", lambda: tree_attention(q, k, v, node_of_token, ancestry, block_mask=bm), device, reps,
                visited_blocks=bm.visited_blocks, causal_blocks=bm.causal_blocks)
        attempt(rows, "tree_attention", case + " new tree", "ours (block mask built)", lambda: tree_attention(q, k, v, node_of_token, ancestry), device, reps)
    else:
        attempt(rows, "tree_attention", case, "ours (torch path)", lambda: tree_attention(q, k, v, node_of_token, ancestry), device, reps)

    dense = tree_token_mask(node_of_token, ancestry)
    qh, kh, vh = (x.transpose(0, 1).unsqueeze(0) for x in (q, k, v))
    sdpa = torch.nn.functional.scaled_dot_product_attention
    attempt(rows, "tree_attention", case, "SDPA dense mask", lambda: sdpa(qh, kh, vh, attn_mask=dense, enable_gqa=True), device, reps)
    if device != "cuda":
        attempt(rows, "tree_attention", case, "eager reference", lambda: tree_attention_reference(q, k, v, node_of_token, ancestry), device, reps)

    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        node32 = node_of_token.to(torch.int32)

        def mask_mod(b, h, qi, ki):
            nq, nk = node32[qi], node32[ki]
            return ancestry[nq, nk] & ((nq != nk) | (ki <= qi))

        flex = torch.compile(flex_attention, dynamic=False)

        def flex_new_shape():
            torch._dynamo.reset()  # a new tree shape: mask build + compile + first call
            block = create_block_mask(mask_mod, None, None, t, t, device=device)
            torch.compile(flex_attention, dynamic=False)(qh, kh, vh, block_mask=block, enable_gqa=True)

        rows.append(dict(kernel="tree_attention", case=case + " new tree", impl="FlexAttention (mask+compile+run)",
                         ms=once_ms(flex_new_shape, device)))
        block = create_block_mask(mask_mod, None, None, t, t, device=device)
        attempt(rows, "tree_attention", case, "FlexAttention (warm)", lambda: flex(qh, kh, vh, block_mask=block, enable_gqa=True), device, reps)
        attempt(rows, "tree_attention", case + " new tree", "FlexAttention create_block_mask", lambda: create_block_mask(mask_mod, None, None, t, t, device=device), device, max(1, reps // 2))
    except Exception as exc:  # noqa: BLE001
        rows.append(dict(kernel="tree_attention", case=case, impl="FlexAttention", ms=None, error=f"{type(exc).__name__}: {exc}"[:200]))


# ----------------------------------------------------------------------------- report


def table(rows):
    """Markdown table; `vs ours` = baseline time / our time in the same case (>1: ours faster)."""
    ours = {}
    for r in rows:
        if r["impl"].startswith("ours") and r["ms"] is not None:
            ours.setdefault(r["case"].replace(" new tree", ""), r["ms"])
            ours[r["case"]] = r["ms"]
    lines = ["| kernel | case | impl | ms | vs ours | peak MiB |", "|---|---|---|---:|---:|---:|"]
    for r in rows:
        ms = r["ms"]
        base = ours.get(r["case"])
        ratio = "" if ms is None or base is None or r["impl"].startswith("ours") else f"{ms / base:.2f}x"
        mem = f"{r['peak_bytes'] / 2**20:.0f}" if r.get("peak_bytes") is not None else ""
        shown = f"{ms:.3f}" if ms is not None else f"n/a ({r.get('error', '')[:40]})"
        lines.append(f"| {r['kernel']} | {r['case']} | {r['impl']} | {shown} | {ratio} | {mem} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small shapes, few repeats")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--only", choices=["gather", "span", "tree"], default=None)
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/kernels-<device>.json)")
    args = ap.parse_args(argv)
    device = args.device
    if args.threads:
        torch.set_num_threads(args.threads)
    reps = 3 if args.quick else 10
    rows: list[dict] = []
    benches = {"gather": bench_gather, "span": bench_span_loss, "tree": bench_tree}
    for name, fn in benches.items():
        if args.only in (None, name):
            fn(rows, device, args.quick, reps)
    name = device_name(device)
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:60]
    out = Path(args.out) if args.out else RESULTS / f"kernels-{slug}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "device": name,
        "torch": torch.__version__,
        "quick": args.quick,
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "note": "CPU rows time the torch paths; Triton kernels are not timed on the CPU (interpreter only)"
        if device != "cuda" else "GPU rows: triton.testing.do_bench, ms",
        "rows": [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in rows],
    }
    out.write_text(json.dumps(result, indent=2))
    print(f"\nKernels, {name}. JSON: {out}\n")
    print(table(rows))


if __name__ == "__main__":
    main()
