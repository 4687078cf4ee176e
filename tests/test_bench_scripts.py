"""The benchmark scripts import, parse their arguments and refuse clearly what they cannot do
(no training here: a few seconds)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
STUDIES = ROOT / "studies"
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")


def load(name: str):
    """A script of bench/ (benchmarks) or studies/ (measurements of learning), imported as a module."""
    folder = BENCH if (BENCH / f"{name}.py").exists() else STUDIES
    sys.path[:0] = [str(BENCH), str(STUDIES)]
    try:
        spec = importlib.util.spec_from_file_location(f"{folder.name}_{name}", folder / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(BENCH))
        sys.path.remove(str(STUDIES))


def run(*args, timeout=60):
    return subprocess.run([*args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_help_runs_as_a_script():
    # one script end to end in a fresh interpreter (the others: in process below, to stay fast)
    res = run(sys.executable, str(BENCH / "step_overhead.py"), "--help")
    assert res.returncode == 0, res.stderr
    assert "--quick" in res.stdout and "--steps" in res.stdout


@pytest.mark.parametrize("script", ["kernels", "ig_scoring", "step_overhead", "replicate", "ig_coefficients"])
def test_import_and_help_in_process(script, capsys):
    mod = load(script)
    main = getattr(mod, "main")
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "--quick" in capsys.readouterr().out


def test_step_overhead_arguments():
    mod = load("step_overhead")
    a = mod.parse_args(["--quick"])
    assert a.preset == "quick" and a.steps >= 1 and a.sft_steps > 0 and a.entities
    g = mod.parse_args(["--preset", "gpu", "--steps", "2", "lr=1e-6"])
    assert g.preset == "gpu" and g.steps == 2 and g.overrides == ["lr=1e-6"] and g.entities is None
    assert a.precision == "both" and g.precision == "auto"  # two 3B Trainers would not fit one GPU
    with pytest.raises(SystemExit):
        mod.parse_args(["--preset", "tpu"])
    assert mod.table(mod.summarize([_fake_step(1.0, 1.1, 1.5)])).count("\n") == 4


def _fake_step(grpo, tree, naive):
    def m(total):
        phases = dict.fromkeys(load("step_overhead").PHASES, 0.0)
        phases["update"] = total
        return {"phases": phases, "step": total}
    return {"methods": {"grpo": m(grpo), "ig-tree": m(tree), "ig-naive": m(naive)}}


def test_step_overhead_summary_overhead():
    mod = load("step_overhead")
    s = mod.summarize([_fake_step(2.0, 2.2, 3.0), _fake_step(2.0, 2.2, 3.0)])
    assert s["grpo"]["overhead_pct"] == pytest.approx(0.0)
    assert s["ig-tree"]["overhead_pct"] == pytest.approx(10.0)
    assert s["ig-naive"]["overhead_pct"] == pytest.approx(50.0)


def test_replicate_arguments():
    mod = load("replicate")
    q = mod.parse_args(["--quick"])
    assert q.quick and q.seeds == [0] and q.steps <= 5
    assert set(mod.parse_args([]).methods) >= {"grpo", "ig"}  # every registered estimator by default
    f = mod.parse_args(["--seeds", "3,4", "--steps", "7", "--sft-steps", "0"])
    assert f.seeds == [3, 4] and f.steps == 7 and f.sft_steps == 0 and f.test_questions > q.test_questions
    assert mod.parse_args(["--methods", "ig"]).methods == ["ig"]
    with pytest.raises(SystemExit):
        mod.parse_args(["--methods", ","])
    assert load("replication_report").mean_spread([1.0, 3.0]) == {"mean": 2.0, "std": pytest.approx(2 ** 0.5), "min": 1.0, "max": 3.0, "n": 2}


def test_replicate_reuses_a_record_only_with_the_same_ig_settings(tmp_path):
    import igsearch.methods  # noqa: F401  (registers rloo, gigpo, igpo)
    from igsearch.train.config import load_config

    mod = load("replicate")
    cfg = load_config(ROOT / "configs" / "tiny-cpu.yaml", [])
    other = load_config(ROOT / "configs" / "tiny-cpu.yaml", ["scoring.answer_tokens=separate"])
    for method in ("ig", "igpo"):  # they score continuations: a changed scoring default must retrain them
        assert mod.run_identity(cfg, method)["scoring"]["answer_tokens"] == cfg.scoring.answer_tokens
        assert mod.run_identity(cfg, method) != mod.run_identity(other, method)
    for method in ("grpo", "rloo", "gigpo"):  # they do not: their records stay reusable
        assert mod.run_identity(cfg, method) == mod.run_identity(other, method)
    assert mod.run_identity(cfg, "grpo") != mod.run_identity(load_config(ROOT / "configs" / "tiny-cpu.yaml", ["lr=0.5"]), "grpo")
    assert mod.run_identity(cfg, "ig") != mod.run_identity(load_config(ROOT / "configs" / "tiny-cpu.yaml", ["ig.beta=0.1"]), "ig")
    # a record made before the demo's presets (overrides on tiny-cpu.yaml, the ig section apart) still matches
    old = {"overrides": ["lr=1e-4"], "ig_settings": {"ig_answer_tokens": cfg.scoring.answer_tokens}}
    assert mod.recorded_identity(old, "ig") == mod.run_identity(cfg, "ig")
    assert mod.recorded_identity({**old, "ig_settings": {"ig_answer_tokens": "separate"}}, "ig") is None
    # a record whose config an older version wrote (the ig section with its stuttering names, flat overrides)
    # matches the same run in today's spelling
    v1 = cfg.to_dict()
    v1.pop("config_version")
    v1.pop("scoring")
    v1["ig"] = {"ig_beta": 0.5, "ig_norm": "group", "ig_clip": 2.0, "span_weight": "uniform", "ig_n_random": 3,
                "ig_answer_tokens": cfg.scoring.answer_tokens, "ig_scorer": cfg.scoring.scorer,
                "ig_max_context_tokens": cfg.scoring.max_context_tokens}
    assert mod.recorded_identity({"config": v1}, "ig") == mod.run_identity(cfg, "ig")
    assert mod.recorded_identity({"config": {**v1, "ig": {**v1["ig"], "ig_beta": 0.3}}}, "ig") != mod.run_identity(cfg, "ig")
    assert mod.recorded_identity({"overrides": ["method=grpo"]}, "grpo") == mod.run_identity(
        load_config(ROOT / "configs" / "tiny-cpu.yaml", ["advantage.method=grpo"]), "grpo")


@no_cuda
def test_step_overhead_gpu_preset_refuses_without_cuda():
    res = run(sys.executable, str(BENCH / "step_overhead.py"), "--preset", "gpu", timeout=30)
    assert res.returncode != 0
    assert "CUDA" in res.stderr and "--quick" in res.stderr


@no_cuda
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_suite_refuses_without_cuda(tmp_path):
    syntax = run("bash", "-n", str(BENCH / "gpu_suite.sh"))
    assert syntax.returncode == 0, syntax.stderr
    res = subprocess.run(["bash", str(BENCH / "gpu_suite.sh"), str(tmp_path / "out")], cwd=ROOT, capture_output=True,
                         text=True, timeout=30, env={**__import__("os").environ, "PYTHON": sys.executable})
    assert res.returncode == 2 and "no CUDA GPU" in res.stderr
    assert not (tmp_path / "out").exists()


def _coefficient_batch():
    # group 0 mixed: rollout 0 succeeds with a weak search step, rollouts 1-3 fail, rollout 3 with a
    # strong one; group 1: every rollout fails, IG still differs between their steps.
    return {"rewards": [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], "group_ids": [0, 0, 0, 0, 1, 1, 1, 1],
            "step_ig": [[-0.5], [0.0], [0.1], [0.9], [0.2], [-0.2], [0.4], [-0.4]],
            "query_spans": [[[1, 4]]] * 8, "lengths": [10] * 8}


def test_ig_coefficients_effects_of_beta():
    mod = load("ig_coefficients")
    batch = [_coefficient_batch()]
    small, large = mod.effects(batch, 0.1, None), mod.effects(batch, 2.0, None)
    # A_success = 1.5 and A_fail = -0.5 (sample std); the weak step of the success turns negative only for large beta
    assert small["success_punished"] == 0.0 and large["success_punished"] == 1.0
    # the strong step of the failed rollout 3 turns positive for large beta only
    assert small["failure_credited"] == 0.0 and 0.0 < large["failure_credited"] < 1.0
    # the all-fail signal is linear in beta without clipping, and 0 steps are clipped
    assert large["all_fail_signal"] == pytest.approx(20 * small["all_fail_signal"])
    assert small["clip_frac"] == 0.0 and mod.effects(batch, 0.5, 0.5)["clip_frac"] > 0.0
    assert small["success_punished_steps"] == [0, 1] and large["success_punished_steps"] == [1, 1]
    assert mod.ig_summary(batch)["success"]["mean"] == pytest.approx(-0.5)


def test_ig_coefficients_rule():
    mod = load("ig_coefficients")
    assert mod.wilson_upper(0, 83) == pytest.approx(1.96 ** 2 / (83 + 1.96 ** 2))
    assert mod.wilson_upper(0, 0) == 1.0 and mod.wilson_upper(5, 10) > 0.5 > mod.wilson_upper(0, 10) - 0.3

    def row(beta, clip, clip_frac, ub):
        return {"beta": beta, "clip": clip, "clip_frac": clip_frac, "success_punished_ub": ub}

    grid = [row(b, c, cf, ub) for c, cf in ((1.0, 0.3), (2.0, 0.02), (3.0, 0.0))
            for b, ub in ((0.25, 0.02), (0.5, 0.05), (1.0, 0.2))]
    assert (mod.choose(grid)["beta"], mod.choose(grid)["clip"]) == (0.5, 2.0)  # tightest clip <= 5%, then beta
    assert mod.choose([row(0.5, 2.0, 0.02, 0.5)]) is None


def test_ig_coefficients_samples_with_the_replications_ig_run(tmp_path, monkeypatch):
    """The sampling path's setup, without sampling: it finds the warm start the replication built with its
    defaults (rather than building another) and samples with the replication's IG-Search config."""
    import igsearch.warmstart

    mod = load("ig_coefficients")
    monkeypatch.syspath_prepend(str(STUDIES))  # as when run as a script: `from replicate import ...`
    monkeypatch.setattr(igsearch.warmstart, "build_warm_start", lambda *a, **k: pytest.fail("rebuilt the warm start"))
    rep = load("replicate").parse_args([])
    world, sft = tmp_path / "world", tmp_path / "sft"
    world.mkdir()
    (world / "manifest.json").write_text("{}")
    key = {"world_seed": rep.world_seed, "warm_start": load("replicate").warm_start_config(rep).setup_key()}
    (tmp_path / "setup.json").write_text(json.dumps({"key": key, "sft": str(sft), "world": str(world)}))
    cfg = mod.probe_config(mod.parse_args(["--seed", "3"]), tmp_path)
    assert (cfg.advantage.method, cfg.seed, cfg.steps, cfg.eval_every) == ("ig", 3, 1, 0)
    assert Path(cfg.model_path) == sft and Path(cfg.world_dir) == world


