"""Chaos benchmark: the demo's RL run survives its dependencies failing at random moments (issue 35).

Two runs of the demo preset (``configs/demo.yaml`` on the demo's warm start and world, ``threads=1``,
a checkpoint every step, retrieval served over HTTP on 127.0.0.1 by ``igsearch retrieval serve``):

- the **reference**, uninterrupted;
- the **chaos** run, during which, at seeded random steps and moments, the retrieval server is
  SIGKILLed and started again on the same port after a random outage (shorter than the patience),
  the vLLM engine process (``VLLM::EngineCore``) is SIGKILLed, and the trainer's process group is
  SIGKILLed and started again with ``igsearch train --resume``.

It compares the per-step results (reward, EM, loss, gradient norm, response tokens) of
``metrics.jsonl`` (each step exactly once) and the final checkpoint's weights, and prints
``chaos_identical=<true|false>``, the number of faults of each kind and the time lost to each:

- server restarts: the seconds the trainer waited on retrieval (``retrieval/outage_s`` summed);
- engine kills: the seconds of the engine restarts (``time/engine_restart`` summed);
- trainer kills: from the kill until the resumed run logged again the last step logged before it.

Every loop is bounded (faults, relaunches, ``--time-limit``) and all traffic is on loopback.
Writes ``bench/results/chaos.json``.

    python bench/chaos.py                       # 30 steps, 3 server restarts, 2 engine kills, 2 trainer kills
    python bench/chaos.py --steps 40 --seed 1
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
#: per-step metrics that are functions of (weights, seed, step)
SAME = ("reward/mean", "em/mean", "groups/all_fail_frac", "loss", "grad_norm", "rollout/response_tokens",
        "rollout/searches")
ENGINE_PROCESS = "EngineCore"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/chaos", help="working folder (world, warm start, both runs)")
    ap.add_argument("--steps", type=int, default=30, help="RL steps of both runs (default 30)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the fault schedule (default 0)")
    ap.add_argument("--server-restarts", type=int, default=3)
    ap.add_argument("--engine-kills", type=int, default=2)
    ap.add_argument("--trainer-kills", type=int, default=2)
    ap.add_argument("--outage", type=float, nargs=2, default=(2.0, 15.0), metavar=("MIN", "MAX"),
                    help="seconds a killed retrieval server stays down (default 2-15)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of both runs (default 1)")
    ap.add_argument("--time-limit", type=float, default=3600.0, help="seconds the chaos run may take (default 3600)")
    ap.add_argument("--quick", action="store_true", help="8 steps, 1 fault of each kind (a smoke run)")
    ap.add_argument("--out", default=str(RESULTS / "chaos.json"))
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.server_restarts, args.engine_kills, args.trainer_kills = 8, 1, 1, 1
    n_faults = args.server_restarts + args.engine_kills + args.trainer_kills
    if args.steps < n_faults + 3:
        ap.error(f"--steps {args.steps}: too few for {n_faults} faults at distinct steps (need {n_faults + 3})")
    return args


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def igsearch(*args: str) -> list[str]:
    return [sys.executable, "-m", "igsearch.cli", *args]


class Server:
    """``igsearch retrieval serve`` on 127.0.0.1:port, killed and started again by the schedule."""

    def __init__(self, corpus: Path, port: int, log: Path):
        self.corpus, self.port, self.log = corpus, port, log
        self.proc = None

    def start(self) -> None:
        import requests

        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(igsearch("retrieval", "serve", "--corpus", str(self.corpus), "--host",
                                                  "127.0.0.1", "--port", str(self.port)),
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                requests.get(f"http://127.0.0.1:{self.port}/health", timeout=1)
                return
            except requests.RequestException:
                if self.proc.poll() is not None:
                    raise SystemExit(f"the retrieval server exited with {self.proc.returncode}; see {self.log}")
                time.sleep(0.2)
        raise SystemExit(f"the retrieval server did not answer within 120 s; see {self.log}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/retrieve"


class TrainerProcess:
    """``igsearch train`` in its own session (its vLLM engine included), logging to ``log``."""

    def __init__(self, argv: list[str], log: Path, threads: int):
        env = {**os.environ, "IGSEARCH_THREADS": str(threads)}
        self.started_at = time.time()
        with open(log, "a") as f:
            self.proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, start_new_session=True, env=env)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=60)

    def engine_pids(self) -> list[int]:
        import psutil

        try:
            kids = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        found = []
        for p in kids:
            try:
                if ENGINE_PROCESS in p.name() or ENGINE_PROCESS in " ".join(p.cmdline()):
                    found.append(p.pid)
            except psutil.NoSuchProcess:
                continue
        return found


def logged_steps(run: Path, since: float = 0.0) -> list[int]:
    """The steps of ``run``'s metrics.jsonl, of lines written after ``since`` (wall time)."""
    from igsearch.train.logging import read_metrics

    return [r["step"] for r in read_metrics(run) if float(r.get("time", 0.0)) > since]


