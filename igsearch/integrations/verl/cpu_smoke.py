"""IG-Search on verl on the CPU: ``python -m verl.trainer.main_ppo`` for a few steps on 2 FSDP2 ranks over gloo.

    .venv-verl/bin/python -m igsearch.integrations.verl.cpu_smoke            # 3 steps (make verl-cpu-smoke)

Nothing of verl's training loop is mocked: the run is verl's ``main_ppo`` (Ray, TransferQueue, the v1
trainer, FSDP2 engines, the naive checkpoint engine) with our ``igsearch_sync`` trainer, ``ig_search``
estimator and ``igsearch_agent`` loop, on the CPU seams of :mod:`igsearch.integrations.verl.cpu`
(``IGSEARCH_VERL_CPU=1``; the rollout is igsearch's ``HFEngine`` behind verl's replica interfaces).

1. It builds the demo world and installs the shipped warm start (``lookalike-small-seed0``, trained on
   that world) as the policy, serves the world's corpus (BM25) on our Search-R1 retrieval server, in
   this process, and runs ``python -m igsearch.integrations.verl.cpu_main`` with
   configs/verl/igsearch_tiny_cpu.yaml and ``algorithm.ig.dump_dir``; verl's console goes to log.txt.
   While it runs, the resident memory of its whole process tree (Ray's daemons and workers included)
   is sampled every 0.5 s.
2. It parses verl's per-step metrics from the log (metrics.json) and checks every step's losses are
   finite and that IG was scored on both data-parallel ranks (``ig/dp_size``).
3. Weights: every rollout server saved each set of weights verl synced into it. The first sync must
   equal the warm start, both replicas must hold the same weights, and the last sync must differ
   from the first (the updates changed the policy).
4. IG and advantages of step 1 (``ig_check.json``): the dumped rollouts are re-scored by igsearch
   directly, the tree scorer in fp32 on the same weights (the warm start: step 1 scores before the
   first update), and igsearch's ``ig`` estimator (``igsearch.algo.advantages``) is run on them with
   rewards recomputed from the decoded responses. Both must equal what verl computed to 1e-4. When the
   step-2 dump exists it is checked the same way on the weights synced after step 1.

Everything goes under runs/verl-cpu-smoke-<date>/ (or ``--out``). The last line printed is
``verl_cpu_smoke steps=<n> ig_equal=<true|false> seconds=<s> peak_rss_gb=<g>``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from .smoke import ROOT, parse_metrics

TOLERANCE = 1e-4
CONFIG_NAME = "igsearch_tiny_cpu"


def prepare(work: Path) -> tuple[Path, Path]:
    """(world folder, policy folder): the demo world and the shipped warm start trained on it."""
    from igsearch.warmstart import DEMONSTRATORS, WarmStartConfig, build_warm_start

    ws = build_warm_start(work, seed=0, config=WarmStartConfig(distractor=DEMONSTRATORS["lookalike"]),
                          progress=False, shipped=True, log=lambda msg: print(f"[verl_cpu_smoke] {msg}", flush=True))
    if not ws["shipped"]:
        raise RuntimeError("the shipped warm start lookalike-small-seed0 was not installed (world or files differ)")
    return Path(ws["world"]), Path(ws["sft"])


def launch_overrides(policy: Path, world: Path, retrieval_url: str, dump_dir: Path, sync_dir: Path,
                     steps: int) -> list[str]:
    return [f"actor_rollout_ref.model.path={policy}", f"data.train_files={world / 'train.parquet'}",
            f"data.val_files={world / 'dev.parquet'}", f"igsearch.retrieval_url={retrieval_url}",
            f"trainer.total_training_steps={steps}", f"algorithm.ig.dump_dir={dump_dir}",
            f"++ray_kwargs.ray_init.runtime_env.env_vars.IGSEARCH_VERL_CPU_SYNC_DIR={sync_dir}",
            f"hydra.run.dir={dump_dir.parent / 'hydra'}"]


class TreeMemory:
    """Samples the memory of a process and all its descendants: the summed RSS (shared pages count once
    per process, so an upper bound) every ``interval`` s, and the summed PSS (shared pages split between
    the processes that map them) every 4th sample, as reading it costs more."""

    def __init__(self, pid: int, interval: float = 0.5):
        import psutil

        self.root, self.interval = psutil.Process(pid), interval
        self.peak_bytes, self.peak_pss_bytes, self.peak_processes, self.samples = 0, 0, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            total, pss = 0, 0
            with_pss = self.samples % 4 == 0
            for p in procs:
                try:
                    total += p.memory_info().rss
                    if with_pss:
                        pss += p.memory_full_info().pss
                except (psutil.Error, AttributeError):
                    pass
            self.peak_bytes = max(self.peak_bytes, total)
            self.peak_pss_bytes = max(self.peak_pss_bytes, pss)
            self.peak_processes = max(self.peak_processes, len(procs))
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)


def check_weights(policy: Path, sync_dir: Path) -> dict:
    """First sync == warm start, replicas equal at every sync, last sync != first."""
    from safetensors.torch import load_file

    files = sorted(sync_dir.glob("replica*_sync*.safetensors"))
    by_replica: dict[str, list[Path]] = {}
    for f in files:
        by_replica.setdefault(f.name.split("_")[0], []).append(f)
    if not by_replica:
        return {"pass": False, "error": f"no synced weights under {sync_dir}"}
    init = load_file(str(policy / "model.safetensors"))

    def max_diff(a: dict, b: dict) -> float:
        return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)

    reps = sorted(by_replica)
    first, last = load_file(str(by_replica[reps[0]][0])), load_file(str(by_replica[reps[0]][-1]))
    missing = sorted(set(init) - set(first))
    replica_diff = 0.0
    for i in range(min(len(v) for v in by_replica.values())):
        sets = [load_file(str(by_replica[r][i])) for r in reps]
        replica_diff = max(replica_diff, *(max_diff(sets[0], s) for s in sets[1:])) if len(sets) > 1 else replica_diff
    out = {"replicas": reps, "syncs_per_replica": {r: len(v) for r, v in by_replica.items()},
           "first_sync_vs_warm_start_max_abs": max_diff(first, init) if not missing else None,
           "missing_in_sync": missing[:5], "replica_max_abs_diff": replica_diff,
           "last_vs_first_max_abs": max_diff(last, first), "last_sync_file": by_replica[reps[0]][-1].name}
    out["pass"] = (not missing and len(reps) == 2 and out["first_sync_vs_warm_start_max_abs"] == 0.0
                   and replica_diff == 0.0 and out["last_vs_first_max_abs"] > 0.0)
    return out


def check_step(dump: Path, adv_dump: Path, policy: Path, weights: Path | None, ig_options: dict, adv_config) -> dict:
    """Re-score one step's dump with igsearch directly (tree scorer, fp32) and rerun the ``ig``
    estimator; compare with verl's IG and advantages."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from igsearch.algo.advantages import AdvantageInput, compute_advantages, per_token_advantages
    from igsearch.integrations.verl.estimator import group_ids
    from igsearch.integrations.verl.reward import compute_score
    from igsearch.integrations.verl.trainer import rescore_step_ig_dump

    tok = AutoTokenizer.from_pretrained(policy)
    model = AutoModelForCausalLM.from_pretrained(policy, dtype=torch.float32, attn_implementation="sdpa").eval()
    if weights is not None:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(weights)), strict=False)
    trajs, ref, cmp = rescore_step_ig_dump(dump, model, tok, ig_options)

    rows = [json.loads(line) for line in adv_dump.read_text().splitlines()]
    rewards = [compute_score("", tok.decode(t.response_ids, skip_special_tokens=True), t.golds) for t in trajs]
    reward_diff = max(abs(r - row["reward"]) for r, row in zip(rewards, rows, strict=True))
    t_max = max(len(t.response_ids) for t in trajs)
    inp = AdvantageInput(rewards=rewards, group_ids=group_ids([row["uid"] for row in rows]),
                         query_spans=[[tuple(s.query) for s in t.steps] for t in trajs],
                         response_lengths=[t_max] * len(trajs), scores={"step_ig": [list(r) for r in ref.step_ig]})
    adv = per_token_advantages(compute_advantages(inp, adv_config), None, t_max)
    adv_diff = 0.0
    for i, (t, row) in enumerate(zip(trajs, rows)):
        want = adv[i, :len(t.response_ids)] * torch.tensor(t.loss_mask, dtype=torch.float32)
        got = torch.tensor(row["advantages"][:len(t.response_ids)], dtype=torch.float32)
        if got.numel() != want.numel():
            return {"pass": False, "error": f"row {i}: {got.numel()} advantages for {want.numel()} response tokens"}
        adv_diff = max(adv_diff, float((got - want).abs().max()))
    worst = cmp["max_abs_diff"]
    return {"dump": dump.name, "weights": weights.name if weights else "warm start", "rollouts": cmp["rollouts"],
            "steps_compared": cmp["steps_compared"], "none_mismatch": cmp["none_mismatch"], "ig_max_abs_diff": worst,
            "reward_max_abs_diff": reward_diff, "advantage_max_abs_diff": adv_diff, "tolerance": TOLERANCE,
            "ig_mean": sum(x for r in ref.step_ig for x in r if x is not None) / max(1, cmp["steps_compared"]),
            "pass": bool(cmp["steps_compared"]) and cmp["none_mismatch"] == 0 and worst <= TOLERANCE
                    and reward_diff == 0.0 and adv_diff <= TOLERANCE}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m igsearch.integrations.verl.cpu_smoke",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--out", default=None)
    ap.add_argument("--timeout", type=int, default=1500, help="seconds for the verl run")
    args = ap.parse_args(argv)

    from igsearch.integrations.verl.config import VerlIGConfig
    from igsearch.retrieval.bm25 import BM25Retriever
    from igsearch.retrieval.server import make_server

    out = Path(args.out or ROOT / "runs" / f"verl-cpu-smoke-{datetime.now():%Y%m%d-%H%M%S}").resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    world, policy = prepare(out / "work")
    server = make_server(BM25Retriever.from_corpus(world / "corpus.jsonl"))
    server.start_in_thread()
    print(f"[verl_cpu_smoke] world, warm start and retrieval server ready in {time.perf_counter() - t0:.0f}s",
          flush=True)
    dump, sync = out / "ig_dump", out / "synced_weights"
    overrides = launch_overrides(policy, world, f"{server.url}/retrieve", dump, sync, args.steps)
    cmd = [sys.executable, "-m", "igsearch.integrations.verl.cpu_main", "--config-path", str(ROOT / "configs" / "verl"),
           "--config-name", CONFIG_NAME, *overrides]
    (out / "command.txt").write_text("IGSEARCH_VERL_CPU=1 " + " ".join(cmd) + "\n")
    print("[verl_cpu_smoke] " + " ".join(cmd), flush=True)
    env = {**os.environ, "IGSEARCH_VERL_CPU": "1", "RAY_DEDUP_LOGS": "0"}
    t1 = time.perf_counter()
    with open(out / "log.txt", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        with TreeMemory(proc.pid) as mem:
            try:
                rc = proc.wait(timeout=args.timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = 124
    seconds = time.perf_counter() - t1
    server.shutdown()

    metrics = parse_metrics((out / "log.txt").read_text(errors="replace"))
    steps = sorted(metrics)
    losses_finite = bool(steps) and all(math.isfinite(metrics[s].get(k, float("nan")))
                                        for s in steps for k in ("actor/loss", "actor/pg_loss", "actor/kl_loss"))
    dp_sizes = sorted({metrics[s].get("ig/dp_size") for s in steps})
    weights = check_weights(policy, sync) if sync.is_dir() else {"pass": False, "error": "no synced weights"}

    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(ROOT / "configs" / "verl"), version_base=None):
        cfg = compose(CONFIG_NAME, overrides=[o for o in overrides if not o.startswith("hydra.")])
    ig_cfg = VerlIGConfig.from_algorithm(cfg.algorithm)
    adv_cfg = ig_cfg.advantage_config("std" if cfg.algorithm.norm_adv_by_std_in_grpo else "none")
    checks = []
    for step in (1, 2):
        d, a = dump / f"step_{step:06d}.jsonl", dump / f"step_{step:06d}_adv.jsonl"
        if not (d.exists() and a.exists()):
            continue
        w = None
        if step > 1:  # the weights synced after step - 1
            found = sorted(sync.glob(f"replica0_sync*_step{step - 1}.safetensors"))
            if not found:
                continue
            w = found[-1]
        checks.append(check_step(d, a, policy, w, ig_cfg.ig_options(), adv_cfg))
    ig_equal = bool(checks) and checks[0]["pass"]
    peak_gb = mem.peak_bytes / 2**30
    summary = {"device": "CPU", "date": datetime.now(timezone.utc).isoformat(), "returncode": rc,
               "seconds": seconds, "peak_rss_gb": peak_gb, "peak_pss_gb": mem.peak_pss_bytes / 2**30,
               "peak_processes": mem.peak_processes,
               "memory_samples": mem.samples, "steps_logged": len(steps), "losses_finite": losses_finite,
               "ig_dp_sizes": dp_sizes, "weights": weights, "ig_checks": checks,
               "step_seconds": {s: metrics[s].get("timing_s/step") for s in steps}, "per_step": metrics}
    (out / "metrics.json").write_text(json.dumps(summary, indent=1, default=str))
    (out / "ig_check.json").write_text(json.dumps(checks, indent=1))
    ok = (rc == 0 and len(steps) >= args.steps and losses_finite and dp_sizes == [2.0] and weights["pass"]
          and ig_equal)
    print(f"[verl_cpu_smoke] rc={rc} losses_finite={losses_finite} ig_dp_sizes={dp_sizes} "
          f"peak_pss_gb={mem.peak_pss_bytes / 2**30:.2f} processes={mem.peak_processes} "
          f"weights={'pass' if weights['pass'] else 'fail'} checks={[c.get('pass') for c in checks]} out={out}")
    print(f"verl_cpu_smoke steps={len(steps)} ig_equal={str(ig_equal).lower()} seconds={seconds:.1f} "
          f"peak_rss_gb={peak_gb:.2f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