def test_ig_coefficients_reanalyses_stored_rollouts(tmp_path):
    mod = load("ig_coefficients")
    stored = {"time": "2026-01-02T00:00:00+00:00", "device": "CPU test (1 threads)", "batches": [_coefficient_batch()],
              "args": {"batches": 1, "questions": 2, "sft_steps": 0, "seed": 0, "quick": False}}
    src = tmp_path / "old.json"
    src.write_text(json.dumps(stored))
    assert mod.main(["--from-json", str(src), "--out", str(tmp_path / "re")]) == 0
    out = json.loads((tmp_path / "re.json").read_text())
    # the sampling's device and date, the tokenization of results from before the field, the run defaults
    assert (out["device"], out["time"], out["answer_tokens"]) == (stored["device"], stored["time"], "separate")
    assert out["defaults"] == [0.5, 2.0] and len(out["grid"]) == len(mod.BETAS) * len(mod.CLIPS)
    assert "tokenized `separate`" in (tmp_path / "re.md").read_text() and (tmp_path / "re.png").stat().st_size > 0


def _run(per_source: dict[str, list[int]], curve=((0, 0.0, 0.1), (10, 60.0, 0.2))):
    """A fake replicate run: final per-question EMs per data source, and (step, train_s, EM) evaluations."""
    records = [{"id": f"{src}-{i}", "data_source": src, "em": float(e)}
               for src, ems in per_source.items() for i, e in enumerate(ems)]
    warm = [{**r, "em": 0.0} for r in records]
    evals = {step: {"metrics": {"overall": {"em": em}}, "records": records if step else warm, "train_s": t}
             for step, t, em in curve}
    return {"evals": evals, "steps": [], "probes": []}


