"""studies/worlds.py's report on made-up runs whose answer is known: the pooled interval, the warm starts'
check, the search-collapse flag, the time to GRPO's best, and the page and plots it writes (no training)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from test_bench_scripts import load

HOPS = ("world_1hop", "world_2hop")


def metrics_of(records: list[dict], searches: dict[str, float]) -> dict:
    out = {}
    for source in [*HOPS, "overall"]:
        rs = [r for r in records if source == "overall" or r["data_source"] == source]
        out[source] = {"n": len(rs), "em": sum(r["em"] for r in rs) / len(rs),
                       "searches": searches.get(source, searches.get("overall", 1.5))}
    return out


def fake_run(correct: dict[str, int], *, n: int = 100, warm: dict[str, int] | None = None,
             searches: dict[str, float] | None = None, warm_searches: dict[str, float] | None = None,
             seconds: float = 60.0, mid: dict[str, int] | None = None) -> dict:
    """A studies/replicate.py record: ``correct[source]`` of ``n`` questions right after training (the first
    ones), ``warm`` at step 0, ``mid`` at step 10 (default: the final), evaluated at steps 0, 10, 20."""
    def records(right):
        return [{"id": f"{s}-{i}", "data_source": s, "em": float(i < right.get(s, 0))} for s in HOPS for i in range(n)]

    warm = warm or {s: 0 for s in HOPS}
    evals = {}
    for step, right, srch, t in ((0, warm, warm_searches or {}, 0.0), (10, mid or correct, searches or {}, seconds / 2),
                                 (20, correct, searches or {}, seconds)):
        recs = records(right)
        evals[step] = {"metrics": metrics_of(recs, srch), "records": recs, "train_s": t}
    return {"evals": evals, "steps": [], "probes": []}


def world(runs: dict, test_em=0.5, one_hop=0.9) -> dict:
    warm = {"world_1hop": {"em": one_hop, "searches": 1.0}, "world_2hop": {"em": 0.2, "searches": 2.0},
            "overall": {"em": test_em, "searches": 1.5}}
    return {"manifest": {"n_entities": 50, "splits": {"test": 200}, "relations": ["r"] * 8},
            "warm_start": {"dev": warm, "test": warm},
            "runs": runs}


def test_pooled_interval_carries_the_spread_between_worlds():
    """The same pooled gain (+0.075), once steady over four worlds and once from one lucky world: the
    hierarchical interval excludes 0 in the first case only; each world's own interval agrees with its data."""
    rep = load("worlds_report")
    base = {"world_1hop": 40, "world_2hop": 20}
    grpo = {s: fake_run(base) for s in (0, 1, 2)}
    steady = {w: world({"grpo": grpo, "ig": {s: fake_run({"world_1hop": 47, "world_2hop": 28}) for s in (0, 1, 2)}})
              for w in range(4)}
    lucky = {w: world({"grpo": grpo, "ig": {s: fake_run({"world_1hop": 40 + (60 if w == 0 else 0),
                                                           "world_2hop": 20}) for s in (0, 1, 2)}}) for w in range(4)}
    row = rep.pooled_difference(steady, "grpo", "ig", n_boot=2000)
    assert row["overall"]["diff"] == pytest.approx(0.075) and row["overall"]["low"] > 0
    assert row["overall"]["worlds"] == 4 and row["overall"]["seeds"] == 3 and row["overall"]["n"] == 4 * 200
    assert row["world_2hop"]["diff"] == pytest.approx(0.08) and rep.judge(row["overall"]) == "held"
    row = rep.pooled_difference(lucky, "grpo", "ig", n_boot=2000)["overall"]
    assert row["diff"] == pytest.approx(0.075) and row["low"] <= 0 < row["high"]
    assert rep.judge(row) == "not_shown"
    behind = {w: world({"grpo": steady[w]["runs"]["ig"], "ig": grpo}) for w in range(4)}
    assert rep.judge(rep.pooled_difference(behind, "grpo", "ig", n_boot=2000)["overall"]) == "did_not_hold"


def test_warm_starts_alike_and_search_collapse():
    rep = load("worlds_report")
    alike = rep.warm_start_alike({0: world({}, 0.50), 1: world({}, 0.54), 2: world({}, 0.47)})
    assert alike["em_alike"] and alike["one_hop_above"] and alike["max_distance"] == pytest.approx(0.54 - 1.51 / 3)
    apart = rep.warm_start_alike({0: world({}, 0.50), 1: world({}, 0.36, one_hop=0.72)})
    assert not apart["em_alike"] and not apart["one_hop_above"] and apart["min_one_hop"] == 0.72
    warm = {"world_1hop": 60, "world_2hop": 30}
    fewer = {"world_1hop": 1.0, "world_2hop": 1.2, "overall": 1.1}
    usual = {"world_1hop": 1.0, "world_2hop": 2.0, "overall": 1.5}
    worlds = {0: world({"grpo": {0: fake_run({"world_1hop": 75, "world_2hop": 20}, warm=warm, searches=fewer,
                                             warm_searches=usual)},
                        "ig": {0: fake_run({"world_1hop": 70, "world_2hop": 35}, warm=warm, searches=usual,
                                           warm_searches=usual)}})}
    table = rep.searches_table(worlds)
    assert table["grpo"]["collapsed_worlds"] == [0] and table["ig"]["collapsed_worlds"] == []
    assert table["grpo"]["per_hop"]["world_2hop"] == pytest.approx(
        {"warm_em": 0.3, "em": 0.2, "warm_searches": 2.0, "searches": 1.2})


