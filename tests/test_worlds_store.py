"""studies/worlds_store.py: the worlds study's records kept in the repository, moved to another checkout's
folders, cut to what the reports read; a rebuilt warm start that scores otherwise is refused; and a study whose
every run is stored reports with no warm start in its work folder (no training)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from test_bench_scripts import load
from test_worlds_study import fake_run, world


def test_a_record_moves_to_another_checkout_cut_to_what_reports_read(tmp_path):
    store = load("worlds_store")
    here, there = tmp_path / "a" / "world0", tmp_path / "b" / "runs" / "world0"
    rec = fake_run({"world_1hop": 40, "world_2hop": 20})
    rec["config"] = {"model_path": f"{here}/sft", "lr": 1e-5}
    rec["overrides"] = [f"model_path={here}/sft", "seed=1"]
    rec["steps"] = [{"step": 1, "ig/mean": 0.5, "reward/mean": 0.25, "loss/policy": 3.0, "wall_s": 2.0}]
    rec["probes"] = [{"step": 1, "n_all_fail": 2, "search_credit": {"2:fewer": {"n": 1}}, "all_fail_ids": [1, 2]}]
    rec["cpu"] = "Test CPU (family 1, model 2), no AVX-512, no AMX, 2 cores"
    records = store.WorldRecords(tmp_path / "store", 0, here)
    records.save_run("ig", 1, rec)
    blob = (tmp_path / "store" / "world0" / "ig-seed1.json.gz").read_bytes()
    assert str(here) not in gzip.decompress(blob).decode() and "{work}/sft" in gzip.decompress(blob).decode()
    records.save_run("ig", 1, rec)  # the same record again: the same bytes, nothing rewritten
    assert (tmp_path / "store" / "world0" / "ig-seed1.json.gz").read_bytes() == blob

    elsewhere = store.WorldRecords(tmp_path / "store", 0, there)
    assert elsewhere.restore_runs() == [there / "ig-seed1" / "replicate_record.json"]
    back = json.loads((there / "ig-seed1" / "replicate_record.json").read_text())
    assert back["config"] == {"model_path": f"{there}/sft", "lr": 1e-5}
    assert back["overrides"] == [f"model_path={there}/sft", "seed=1"]
    assert back["steps"] == [{"step": 1, "ig/mean": 0.5, "reward/mean": 0.25, "wall_s": 2.0}]  # no loss/policy
    assert back["probes"] == [{"step": 1, "n_all_fail": 2, "search_credit": {"2:fewer": {"n": 1}}}]
    assert back["evals"]["20"]["records"] == rec["evals"][20]["records"] and back["cpu"] == rec["cpu"]
    assert elsewhere.restore_runs() == []  # a record already there is left alone

    (tmp_path / "store" / "world0" / "rloo-seed0.json.gz").write_text("not gzip")
    with pytest.raises(SystemExit, match="rloo-seed0.json.gz is not a gzip-compressed JSON record"):
        elsewhere.restore_runs()


def test_the_work_folder_is_swapped_as_a_whole_path_given_or_resolved(tmp_path, monkeypatch):
    """A work folder given relative is stored as {work} whether a run wrote it relative or absolute; a longer
    name that starts with it, or a path elsewhere that ends with it, is left alone."""
    store = load("worlds_store")
    monkeypatch.chdir(tmp_path)
    rec = fake_run({"world_1hop": 40})
    rec["config"] = {"model_path": f"{tmp_path}/runs/world2/sft", "init": "runs/world2/sft",
                     "other": f"{tmp_path}/runs/world20/sft", "far": "/elsewhere/runs/world2/sft"}
    rec["overrides"] = ["model_path=runs/world2", "log=runs/world2.log"]
    records = store.WorldRecords(tmp_path / "store", 2, Path("runs/world2"))
    records.save_run("grpo", 0, rec)
    saved = json.loads(gzip.decompress((tmp_path / "store" / "world2" / "grpo-seed0.json.gz").read_bytes()))
    assert saved["config"] == {"model_path": "{work}/sft", "init": "{work}/sft",
                               "other": f"{tmp_path}/runs/world20/sft", "far": "/elsewhere/runs/world2/sft"}
    assert saved["overrides"] == ["model_path={work}", "log=runs/world2.log"]


def test_a_rebuilt_warm_start_must_score_what_the_stored_one_did(tmp_path):
    store = load("worlds_store")
    records = store.WorldRecords(tmp_path / "store", 2, tmp_path / "w2")
    key = {"world_seed": 2, "warm_start": {"steps": 2964}}
    warm = world({})["warm_start"]
    records.save_setup(key, tmp_path / "w2" / "sft", tmp_path / "w2" / "world", {"relations": ["r"]}, warm,
                       cpu="Test CPU")
    got = store.WorldRecords(tmp_path / "store", 2, tmp_path / "x").setup(key)
    assert got["sft"] == tmp_path / "x" / "sft" and got["warm_start"] == warm and got["cpu"] == "Test CPU"
    assert records.setup({**key, "world_seed": 3}) is None
    records.check_rebuilt(key, warm)  # the same scores: pooled
    other = json.loads(json.dumps(warm))
    other["test"]["world_2hop"]["em"] = 0.21
    records.check_rebuilt(key, other)  # no stored runs yet: nothing to pool with, the new build replaces it
    records.save_run("grpo", 0, {**fake_run({"world_1hop": 1}), "config": {}, "overrides": []})
    with pytest.raises(SystemExit, match="world 2 rebuilt here scores test world_2hop EM 0.21 where the stored "
                                         "one .* scored 0.2: its runs cannot be pooled"):
        records.check_rebuilt(key, other)
    with pytest.raises(SystemExit, match="holds a warm start of other settings"):
        records.save_setup({**key, "warm_start": {"steps": 30}}, tmp_path, tmp_path, {}, warm)


def test_a_study_whose_runs_are_all_stored_reports_without_a_warm_start(tmp_path):
    worlds = load("worlds")
    replicate = load("replicate")
    store_dir, first, second = tmp_path / "records", tmp_path / "first", tmp_path / "second"
    flags = ["--worlds", "0", "--methods", "grpo,ig", "--seeds", "0,1", "--steps", "20", "--eval-every", "10",
             "--records-dir", str(store_dir)]
    args = worlds.parse_args([*flags, "--work-dir", str(first), "--out", str(tmp_path / "unused")])
    rargs = worlds.replicate_args(args, 0)
    root = first / "world0"
    records = worlds.WorldRecords(store_dir, 0, root)
    key = replicate.setup_key(rargs)
    records.save_setup(key, root / "sft", root / "world", world({})["manifest"], world({})["warm_start"])
    for seed in (0, 1):
        for method, right in (("grpo", 40), ("ig", 55)):
            overrides = replicate.run_overrides(rargs, root / "world", root / "sft", method, seed)
            rec = fake_run({"world_1hop": right, "world_2hop": 20})
            rec["overrides"] = overrides
            rec["config"] = replicate.run_identity(replicate.run_config(rargs, overrides), method)
            records.save_run(method, seed, rec)

    assert worlds.main([*flags, "--report-only", "--work-dir", str(second), "--out", str(tmp_path / "w")]) == 0
    page = (tmp_path / "w.md").read_text()
    assert "IG-Search - GRPO +0.075" in page  # (55 - 40) / 200 questions
    assert (second / "world0" / "ig-seed1" / "replicate_record.json").exists()
    assert not (second / "world0" / "world").exists() and not (second / "world0" / "sft").exists()

    # a stored run of other settings is not reused: --report-only stops and names it
    with pytest.raises(SystemExit, match="grpo-seed0/replicate_record.json is missing or was made with other"):
        worlds.main([*flags, "--report-only", "--work-dir", str(tmp_path / "third"), "--out", str(tmp_path / "v"),
                     "lr=0.5"])