def test_replicate_records_no_run_that_stopped_early(tmp_path, monkeypatch):
    """A run stopped by SIGTERM returns from the trainer's loop with its checkpoint; the replication must not
    record (and later reuse) it as a finished run."""
    import igsearch.train.trainer

    class Stopped:
        def __init__(self, cfg, out, overwrite=False):
            self.cfg, self.logger = cfg, type("L", (), {"close": lambda self: None})()

        def add_hook(self, fn):
            pass

        def run(self):
            return {"steps": 2, "out": "x", "stopped_by": "SIGTERM"}

        def close(self):
            pass

    monkeypatch.setattr(igsearch.train.trainer, "Trainer", Stopped)
    mod = load("replicate")
    args = mod.parse_args(["--steps", "5"])
    with pytest.raises(SystemExit, match="stopped at step 2 of 5 \\(SIGTERM\\); no record written"):
        mod.train_one(args, ["model_path=/m", "steps=5", "advantage.method=grpo"], tmp_path / "run")


def test_replicate_verdict_follows_the_stated_rule():
    mod = load("replication_report")
    agg = {"ig": {"all_fail_grad_norm_mean": 0.1}, "grpo": {"all_fail_grad_norm_mean": 0.0}}
    grpo = {0: _run({"world_1hop": [1] * 30 + [0] * 70, "world_2hop": [1] * 10 + [0] * 90}),
            1: _run({"world_1hop": [1] * 30 + [0] * 70, "world_2hop": [1] * 10 + [0] * 90})}
    ahead = {s: _run({"world_1hop": [1] * 35 + [0] * 65, "world_2hop": [1] * 40 + [0] * 60}) for s in (0, 1)}
    runs = {"grpo": grpo, "ig": ahead}
    text = "\n".join(mod.verdict(runs, agg, mod.paired(runs, "grpo", "ig")))
    assert "1. IG-Search beats the trajectory baseline (overall: +0.175" in text and "**held**" in text
    assert "largest: world_2hop): **held**" in text and "IG 0.1, GRPO 0): **held**" in text
    same = {"grpo": grpo, "ig": {s: _run({"world_1hop": [1] * 31 + [0] * 69, "world_2hop": [1] * 10 + [0] * 90})
                                 for s in (0, 1)}}
    text = "\n".join(mod.verdict(same, agg, mod.paired(same, "grpo", "ig")))
    assert "**not shown (the interval contains 0)**" in text and "not applicable (no overall gain)" in text
    behind = {"grpo": ahead, "ig": grpo}
    assert "**did not hold (GRPO ahead)**" in "\n".join(mod.verdict(behind, agg, mod.paired(behind, "grpo", "ig")))
    warm = mod.paired(runs, "warm start", "ig")["overall"]
    assert warm["a"] == 0.0 and warm["diff"] == pytest.approx(0.375) and warm["low"] > 0


