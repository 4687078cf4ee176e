"""README.md's "Your own data and model" commands, run as written (only paths and the port substituted) on a
made-up Search-R1-format question set and corpus (tests/own_data_fixtures.py), so the documented path cannot rot:
index build, a query, the retrieval server, 2 training steps and an evaluation."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from own_data_fixtures import README_QUESTION, write_own_data

REPO = Path(__file__).resolve().parents[1]
WARM_START = REPO / "igsearch" / "assets" / "warm_starts" / "lookalike-small-seed0"
#: the comment that marks the tested block in README.md (the fenced block right after it)
MARKER = "<!-- tested by tests/test_own_data.py -->"
#: README placeholder -> what it is here ({tmp}: the test's folder); nothing else of a command is changed
PLACEHOLDERS = {"my_data/": "{tmp}/my_data/", "my_model": "{tmp}/my_model", "runs/": "{tmp}/runs/",
                "configs/": f"{REPO}/configs/"}


def readme_commands(readme: Path = REPO / "README.md") -> list[list[str]]:
    """The argv of every command of the fenced block after MARKER: continuation lines joined, comments dropped."""
    text = readme.read_text(encoding="utf-8")
    assert text.count(MARKER) == 1, f"README.md must mark the own-data block once with {MARKER}"
    block = re.search(r"```(?:bash|sh)\n(.*?)```", text[text.index(MARKER):], re.S)
    assert block, "no fenced bash block after the marker"
    joined = re.sub(r"\\\n", " ", block.group(1))
    return [argv for line in joined.splitlines() if (argv := shlex.split(line, comments=True))]


def substitute(argv: list[str], tmp: Path, port: int) -> list[str]:
    """``argv`` with the README's placeholder paths made real and its port 8000 replaced by ``port``."""
    out = []
    for i, arg in enumerate(argv):
        for placeholder, real in PLACEHOLDERS.items():
            arg = re.sub(rf"(^|=){re.escape(placeholder)}", lambda m: m.group(1) + real.format(tmp=tmp), arg)
        arg = arg.replace("127.0.0.1:8000/", f"127.0.0.1:{port}/")
        out.append(str(port) if i and argv[i - 1] == "--port" and arg == "8000" else arg)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(port: int, server: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, f"the retrieval server exited with {server.returncode}:\n{log.read_text()}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if json.loads(r.read())["status"] == "ok":
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"the retrieval server did not answer /health within {timeout} s")


def test_readme_commands_are_igsearch_commands():
    commands = readme_commands()
    assert all(c[0] == "igsearch" for c in commands), commands
    kinds = [" ".join(c[1:3]) if c[1] == "retrieval" else c[1] for c in commands]
    assert kinds == ["retrieval index", "retrieval query", "retrieval serve", "train", "eval"], kinds
    assert commands[2][-1] == "&", "the server is started in the background"


def test_own_data_path_of_the_readme(tmp_path):
    data = write_own_data(tmp_path / "my_data")
    shutil.copytree(WARM_START, tmp_path / "my_model")
    port = free_port()
    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": pythonpath, "IGSEARCH_THREADS": os.environ.get("IGSEARCH_THREADS", "1")}
    outputs, server, server_log = {}, None, tmp_path / "server.log"
    try:
        for argv in readme_commands():
            argv = substitute(argv, tmp_path, port)
            cmd = [sys.executable, "-m", "igsearch.cli", *argv[1:]]
            name = " ".join(argv[1:3]) if argv[1] == "retrieval" else argv[1]
            if cmd[-1] == "&":
                with server_log.open("w") as log:  # a file, not a pipe: a full pipe would stall the server
                    server = subprocess.Popen(cmd[:-1], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
                wait_healthy(port, server, server_log)
                continue
            done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, f"{' '.join(argv)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            outputs[name] = done.stdout
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    assert set(outputs) == {"retrieval index", "retrieval query", "train", "eval"}

    # the index: written next to the corpus, and it finds the passage that answers the README's question
    index = tmp_path / "my_data" / "bm25_index"
    assert (index / "meta.json").is_file() and len(list(index.iterdir())) > 1
    (hit,) = json.loads(outputs["retrieval query"])
    answer = next(r["golden_answers"][0] for rows in data["questions"].values() for r in rows
                  if r["question"] == README_QUESTION)
    assert hit["query"] == README_QUESTION and answer in hit["result"][0]["contents"]

    # training: 2 steps of metrics, a checkpoint with a model folder (eval loads it below), the final evaluation
    run = tmp_path / "runs" / "my-run"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "reward/mean" in r] == [1, 2] and max(r["step"] for r in rows) == 2
    model = run / "checkpoints" / "step_000002" / "model"
    assert (model / "config.json").is_file() and (model / "model.safetensors").stat().st_size > 0
    final = json.loads((run / "eval.json").read_text())
    assert final["metrics"]["overall"]["n"] == len(data["questions"]["dev"])

    # evaluation of the checkpoint on the test split: per-question records and an EM in [0, 1]
    (result,) = [p for p in (tmp_path / "runs").glob("*/eval.json") if p.parent != run]
    result = json.loads(result.read_text())
    assert result["metrics"]["overall"]["n"] == len(data["questions"]["test"]) == len(result["records"])
    assert 0.0 <= result["metrics"]["overall"]["em"] <= 1.0
    assert {r["question"] for r in result["records"]} == {r["question"] for r in data["questions"]["test"]}