def schedule(args) -> list[dict]:
    """The faults: each at its own step in [2, steps - 1], a moment into it (seconds) and, for the server, how
    long it stays down; seeded by ``--seed``."""
    rng = random.Random(args.seed)
    kinds = ["server"] * args.server_restarts + ["engine"] * args.engine_kills + ["trainer"] * args.trainer_kills
    steps = sorted(rng.sample(range(2, args.steps), len(kinds)))
    rng.shuffle(kinds)
    return [{"kind": k, "step": s, "delay_s": round(rng.uniform(0.0, 4.0), 2),
             "down_s": round(rng.uniform(*args.outage), 1) if k == "server" else 0.0}
            for k, s in zip(kinds, steps)]


def prepare(work: Path) -> dict:
    """The demo's world and warm start (the shipped one when it matches, as ``igsearch demo``)."""
    from igsearch.warmstart import DEMONSTRATORS, WarmStartConfig, build_warm_start

    cfg = replace(WarmStartConfig(), distractor=DEMONSTRATORS["lookalike"])
    ws = build_warm_start(work, seed=0, config=cfg, shipped=True, progress=False)
    return {"world": Path(ws["world"]), "sft": Path(ws["sft"])}


def train_argv(run: Path, ws: dict, server: Server, steps: int, threads: int) -> list[str]:
    from igsearch.demo import demo_preset

    return igsearch("train", "--config", str(demo_preset("lookalike")), "--out", str(run),
                    f"model_path={ws['sft']}", f"world_dir={ws['world']}", f"steps={steps}", f"threads={threads}",
                    "checkpoint_every=1", "eval_questions=0", "eval_every=0", "tensorboard=false",
                    "retrieval.retriever=http", f"retrieval.retriever_url={server.url}")


def reference_run(run: Path, argv: list[str], threads: int, time_limit: float) -> float:
    t0 = time.monotonic()
    trainer = TrainerProcess(argv, run.with_suffix(".log"), threads)
    while trainer.alive():
        if time.monotonic() - t0 > time_limit:
            trainer.kill()
            raise SystemExit(f"the reference run took over {time_limit:.0f} s")
        time.sleep(1)
    if trainer.proc.returncode != 0:
        raise SystemExit(f"the reference run failed (rc {trainer.proc.returncode}); see {run.with_suffix('.log')}")
    return time.monotonic() - t0


def chaos_run(run: Path, argv: list[str], server: Server, faults: list[dict], args) -> dict:
    """Run ``argv`` to the end while injecting ``faults``; relaunch with --resume after each trainer kill."""
    log = run.with_suffix(".log")
    resume = igsearch("train", "--resume", str(run))
    t0 = time.monotonic()
    trainer = TrainerProcess(argv, log, args.threads)
    done, lost = [], {"server": 0.0, "engine": 0.0, "trainer": 0.0}
    relaunches, unexpected = 0, []
    pending = list(faults)
    catch_up: tuple[int, float, float] | None = None  # (last step logged before a trainer kill, its wall and monotonic time)

    def wait(until, limit_s: float) -> bool:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if until():
                return True
            time.sleep(0.2)
        return False

    while True:
        if time.monotonic() - t0 > args.time_limit:
            trainer.kill()
            raise SystemExit(f"the chaos run took over {args.time_limit:.0f} s")
        steps = logged_steps(run)
        last = steps[-1] if steps else 0
        if catch_up is not None and max(logged_steps(run, since=catch_up[1]) or [0]) >= catch_up[0]:
            lost["trainer"] += time.monotonic() - catch_up[2]
            catch_up = None
        if not trainer.alive():
            rc = trainer.proc.returncode
            if rc == 0 and last >= args.steps:
                break
            unexpected.append({"rc": rc, "last_step": last})
            if relaunches >= args.trainer_kills + 3:
                raise SystemExit(f"the chaos run stopped {len(unexpected)} times on its own; see {log}")
            relaunches += 1
            trainer = TrainerProcess(resume, log, args.threads)
            continue
        if pending and last >= pending[0]["step"] - 1:  # inside the fault's step
            fault = pending.pop(0)
            time.sleep(fault["delay_s"])
            if fault["kind"] == "server":
                server.kill()
                time.sleep(fault["down_s"])
                server.start()
            elif fault["kind"] == "engine":  # once this trainer process has trained a step: its engine is up
                if not wait(lambda: (bool(logged_steps(run, since=trainer.started_at)) and bool(trainer.engine_pids()))
                            or not trainer.alive(), 600) or not trainer.alive():
                    pending.insert(0, fault)  # the trainer ended first; try again in the next loop
                    continue
                for pid in trainer.engine_pids():
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            else:
                catch_up = (max(logged_steps(run) or [0]), time.time(), time.monotonic())
                trainer.kill()
                relaunches += 1
                trainer = TrainerProcess(resume, log, args.threads)
            done.append({**fault, "at_s": round(time.monotonic() - t0, 1), "last_logged_step": last})
            continue
        time.sleep(0.5)
    from igsearch.train.logging import read_metrics

    rows = read_metrics(run)
    lost["server"] = sum(float(r.get("retrieval/outage_s", 0.0)) for r in rows)
    lost["engine"] = sum(float(r.get("time/engine_restart", 0.0)) for r in rows)
    return {"seconds": time.monotonic() - t0, "faults": done, "time_lost_s": lost, "unexpected_exits": unexpected,
            "engine_restarts_logged": sum(int(r.get("engine/restarts", 0)) for r in rows)}