def test_replicate_seed_paired_interval_carries_the_spread_between_seeds():
    """The same mean gain, once steady over seeds and once from one seed alone: the interval that resamples
    seeds then questions is narrow in the first case and contains 0 in the second, where the questions-only
    interval over seed-averaged EM still excludes it."""
    mod = load("replication_report")
    base = {"world_1hop": [1] * 40 + [0] * 160}
    grpo = {s: _run(base) for s in (0, 1, 2)}
    steady = {"grpo": grpo, "ig": {s: _run({"world_1hop": [1] * 60 + [0] * 140}) for s in (0, 1, 2)}}
    lucky = {"grpo": grpo, "ig": {0: _run({"world_1hop": [1] * 100 + [0] * 100}), 1: _run(base), 2: _run(base)}}
    row = mod.seed_paired(steady, "grpo", "ig", n_boot=2000)["overall"]
    assert row["diff"] == pytest.approx(0.1) and 0 < row["low"] < 0.1 < row["high"] and row["seeds"] == 3
    row = mod.seed_paired(lucky, "grpo", "ig", n_boot=2000)["overall"]
    assert row["diff"] == pytest.approx(0.1) and row["low"] <= 0 < row["high"]
    assert mod.paired(lucky, "grpo", "ig")["overall"]["low"] > 0  # questions only: the lucky seed looks like a gain


