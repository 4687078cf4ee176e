"""The shipped warm start (igsearch/assets/warm_starts) is what this code would train, and the demo uses it.

If the world generator, the tokenizer builder or the demo's warm-start settings change, these tests fail
and say how to ship a new one (the warm start would no longer be the one this code trains)."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from igsearch.warmstart import (
    DEMONSTRATORS, SHIPPED_WARM_STARTS, WarmStartConfig, build_warm_start, find_shipped_warm_start,
    install_shipped_warm_start, world_digest, world_split_sizes,
)

REBUILD = "train and ship a new one: python -m igsearch.warmstart ship runs/ws (about 10 minutes)"
DEMO_CONFIG = replace(WarmStartConfig(), distractor=DEMONSTRATORS["lookalike"])


@pytest.fixture(scope="module")
def demo_world(tmp_path_factory):
    """The demo's default world (seed 0, 800 entities), built by the current code (under a second)."""
    from igsearch.world import build_world

    world = tmp_path_factory.mktemp("shipped") / "world"
    build_world(world, seed=0, n_entities=DEMO_CONFIG.entities, split_sizes=world_split_sizes(DEMO_CONFIG.entities))
    return world


def test_the_demo_default_has_a_shipped_warm_start_trained_on_the_world_this_code_builds(demo_world):
    shipped = find_shipped_warm_start(DEMO_CONFIG, seed=0, world_seed=0)
    assert shipped is not None, f"no shipped warm start has the demo's settings {DEMO_CONFIG}; {REBUILD}"
    prov = json.loads((shipped / "provenance.json").read_text())
    assert world_digest(demo_world) == prov["world_digest"], f"the world generator changed; {REBUILD}"
    # another seed, demonstrator or step budget is not the shipped one
    assert find_shipped_warm_start(DEMO_CONFIG, seed=1, world_seed=1) is None
    assert find_shipped_warm_start(replace(DEMO_CONFIG, distractor=0.0), seed=0, world_seed=0) is None
    assert find_shipped_warm_start(replace(DEMO_CONFIG, steps=10), seed=0, world_seed=0) is None


def test_shipped_tokenizer_and_weights_fit_this_world(demo_world, tmp_path):
    """Same tokenization as the policy folder this code builds for the world (both loaded from disk, as every
    path loads them), and a trained fit: the shipped policy's SFT loss on warm-up demonstrations is far below
    the untrained policy's."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from igsearch.data.loaders import load_qa
    from igsearch.policy.tiny import build_tiny_policy, policy_shape
    from igsearch.retrieval.bm25 import BM25Retriever
    from igsearch.train.sft import build_sft_examples, sft_loss
    from igsearch.world import world_texts

    shipped = find_shipped_warm_start(DEMO_CONFIG, seed=0, world_seed=0)
    init = build_tiny_policy(demo_world, tmp_path / "init", seed=0, vocab_size=DEMO_CONFIG.vocab_size,
                             **policy_shape(DEMO_CONFIG.policy_size))
    fresh_tok, tok = AutoTokenizer.from_pretrained(init), AutoTokenizer.from_pretrained(shipped)
    texts = random.Random(0).sample(list(world_texts(demo_world)), 50)
    assert [tok(t)["input_ids"] for t in texts] == [fresh_tok(t)["input_ids"] for t in texts], REBUILD
    load = lambda path: AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,  # noqa: E731
                                                             attn_implementation="sdpa").eval()
    model, untrained = load(shipped), load(init)
    shape = lambda m: {k: v for k, v in m.config.to_dict().items() if k != "_name_or_path"}  # noqa: E731
    assert shape(model) == shape(untrained)
    rows = load_qa(demo_world / "warmup.jsonl", limit=12)
    examples = build_sft_examples(rows, tok, BM25Retriever.from_corpus(demo_world / "corpus.jsonl"),
                                  topk=list(DEMO_CONFIG.sft_topks), distractor=DEMO_CONFIG.distractor)
    with torch.no_grad():
        trained_loss = sft_loss(model, examples, document_weight=1.0).item()
        untrained_loss = sft_loss(untrained, examples, document_weight=1.0).item()
    assert trained_loss < 0.2 < 5.0 < untrained_loss, (trained_loss, untrained_loss)


def test_build_warm_start_installs_the_shipped_one_and_trains_when_it_does_not_match(tmp_path, monkeypatch):
    import igsearch.train.sft as sft

    monkeypatch.setattr(sft, "run_sft", lambda *a, **k: pytest.fail("trained although a shipped warm start matched"))
    ws = build_warm_start(tmp_path / "demo", seed=0, config=DEMO_CONFIG, progress=False, log=lambda *a: None,
                          shipped=True)
    assert ws["shipped"] is not None and ws["policy_init"] is None
    for name in ("model.safetensors", "rollout_settings.json", "sft_summary.json", "provenance.json"):
        assert (ws["sft"] / name).is_file()
    shipped = find_shipped_warm_start(DEMO_CONFIG, seed=0, world_seed=0)
    assert (ws["sft"] / "model.safetensors").read_bytes() == (shipped / "model.safetensors").read_bytes()

    # another world than the one it was trained on: nothing installed
    other = tmp_path / "other-world"
    other.mkdir()
    for name in world_digest(ws["world"]):
        (other / name).write_bytes((ws["world"] / name).read_bytes())
    with (other / "dev.jsonl").open("a") as f:
        f.write("\n")
    assert install_shipped_warm_start(shipped, other, tmp_path / "not-installed") is None
    assert not (tmp_path / "not-installed").exists()

    # without shipped=True (the studies' default) the warm start is trained
    trained = []
    monkeypatch.setattr(sft, "run_sft", lambda init, world, out, **k: trained.append(out) or Path(out))
    monkeypatch.setattr("igsearch.policy.tiny.build_tiny_policy", lambda world, out, **k: Path(out))
    ws = build_warm_start(tmp_path / "built", seed=0, config=DEMO_CONFIG, progress=False, log=lambda *a: None)
    assert ws["shipped"] is None and trained == [tmp_path / "built" / "sft"]


def test_a_damaged_shipped_file_is_not_installed(tmp_path, demo_world):
    shipped = find_shipped_warm_start(DEMO_CONFIG, seed=0, world_seed=0)
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in shipped.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (copy / "model.safetensors").write_bytes(bytes(data))
    assert install_shipped_warm_start(copy, demo_world, tmp_path / "out") is None
    # a provenance that names a file outside the folder is refused, whatever the digests say
    prov = json.loads((shipped / "provenance.json").read_text())
    prov["files"]["../escape.txt"] = prov["files"]["config.json"]
    (copy / "provenance.json").write_text(json.dumps(prov))
    (copy / "model.safetensors").write_bytes((shipped / "model.safetensors").read_bytes())
    assert install_shipped_warm_start(copy, demo_world, tmp_path / "out") is None
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "out").exists()
    assert install_shipped_warm_start(shipped, demo_world, tmp_path / "out") is not None
    assert SHIPPED_WARM_STARTS in shipped.parents