def compare(reference: Path, chaos: Path, steps: int) -> dict:
    """Each step once in both metrics.jsonl, equal per-step results, equal final weights."""
    from safetensors.torch import load_file

    from igsearch.train.checkpoint import latest_checkpoint
    from igsearch.train.logging import read_metrics

    ref, got = read_metrics(reference), read_metrics(chaos)
    expected = list(range(1, steps + 1))
    out = {"steps_once": [r["step"] for r in got] == expected and [r["step"] for r in ref] == expected}
    out["per_step_equal"] = out["steps_once"] and all(
        {k: a.get(k) for k in SAME} == {k: b.get(k) for k in SAME} for a, b in zip(ref, got))
    out["differing_steps"] = [a["step"] for a, b in zip(ref, got)
                              if {k: a.get(k) for k in SAME} != {k: b.get(k) for k in SAME}]
    ca, cb = latest_checkpoint(reference), latest_checkpoint(chaos)
    same = ca is not None and cb is not None and ca.name == cb.name == f"step_{steps:06d}"
    if same:
        wa, wb = load_file(str(ca / "model" / "model.safetensors")), load_file(str(cb / "model" / "model.safetensors"))
        same = wa.keys() == wb.keys() and all(wa[k].equal(wb[k]) for k in wa)
    out["weights_equal"] = bool(same)
    out["identical"] = out["per_step_equal"] and out["weights_equal"]
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    from igsearch.machine import cpu_model

    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    ws = prepare(work)
    server = Server(ws["world"] / "corpus.jsonl", free_port(), work / "server.log")
    server.start()
    faults = schedule(args)
    print("fault schedule:", json.dumps(faults), flush=True)
    try:
        runs = {name: work / name for name in ("reference", "chaos")}
        for run in runs.values():
            for f in (run, run.with_suffix(".log")):
                if f.is_dir():
                    import shutil

                    shutil.rmtree(f)
                elif f.exists():
                    f.unlink()
        ref_s = reference_run(runs["reference"], train_argv(runs["reference"], ws, server, args.steps, args.threads),
                              args.threads, args.time_limit)
        print(f"reference: {args.steps} steps in {ref_s:.0f} s", flush=True)
        chaos = chaos_run(runs["chaos"], train_argv(runs["chaos"], ws, server, args.steps, args.threads), server,
                          faults, args)
    finally:
        server.kill()
    verdict = compare(runs["reference"], runs["chaos"], args.steps)
    counts = {k: sum(f["kind"] == k for f in chaos["faults"]) for k in ("server", "engine", "trainer")}
    result = {"device": f"CPU {cpu_model()}", "cores": os.cpu_count(), "threads": args.threads, "steps": args.steps,
              "seed": args.seed, "reference_s": ref_s, **chaos, "counts": counts, **verdict,
              "date": time.strftime("%Y-%m-%d")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    lost = chaos["time_lost_s"]
    print(f"chaos_identical={'true' if verdict['identical'] else 'false'}")
    print(f"faults: server_restarts={counts['server']} engine_kills={counts['engine']} trainer_kills={counts['trainer']}"
          f" (engine restarts logged: {chaos['engine_restarts_logged']}, unexpected exits: {len(chaos['unexpected_exits'])})")
    print(f"time_lost_s: server={lost['server']:.1f} engine={lost['engine']:.1f} trainer={lost['trainer']:.1f} "
          f"(chaos run {chaos['seconds']:.0f} s, reference {ref_s:.0f} s, {result['device']})")
    if not verdict["identical"]:
        print(f"differs: steps once {verdict['steps_once']}, per-step equal {verdict['per_step_equal']} "
              f"(steps {verdict['differing_steps'][:10]}), weights equal {verdict['weights_equal']}")
    print(f"wrote {args.out}")
    return 0 if verdict["identical"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