def test_replicate_report_only_reuses_the_records_and_writes_the_report(tmp_path, capsys):
    """`studies/replicate.py --report-only` (runs: replicate.py; report: replication_report.py) finds the
    warm start and the recorded runs in --work-dir, trains nothing, and writes the JSON, Markdown and plots."""
    mod = load("replicate")
    argv = ["--report-only", "--methods", "grpo,ig", "--seeds", "0,1", "--steps", "2", "--eval-every", "2",
            "--work-dir", str(tmp_path / "work"), "--out", str(tmp_path / "out" / "rep")]
    args = mod.parse_args(argv)
    world, sft = tmp_path / "world", tmp_path / "sft"
    world.mkdir()
    (world / "manifest.json").write_text(json.dumps({"n_entities": 30, "splits": {"test": 4}}))
    key = {"world_seed": args.world_seed, "warm_start": mod.warm_start_config(args).setup_key()}
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "setup.json").write_text(json.dumps({"key": key, "sft": str(sft), "world": str(world)}))
    for method, ems in (("grpo", [1, 0, 0, 0]), ("ig", [1, 1, 0, 0])):
        for seed in args.seeds:
            run = _run({"world_1hop": ems}, curve=((0, 0.0, 0.25), (2, 10.0, sum(ems) / 4)))
            for ev in run["evals"].values():
                em = ev["metrics"]["overall"]["em"]
                ev["metrics"] = {s: {"em": em, "n": 4, "searches": 1.0} for s in ("world_1hop", "overall")}
            run["steps"] = [{"step": s, "grad_norm": 1.0, "wall_s": 5.0, "groups/all_fail_frac": 0.5} for s in (1, 2)]
            run["probes"] = [{"step": 1, "n_groups": 2, "n_all_fail": 1, "grad_norm": 0.1 if method == "ig" else 0.0,
                              "adv_abs_mean": 0.1, "seconds": 0.0}]
            overrides = mod.run_overrides(args, world, sft, method, seed)
            run["config"] = mod.run_identity(mod.run_config(args, overrides), method)
            (tmp_path / "work" / f"{method}-seed{seed}").mkdir()
            (tmp_path / "work" / f"{method}-seed{seed}" / "replicate_record.json").write_text(json.dumps(run))
    assert mod.main(argv) == 0
    out = json.loads((tmp_path / "out" / "rep.json").read_text())
    assert out["summary"]["ig"]["test_em"]["overall"]["mean"] == 0.5 and out["plots"] == ["rep_em.png", "rep_allfail_grad.png"]
    assert "IG-Search beats the trajectory baseline" in (tmp_path / "out" / "rep.md").read_text()
    assert (tmp_path / "out" / "rep_em.png").stat().st_size > 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "em_grpo=0.250 em_ig=0.500"


