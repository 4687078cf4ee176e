"""Kernel benchmarks: each kernel against its baselines, same inputs, same process, device named.

On a GPU (timings with ``triton.testing.do_bench``, milliseconds):

- gather_logprobs: ours vs a cuBLAS matmul of the same shape (the floor), eager logits +
  log_softmax + gather, torch.compile of that, and Liger's fused linear cross entropy when
  installed; forward and forward + backward; peak memory of ours vs eager.
- span_advantage_loss (forward + backward): ours vs the eager formula and its torch.compile.
- tree_attention (a shared-prefix tree of ~16k packed tokens): ours (block-mask build included)
  vs SDPA with the dense tree mask and FlexAttention with the same mask, the latter both warm and
  "per new tree shape" (create_block_mask + compile + first call). On the CPU: the native op vs the
  torch path (dense-mask SDPA over query chunks), dense SDPA and FlexAttention on tries with the tiny
  preset's heads and a Qwen2.5-0.5B layer's, plus branches attending to a cached trunk (past keys).

On the CPU the dispatched torch paths are timed against the same eager baselines (and
FlexAttention, which compiles for the CPU); for gather_logprobs the native op (``make native``),
the chunked torch path and eager logits + log_softmax, with the spread of the repeats and each one's
peak RSS rise in a fresh interpreter (use ``--threads 1`` for numbers that compare across machines).
The Triton kernels are NOT timed on the CPU: they only run there through Triton's interpreter,
whose speed means nothing.

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

from igsearch.measure import device_name
from igsearch_kernels import (
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
    return time_spread(fn, reps)[0]


def time_spread(fn, reps):
    """(median, min, max) milliseconds of `reps` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), min(times), max(times)


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
    if device != "cuda":
        bench_gather_cpu(rows, quick, reps)
        return
    shapes = [(2048, 151_936, 896), (8192, 151_936, 1536)] if not quick else [(2048, 151_936, 896)]
    dtype = torch.bfloat16
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


# CPU: the native op (kernels/csrc, when built), the chunked torch path and eager logits + log_softmax,
# all at the thread count of the run (`--threads`; 1 for comparable numbers). Peak memory: each
# (implementation, mode) once in a fresh interpreter, as the rise of its peak RSS (VmHWM) above the
# RSS with the inputs built, so allocator caches and the other rows' tensors do not count.

CPU_GATHER_SHAPES = [(256, 32_000, 256, "float32"), (256, 151_936, 896, "float32")]
CPU_GATHER_SHAPES_FULL = CPU_GATHER_SHAPES + [(1024, 151_936, 256, "float32"), (256, 32_000, 256, "bfloat16")]


def _cpu_gather_impls():
    """{impl name: (fwd(h, w, t), fwd+bwd(h, w, t))}; the first is "ours" (what `auto` dispatches to)."""
    from igsearch_kernels._backend import native_reason

    def eager(h, w, t):
        return torch.log_softmax((h @ w.t()).float(), -1).gather(1, t[:, None]).squeeze(1)

    def path(backend):
        return lambda h, w, t: gather_logprobs(h, w, t, backend=backend)

    impls = {}
    if native_reason("gather_logprobs") is None:
        impls["ours (native)"] = path("native")
        impls["torch path (chunked)"] = path("torch")
    else:
        impls["ours (torch path, native not built)"] = path("torch")
    impls["eager logits+log_softmax"] = eager
    return impls


def _gather_step(fn, mode, h, w, t):
    """One call in `mode` ("fwd": no grad; "fwd+bwd": backward of the summed logp into h and w)."""
    if mode == "fwd":
        with torch.no_grad():
            fn(h, w, t)
    else:
        h.grad = w.grad = None
        fn(h, w, t).sum().backward()


def _gather_inputs(m, v, d, dtype, grad):
    """Inputs built in place (no temporaries), so the RSS after building them is their footprint."""
    gen = torch.Generator().manual_seed(0)
    hidden = torch.empty(m, d, dtype=dtype).normal_(generator=gen)
    weight = torch.empty(v, d, dtype=dtype).normal_(0.0, d**-0.5, generator=gen)
    targets = torch.randint(0, v, (m,), generator=gen)
    return hidden.requires_grad_(grad), weight.requires_grad_(grad), targets


def _proc_status_kib(key):
    with open("/proc/self/status", encoding="ascii") as f:
        return int(re.search(rf"^{key}:\s+(\d+) kB", f.read(), re.M).group(1))


def cpu_peak_child(impl, mode, m, v, d, dtype, threads):
    """Run in a fresh interpreter: print {"peak_bytes": ...} for one call of `impl` in `mode`."""
    torch.set_num_threads(threads)
    fn = _cpu_gather_impls()[impl]
    dtype = getattr(torch, dtype)
    _gather_step(fn, mode, *_gather_inputs(4, 300, 32, dtype, mode != "fwd"))  # load BLAS code and buffers
    h, w, t = _gather_inputs(m, v, d, dtype, mode != "fwd")
    gc.collect()
    before = _proc_status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
        f.write("5")  # reset VmHWM to the current RSS
    _gather_step(fn, mode, h, w, t)
    print(json.dumps({"peak_bytes": (_proc_status_kib("VmHWM") - before) * 1024}))