def test_time_to_grpo_best_per_world_and_pooled():
    rep = load("worlds_report")
    grpo = {0: fake_run({"world_1hop": 50, "world_2hop": 30}, mid={"world_1hop": 45, "world_2hop": 25}, seconds=120)}
    fast = {0: fake_run({"world_1hop": 55, "world_2hop": 30}, mid={"world_1hop": 50, "world_2hop": 30}, seconds=60)}
    worlds = {0: world({"grpo": grpo, "ig": fast}), 1: world({"grpo": grpo, "ig": grpo})}
    curve = rep.pooled_curve(worlds, "ig")
    assert [s for s, _, _ in curve] == [0, 10, 20] and curve[1][1] == pytest.approx((30 + 60) / 2)
    ttq = load("replication_report").time_to_target({m: rep.pooled_curve(worlds, m) for m in ("grpo", "ig")})
    assert ttq["target_em"] == pytest.approx(0.4) and ttq["methods"]["grpo"] == {"step": 20, "seconds": 120.0}
    assert ttq["methods"]["ig"] == {"step": 20, "seconds": pytest.approx(90.0)}


def test_report_page_plots_and_summary_line(tmp_path):
    rep = load("worlds_report")
    args = SimpleNamespace(quick=False, worlds=[0, 1], methods="grpo,ig", seeds="0,1", steps=20, eval_every=10,
                           sft_steps=2964, overrides=[])
    grpo = {s: fake_run({"world_1hop": 40, "world_2hop": 20}) for s in (0, 1)}
    ig = {s: fake_run({"world_1hop": 48, "world_2hop": 30}) for s in (0, 1)}
    ig[0]["probes"] = [{"search_credit": {"2:fewer": {"n": 4, "outcome_sum": 0.8, "step_sum": -0.4}}}]
    ig[0]["config"] = {"format_penalty": 0.0}
    ig[0]["steps"] = [{"ig/mean": 0.03, "ig/std": 0.2, "ig/positive_frac": 0.7, "ig/scored_frac": 0.95}]
    worlds = {0: world({"grpo": grpo, "ig": ig}), 1: world({"grpo": grpo, "ig": ig}, 0.45)}
    result, md = rep.write_report(args, worlds, tmp_path / "w", started=0.0, n_boot=500)
    assert "| ig | 2:fewer | 8 | +0.200 | -0.100 | +0.100 |" in md and "format penalty is 0.0 in these runs" in md
    assert "**Verdict: held**: IG-Search - GRPO +0.090" in md and "| **ig vs grpo, pooled** |" in md
    assert md.startswith("> **Partial**: 2 worlds x 2 seeds") and "(50 entities, 8 relations, - dev and 200 test" in md
    assert "| 1 | +0.090 [" in md and "| +0.030 | 0.200 | 0.70 | 0.95 | - | -0.100 |" in md
    assert result["summary_line"].endswith("verdict=held") and "alike=true" in result["summary_line"]
    assert json.loads((tmp_path / "w.json").read_text())["pooled"]["ig vs grpo"]["overall"]["worlds"] == 2
    assert (tmp_path / "w_em.png").stat().st_size > 0 and (tmp_path / "w_warm_starts.png").stat().st_size > 0
    # the warm starts alone (--setup-only): their table and check, no comparison
    bare = {w: {**d, "runs": {}} for w, d in worlds.items()}
    result, md = rep.write_report(args, bare, tmp_path / "s", started=0.0)
    assert "## Warm starts" in md and "Verdict" not in md and "ig_minus_grpo" not in result["summary_line"]
    assert md.startswith("# Warm starts of several worlds")