def test_replicate_time_to_quality_uses_grpos_best_mean_em():
    mod = load("replication_report")
    g = {s: _run({"world_1hop": [1, 0]}, curve=((0, 0.0, 0.5), (10, 100.0, 0.3), (20, 200.0, 0.25))) for s in (0, 1)}
    fast = {s: _run({"world_1hop": [1, 0]}, curve=((0, 0.0, 0.5), (10, 130.0, 0.35), (20, 260.0, 0.4))) for s in (0, 1)}
    slow = {0: _run({"world_1hop": [1, 0]}, curve=((0, 0.0, 0.5), (10, 50.0, 0.2), (20, 100.0, 0.2)))}
    ttq = mod.time_to_quality({"grpo": g, "ig": fast, "other": slow})
    assert ttq["target_em"] == pytest.approx(0.3) and ttq["warm_start_em"] == pytest.approx(0.5)  # step 0 is no target
    assert ttq["methods"] == {"grpo": {"step": 10, "seconds": 100.0}, "ig": {"step": 10, "seconds": 130.0}, "other": None}


def test_retrieval_server_benchmark_help_and_percentile():
    mod = load("retrieval_server")
    with pytest.raises(SystemExit) as e:
        mod.main(["--help"])
    assert e.value.code == 0
    assert mod._percentile([3.0, 1.0, 2.0, 4.0, 5.0], 0.5) == 3.0 and mod._percentile([1.0, 9.0], 0.99) == 9.0


def test_warm_start_robustness_report_pairs_builds_on_the_same_questions(tmp_path, monkeypatch):
    from igsearch.warmstart import WarmStartConfig

    mod = load("warm_start_robustness")
    monkeypatch.setattr(mod, "RESULTS", tmp_path / "results")

    def build(seed, threads, ems):
        recs = [{"id": f"q{i}", "data_source": "w", "em": float(e), "f1": float(e), "searches": 1,
                 "finish_reason": "answer"} for i, e in enumerate(ems)]
        m = {"overall": {"em": sum(ems) / len(ems)}}
        d = tmp_path / f"seed{seed}-t{threads}"
        d.mkdir()
        (d / "robust.json").write_text(json.dumps({
            "seed": seed, "threads": threads, "warm_start_seconds": 1.0, "policy_size": WarmStartConfig.policy_size,
            "sft_steps": WarmStartConfig.steps,
            "dev_greedy": {"metrics": m, "records": recs}, "train_greedy": {"metrics": m, "records": recs},
            "dev_sampled": {"metrics": m, "records": recs}}))

    build(0, 2, [1, 1, 0, 0])
    build(1, 1, [1, 0, 0, 0])
    text = mod.report(tmp_path)
    assert "| 1 | 1 |" in text and "-0.250" in text and "spread 0.250" in text
    assert (tmp_path / "results" / "warm_start_robustness.md").exists()


