"""studies/demo_worlds.py's page on made-up demo folders whose answer is known: the paired change at every
evaluated step, the first step count meeting the target on every world, reuse of finished demos (no training)."""

from __future__ import annotations

import json

import pytest

from test_bench_scripts import load

HOPS = ("world_1hop", "world_2hop")
N = 100  # questions per hop count


def write_demo(folder, seed: int, right_by_step: dict[int, int], *, steps: int = 20, precision: str = "fp32"):
    """A finished ``igsearch demo`` folder: at each evaluated step, the first ``right`` questions of each hop
    count answered; step s's training clock at 6 s a step."""
    evals = folder / "train" / "evals"
    evals.mkdir(parents=True)
    metrics = []
    for step, right in right_by_step.items():
        records = [{"id": f"{h}-{i}", "data_source": h, "em": float(i < right)} for h in HOPS for i in range(N)]
        em = sum(r["em"] for r in records) / len(records)
        (evals / f"step_{step:06d}.json").write_text(json.dumps({
            "step": step, "greedy": {"metrics": {"overall": {"em": em, "searches": 1.5 + step / 100}}, "records": records}}))
        metrics.append({"step": step, "time/train_elapsed": 6.0 * step})
    (folder / "train" / "metrics.jsonl").write_text("\n".join(json.dumps(m) for m in metrics) + "\n")
    (folder / "demo.json").write_text(json.dumps({
        "seed": seed, "steps": steps, "method": "ig", "overrides": [f"precision={precision}"],
        "precision": f"precision {precision} (forced): asked for", "warm_start": {"shipped": seed == 0, "seconds": 9.0},
        "time_breakdown": [{"phase": "RL steps", "seconds": 120.0}, {"phase": "RL evaluations", "seconds": 30.0},
                           {"phase": "total", "seconds": 200.0}]}))


@pytest.fixture()
def study():
    return load("demo_worlds")


def test_first_step_meeting_the_target_on_every_world(study, tmp_path):
    work = tmp_path / "runs"
    # world 0 reaches +0.12 at step 10; world 1 only +0.05 at 10 and +0.15 at 20
    write_demo(work / "seed0", 0, {0: 40, 10: 52, 20: 55})
    write_demo(work / "seed1", 1, {0: 30, 10: 35, 20: 45})
    out = tmp_path / "page"
    assert study.main(["--worlds", "0,1", "--steps", "20", "--work-dir", str(work), "--out", str(out),
                       "--report-only"]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["first_meeting_step"] == 20
    rows = {r["step"]: r for r in result["per_world"]["0"]["rows"]}
    assert rows[10]["overall"]["diff"] == pytest.approx(0.12)
    assert rows[10]["overall"]["low"] > 0 and rows[10]["world_1hop"]["diff"] == pytest.approx(0.12)
    assert rows[20]["train_min"] == pytest.approx(2.0)
    w1 = {r["step"]: r for r in result["per_world"]["1"]["rows"]}
    assert w1[10]["overall"]["diff"] == pytest.approx(0.05) and not study.meets(w1[10])
    page = out.with_suffix(".md").read_text()
    assert "First step count meeting it on every world: 20" in page
    assert "| 0 | overall | 0.400 | 0.550 (step 20) | +0.150 [" in page and "| 1.50 -> 1.70 |" in page
    assert out.with_name("page.png").stat().st_size > 0


def test_no_step_meets_when_a_world_falls_short(study, tmp_path):
    work = tmp_path / "runs"
    write_demo(work / "seed0", 0, {0: 40, 10: 60, 20: 60})
    write_demo(work / "seed2", 2, {0: 40, 10: 44, 20: 48})  # +0.08 at best
    out = tmp_path / "page"
    study.main(["--worlds", "0,2", "--steps", "20", "--work-dir", str(work), "--out", str(out), "--report-only"])
    assert json.loads(out.with_suffix(".json").read_text())["first_meeting_step"] is None
    assert "every world: none (up to step 20)" in out.with_suffix(".md").read_text()


def test_a_demo_with_other_settings_is_not_reused(study, tmp_path):
    work = tmp_path / "runs"
    write_demo(work / "seed0", 0, {0: 40, 10: 52}, steps=10)
    write_demo(work / "seed1", 1, {0: 40, 20: 52}, precision="bf16")
    args = study.parse_args(["--steps", "20", "--work-dir", str(work)])
    assert not study.finished(args, 0, work / "seed0")  # 10 steps, not 20
    assert not study.finished(args, 1, work / "seed1")  # bf16, not fp32
    with pytest.raises(SystemExit, match=r"worlds \[0, 1\] have no finished demo"):
        study.main(["--worlds", "0,1", "--steps", "20", "--work-dir", str(work), "--out", str(tmp_path / "p"),
                    "--report-only"])


def test_a_change_of_exactly_the_target_meets_it(study, tmp_path):
    work = tmp_path / "runs"
    write_demo(work / "seed0", 0, {0: 40, 10: 50})  # +10 of 100 questions per hop count: +0.10 exactly
    out = tmp_path / "page"
    study.main(["--worlds", "0", "--steps", "20", "--work-dir", str(work), "--out", str(out), "--report-only"])
    assert json.loads(out.with_suffix(".json").read_text())["first_meeting_step"] == 10
    assert not study.meets({"overall": {"diff": 0.099, "low": 0.02}})
    assert not study.meets({"overall": {"diff": 0.12, "low": 0.0}})  # the interval must lie above 0


def test_a_regenerated_page_keeps_the_machine_and_jobs_the_demos_ran_with(study, tmp_path):
    """--report-only runs no demo, so its own CPU, date, --threads and --jobs are not the demos': the page keeps
    those of the page it replaces, or says they were not recorded."""
    work = tmp_path / "runs"
    write_demo(work / "seed0", 0, {0: 40, 10: 50})
    out = tmp_path / "page"
    argv = ["--worlds", "0", "--steps", "20", "--work-dir", str(work), "--out", str(out), "--report-only",
            "--jobs", "1", "--threads", "1"]
    study.main(argv)
    assert "CPU not recorded (page regenerated with --report-only), torch ?, ? thread(s) a demo, ? side by side" \
        in out.with_suffix(".md").read_text()
    result = json.loads(out.with_suffix(".json").read_text())
    result.update(cpu="Made-up CPU, 2 cores", time="2026-01-02", torch="9.9")
    result["args"].update(jobs=2, threads="4")
    out.with_suffix(".json").write_text(json.dumps(result))
    study.main(argv)
    page = out.with_suffix(".md").read_text()
    assert "Made-up CPU, 2 cores, torch 9.9, 4 thread(s) a demo, 2 side by side, 2026-01-02." in page
    assert json.loads(out.with_suffix(".json").read_text())["args"]["steps"] == 20  # the study's own settings stay