def test_each_world_is_a_replication_of_its_own():
    mod = load("worlds")
    args = mod.parse_args(["--worlds", "0,3", "--steps", "5", "--work-dir", "/tmp/w", "lr=0.001"])
    r = mod.replicate_args(args, 3)
    assert r.world_seed == 3 and r.steps == 5 and r.sft_steps == mod.STUDY_SFT_STEPS and r.seeds == [0, 1, 2]
    assert r.methods == ["grpo", "rloo", "ig"] and str(r.work_dir) == "/tmp/w/world3"
    assert r.overrides == ["precision=fp32", "lr=0.001"]
    with pytest.raises(SystemExit):
        mod.parse_args(["--worlds", "1,1"])
    # the world and policy flags reach the warm start only when given: without them its key (the cache's
    # identity) is replicate.py's with the study's SFT steps, so warm starts built before the flags stay valid
    rep = load("replicate")
    plain = rep.warm_start_config(r).setup_key()
    assert plain == rep.warm_start_config(rep.parse_args(["--sft-steps", str(mod.STUDY_SFT_STEPS)])).setup_key()
    assert "relations" not in plain and plain["max_len"] == 1024 and plain["entities"] == 800
    power = mod.replicate_args(mod.parse_args(["--worlds", "0", "--relations", "dense", "--eval-split", "1000",
                                               "--sft-max-len", "1344", "--policy-size", "large"]), 0)
    key = rep.warm_start_config(power).setup_key()
    assert (key["relations"], key["eval_split_size"], key["max_len"], key["policy_size"]) == ("dense", 1000, 1344,
                                                                                                "large")


def test_report_only_builds_nothing(tmp_path):
    mod = load("worlds")
    with pytest.raises(SystemExit, match="--report-only but world 5 has no warm start here .*world5.* or in .*; "
                                         "build it first"):
        mod.main(["--report-only", "--worlds", "5", "--work-dir", str(tmp_path), "--out", str(tmp_path / "w")])
    assert not (tmp_path / "world5" / "world").exists()


def test_search_credit_splits_the_advantage_by_searches_against_hops():
    """Two 2-hop rollouts, one searching once and one twice, with a trajectory advantage and a step span: the
    probe credits each to its cell, the outcome and step parts apart (mean over loss tokens); the report pools."""
    import torch

    from igsearch.algo.advantages import AdvantageOutput

    rep, mod = load("worlds_report"), load("replicate")
    assert mod.hops_of("world_3hop") == 3 and mod.hops_of("nq") is None
    traj = lambda n, mask: SimpleNamespace(data_source="world_2hop", steps=[0] * n, response_ids=[0] * len(mask),  # noqa: E731
                                           loss_mask=mask)
    trajs = [traj(1, [1, 1, 0, 1]), traj(2, [1, 1, 1, 1, 1, 1])]
    adv = AdvantageOutput(torch.tensor([0.5, -0.5]), torch.tensor([[1, 0, 3]]), torch.tensor([0.2]), span_scale=0.5)
    got = mod.search_credit(trajs, adv)
    assert got["2:fewer"]["n"] == 1 and got["2:fewer"]["outcome_sum"] == 0.5 and got["2:fewer"]["step_sum"] == 0
    assert got["2:as many"]["outcome_sum"] == -0.5 and got["2:as many"]["step_sum"] == pytest.approx(0.1 * 3 / 6)
    run = {"evals": {}, "steps": [], "probes": [{"search_credit": got}, {"search_credit": got}]}
    table = rep.search_credit_table({0: {"runs": {"ig": {0: run}}}})
    assert table["ig"]["2:as many"] == pytest.approx({"n": 2, "outcome": -0.5, "step": 0.05})


def test_step_ig_per_world_averages_steps_and_keeps_multi_hop_credit_apart():
    """Each world's step-IG row: metrics averaged over seeds and steps; the step part of the advantage summed
    over multi-hop rollouts only (a 1-hop group must not enter), per rollout; worlds without IG-Search left out."""
    rep = load("worlds_report")
    ig = {s: fake_run({"world_1hop": 40, "world_2hop": 20}) for s in (0, 1)}
    ig[0]["steps"] = [{"ig/mean": 0.02, "ig/std": 0.1, "ig/positive_frac": 0.6, "ig/scored_frac": 1.0},
                      {"ig/mean": 0.04, "ig/std": 0.3, "ig/positive_frac": 0.8, "ig/scored_frac": 0.5}]
    ig[1]["steps"] = [{"ig/mean": -0.03, "ig/std": 0.2, "ig/positive_frac": 0.4, "ig/scored_frac": 0.9}]
    ig[0]["probes"] = [{"search_credit": {"2:fewer": {"n": 3, "outcome_sum": 0.0, "step_sum": -0.3},
                                          "1:fewer": {"n": 5, "outcome_sum": 0.0, "step_sum": 5.0},
                                          "3:as many": {"n": 2, "outcome_sum": 0.0, "step_sum": 0.5}}}]
    ig[1]["probes"] = [{"search_credit": {"3:fewer": {"n": 1, "outcome_sum": 0.0, "step_sum": 0.1}}}]
    grpo = {s: fake_run({"world_1hop": 40, "world_2hop": 20}) for s in (0, 1)}
    table = rep.step_ig_by_world({0: world({"grpo": grpo, "ig": ig}), 1: world({"grpo": grpo})})
    assert list(table) == [0]
    assert table[0] == pytest.approx({"ig/mean": 0.01, "ig/std": 0.2, "ig/positive_frac": 0.6, "ig/scored_frac": 0.8,
                                      "step_fewer": -0.05, "step_as_many": 0.25})