def test_policy_size_report_pools_seeds_and_pairs_against_base(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    mod = load("warm_start_robustness")
    monkeypatch.setattr(mod, "RESULTS", tmp_path / "results")

    def build(folder, size, steps, seed, ems, n_params, threads=1):
        recs = [{"id": f"q{i}", "data_source": f"world_{1 + i % 2}hop", "em": float(e), "f1": float(e),
                 "searches": 1, "finish_reason": "answer"} for i, e in enumerate(ems)]
        m = {"overall": {"em": sum(ems) / len(ems)}}
        d = tmp_path / "builds" / folder
        (d / "sft").mkdir(parents=True)
        save_file({"w": torch.zeros(n_params - 3), "b": torch.zeros(3)}, str(d / "sft" / "model.safetensors"))
        record = {"seed": seed, "threads": threads, "warm_start_seconds": 1.0,
                  "dev_greedy": {"metrics": m, "records": recs}, "train_greedy": {"metrics": m, "records": recs},
                  "dev_sampled": {"metrics": m, "records": recs}}
        if size != "base":  # builds from before the field record neither
            record.update(policy_size=size, sft_steps=steps)
        (d / "robust.json").write_text(json.dumps(record))

    build("seed0-t1", "base", 700, 0, [1, 0, 0, 0], 10)
    build("seed1-t1", "base", 700, 1, [1, 1, 0, 0], 10)
    build("seed0-t2", "base", 700, 0, [0, 0, 0, 0], 10, threads=2)  # another thread count: left out
    build("large-sft285-seed0-t1", "large", 285, 0, [1, 1, 1, 0], 25)
    build("large-sft285-seed1-t1", "large", 285, 1, [1, 1, 1, 1], 25)
    text = mod.report_sizes(tmp_path / "builds", threads=1)
    # base averages 0.375 per question-seed, large 0.875: +0.5 overall; 2-hop (q1, q3): 0.25 -> 0.75
    assert "| large | 2.5e-05M" not in text and "| large | 0.00M | 285 | 0 |" in text
    assert "| large | 285 | 2 | 0.875 | 0.750 - 1.000 |" in text and "| +0.500 [" in text
    assert "| base | 700 | 2 | 0.375 | 0.250 - 0.500 |" in text
    saved = json.loads((tmp_path / "results" / "policy_size.json").read_text())
    large = next(g for g in saved["groups"] if g["policy_size"] == "large")
    two_hop = large["vs_base"]["world_2hop"]
    assert large["parameters"] == 25 and (two_hop["a"], two_hop["b"]) == pytest.approx((0.25, 0.75))
    assert (tmp_path / "results" / "policy_size.png").stat().st_size > 0
    # the robustness report keeps to the default warm start, which none of these is
    from igsearch.warmstart import WarmStartConfig

    with pytest.raises(SystemExit, match=f"default warm start \\({WarmStartConfig.policy_size}, {WarmStartConfig.steps} "):
        mod.report(tmp_path / "builds")
    with pytest.raises(SystemExit, match="is not a build of this script"):
        mod.main(["--rl", "nothing-here", "--root", str(tmp_path / "builds")])


def test_warm_start_setup_key_keeps_old_builds_reusable():
    from dataclasses import asdict, replace

    from igsearch.policy.tiny import POLICY_SIZES, policy_shape
    from igsearch.warmstart import WarmStartConfig

    # a build of the base size (by the oracle) has the key it had before the fields existed (as in runs/*/setup.json)
    legacy = replace(WarmStartConfig(), policy_size="base", steps=700, sft_topks=())
    assert legacy.setup_key() == {k: v for k, v in asdict(legacy).items()
                                  if k not in ("policy_size", "distractor", "eval_split_size", "sft_topks", "precision",
                                               "relations")}
    assert replace(WarmStartConfig(), precision="bf16").setup_key()["precision"] == "bf16"  # a bf16 build differs
    assert WarmStartConfig().setup_key()["sft_topks"] == [1, 2, 3]  # a build over a range of topk differs
    assert replace(WarmStartConfig(), distractor=0.6).setup_key()["distractor"] == 0.6  # a look-alike build differs
    assert replace(WarmStartConfig(), eval_split_size=1000).setup_key()["eval_split_size"] == 1000
    assert replace(WarmStartConfig(), relations="dense").setup_key()["relations"] == "dense"  # a dense world differs
    assert WarmStartConfig().setup_key()["policy_size"] == WarmStartConfig.policy_size != "base"
    assert replace(WarmStartConfig(), policy_size="large").setup_key()["policy_size"] == "large"
    assert set(POLICY_SIZES) >= {"small", "base", "large"}
    assert policy_shape("large")["hidden_size"] > policy_shape("base")["hidden_size"] > policy_shape("small")["hidden_size"]
    with pytest.raises(ValueError, match="not one of small, base, large"):
        policy_shape("huge")


def test_read_check_retriever_answers_another_query():
    mod = load("warm_start_robustness")

    class Echo:
        def retrieve(self, queries, topk):
            return [[f"doc for {q}"] * topk for q in queries]

    titles = [f"title {i}" for i in range(50)]
    first = mod.OtherQueryRetriever(Echo(), titles, seed=3).retrieve(["who wrote X", "where is Y"], 2)
    again = mod.OtherQueryRetriever(Echo(), titles, seed=3).retrieve(["who wrote X", "where is Y"], 2)
    assert first == again and len(first) == 2 and all(len(docs) == 2 for docs in first)
    assert all(docs[0].removeprefix("doc for ") in titles for docs in first)


def test_warm_start_sft_kwargs_are_run_sfts_arguments():
    import inspect
    from dataclasses import replace

    from igsearch.train.sft import run_sft
    from igsearch.warmstart import WarmStartConfig

    kwargs = replace(WarmStartConfig(), steps=7, lr=0.5).sft_kwargs()
    assert set(kwargs) <= set(inspect.signature(run_sft).parameters)
    assert (kwargs["split"], kwargs["steps"], kwargs["lr"]) == ("warmup", 7, 0.5)


@pytest.mark.vllm
def test_ig_scoring_quick_path_runs_with_the_vllm_peer_in_both_precisions(tmp_path, capsys):
    """The README's `python bench/ig_scoring.py --quick` reaches the vLLM prefix-cache peer (it once crashed
    there: the engine went into the scorer's options instead of the Scorer); fp32 and bf16 side by side."""
    mod = load("ig_scoring")
    out = tmp_path / "ig_scoring.json"
    mod.main(["--quick", "--skip-large", "--max-cases", "1", "--repeats", "1", "--out", str(out)])
    res = json.loads(out.read_text())
    rows = {r["precision"]: r for r in res["rows"]}
    assert set(rows) == {"fp32", "bf16"} and res["cpu"]
    engine_row = next(r for r in rows.values() if "vllm" in r)  # the engine's precision: auto's
    assert engine_row["vllm"]["tokens_forwarded"] > 0 and engine_row["vllm_ig_diff"] < 0.1
    assert rows["fp32"]["max_ig_diff"] < 1e-4  # the exact scorers agree in fp32
    cmp = rows["bf16"]["ig_vs_fp32"]["trunk"]
    assert cmp["n"] == rows["bf16"]["steps_scored"] and cmp["spearman"] > 0.9
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert "vllm_seconds=" in last and "bf16_speedup_trunk=" in last


def test_chaos_schedule_is_seeded_and_puts_each_fault_at_its_own_step():
    chaos = load("chaos")
    args = chaos.parse_args(["--steps", "30", "--seed", "3"])
    faults = chaos.schedule(args)
    assert faults == chaos.schedule(chaos.parse_args(["--steps", "30", "--seed", "3"]))
    assert [f["kind"] for f in faults].count("server") == 3 and [f["kind"] for f in faults].count("trainer") == 2
    steps = [f["step"] for f in faults]
    assert steps == sorted(set(steps)) and 2 <= steps[0] and steps[-1] < 30
    assert all(2.0 <= f["down_s"] <= 15.0 for f in faults if f["kind"] == "server")
    with pytest.raises(SystemExit):
        chaos.parse_args(["--steps", "6"])  # 7 faults cannot each have their own step