def cpu_peak_bytes(impl, mode, m, v, d, dtype):
    """Peak RSS rise of one call, measured in a fresh interpreter; None where that cannot be read."""
    import os
    import subprocess

    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('bench_kernels_child', {str(Path(__file__).resolve())!r})\n"
        "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
        f"mod.cpu_peak_child({impl!r}, {mode!r}, {m}, {v}, {d}, {dtype!r}, {torch.get_num_threads()})\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    try:
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
        return int(json.loads(res.stdout.strip().splitlines()[-1])["peak_bytes"])
    except Exception:  # noqa: BLE001 - no /proc (not Linux), timeout, crash: no number
        return None


def bench_gather_cpu(rows, quick, reps):
    threads = torch.get_num_threads()
    for m, v, d, dtype_name in CPU_GATHER_SHAPES if quick else CPU_GATHER_SHAPES_FULL:
        dtype = getattr(torch, dtype_name)
        for mode in ("fwd", "fwd+bwd"):
            case = f"M={m} V={v} d={d} {dtype_name} {mode}"
            h, w, t = _gather_inputs(m, v, d, dtype, mode != "fwd")
            for impl, fn in _cpu_gather_impls().items():
                row = dict(kernel="gather_logprobs", case=case, impl=impl, threads=threads, reps=reps)
                try:
                    row["ms"], row["ms_min"], row["ms_max"] = time_spread(lambda: _gather_step(fn, mode, h, w, t), reps)
                except Exception as exc:  # noqa: BLE001
                    row.update(ms=None, error=f"{type(exc).__name__}: {exc}"[:200])
                row["peak_bytes"] = cpu_peak_bytes(impl, mode, m, v, d, dtype_name)
                if mode != "fwd":  # part of every implementation's peak: the gradients of hidden and weight
                    row["grads_bytes"] = (h.numel() + w.numel()) * h.element_size()
                rows.append(row)
            del h, w, t
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
        shapes = [(4096, 48, 232, 16, 28, 4, 128, torch.bfloat16, "")]
    else:  # the tiny preset's heads (3 query, 1 kv) and a Qwen2.5-0.5B layer's (14, 2), on IG-shaped tries
        shapes = [(512, 8, 56, 8, 3, 1, 64, torch.float32, "tiny preset"),
                  (512, 8, 56, 8, 14, 2, 64, torch.float32, "0.5B shape")]
        if not quick:
            shapes += [(1024, 16, 120, 8, 3, 1, 64, torch.float32, "tiny preset"),
                       (1024, 16, 120, 8, 14, 2, 64, torch.float32, "0.5B shape")]
    for shape in shapes:
        bench_tree_case(rows, device, reps, *shape)
    if device != "cuda":
        bench_tree_cached(rows, reps)


def bench_tree_cached(rows, reps):
    """Branch-only scoring: the branches and answers of the trie attend to a cached trunk (past keys)."""
    from igsearch_kernels._backend import native_reason

    trunk, branches, blen, alen, hq, hkv, d = 1024, 16, 120, 8, 3, 1, 64
    node_of_token, ancestry = shared_prefix_tree(trunk, branches, blen, alen, "cpu")
    past, run = torch.arange(trunk), torch.arange(trunk, node_of_token.numel())
    case = f"branches over a cached trunk: P={trunk} T={run.numel()} Hq={hq} Hkv={hkv} D={d} float32"
    q = torch.randn(run.numel(), hq, d)
    k, v = (torch.randn(node_of_token.numel(), hkv, d) for _ in range(2))
    kw = dict(past_k=k[past], past_v=v[past], past_node=node_of_token[past])
    args = (q, k[run], v[run], node_of_token[run], ancestry)
    if native_reason("tree_attention") is None:
        attempt(rows, "tree_attention", case, "ours (native)", lambda: tree_attention(*args, **kw, backend="native"), "cpu", reps)
    attempt(rows, "tree_attention", case, "torch path", lambda: tree_attention(*args, **kw, backend="torch"), "cpu", reps)


def bench_tree_case(rows, device, reps, trunk, branches, blen, alen, hq, hkv, d, dtype, label):
    from igsearch_kernels._backend import native_reason

    node_of_token, ancestry = shared_prefix_tree(trunk, branches, blen, alen, device)
    t = node_of_token.numel()
    case = f"{label + ': ' if label else ''}T={t} ({branches} branches) Hq={hq} Hkv={hkv} D={d} {str(dtype)[6:]}"
    q = torch.randn(t, hq, d, device=device, dtype=dtype)
    k = torch.randn(t, hkv, d, device=device, dtype=dtype)
    v = torch.randn(t, hkv, d, device=device, dtype=dtype)

    if device == "cuda":
        bm = build_tree_block_mask(node_of_token, ancestry)
        attempt(rows, "tree_attention", case, "ours (block mask reused)", lambda: tree_attention(q, k, v, node_of_token, ancestry, block_mask=bm), device, reps,
                visited_blocks=bm.visited_blocks, causal_blocks=bm.causal_blocks)
        attempt(rows, "tree_attention", case + " new tree", "ours (block mask built)", lambda: tree_attention(q, k, v, node_of_token, ancestry), device, reps)
    else:
        if native_reason("tree_attention") is None:
            attempt(rows, "tree_attention", case, "ours (native)", lambda: tree_attention(q, k, v, node_of_token, ancestry, backend="native"), device, reps)
            attempt(rows, "tree_attention", case + " new tree", "ours (native)", lambda: tree_attention(q, k, v, node_of_token, ancestry, backend="native"), device, reps)
        attempt(rows, "tree_attention", case, "torch path", lambda: tree_attention(q, k, v, node_of_token, ancestry, backend="torch"), device, reps)

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
