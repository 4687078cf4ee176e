"""SFT warm start: document tokens are masked out, the loss on oracle data goes down, CLI parsing."""

import argparse
import json

import pytest
import torch

from igsearch.data.prompts import DOCS_CLOSE, DOCS_OPEN, REFINE_TEMPLATE
from igsearch.train.sft import build_sft_examples, run_sft, sft_loss, split_injected

SMALL = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=12)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from igsearch.policy.tiny import build_tiny_model, build_tokenizer, save_policy
    from igsearch.retrieval.bm25 import BM25Retriever
    from igsearch.world import build_world, world_texts

    root = tmp_path_factory.mktemp("sft")
    world_dir = root / "world"
    build_world(world_dir, seed=0, n_entities=80, parquet=False)
    tokenizer = build_tokenizer(world_texts(world_dir), vocab_size=600)
    model = build_tiny_model(tokenizer, seed=0, **SMALL)
    model_dir = save_policy(model, tokenizer, root / "init")
    retriever = BM25Retriever.from_corpus(world_dir / "corpus.jsonl")
    return world_dir, model_dir, tokenizer, retriever


def test_split_injected():
    text = "<search> a </search>\n<documents>\nDoc 1 x\n</documents>\n<refine> f </refine>\n<answer> y </answer>"
    pieces = split_injected(text, REFINE_TEMPLATE)
    assert [inj for _, inj in pieces] == [False, True, False]
    assert "".join(p for p, _ in pieces) == text
    assert pieces[1][0] == "\n<documents>\nDoc 1 x\n</documents>\n"


def test_document_tokens_are_masked(world):
    from igsearch.data.loaders import load_qa

    world_dir, _, tokenizer, retriever = world
    rows = load_qa(world_dir / "train.jsonl")
    examples = build_sft_examples(rows, tokenizer, retriever, query_noise=0.3, hops=(2, 3), max_len=None)
    assert examples and {e.hops for e in examples} <= {2, 3}
    docs_open = tokenizer.convert_tokens_to_ids(DOCS_OPEN)
    docs_close = tokenizer.convert_tokens_to_ids(DOCS_CLOSE)
    for e in examples[:20]:
        response = e.ids[e.prompt_len:]
        assert len(response) == len(e.loss_mask)
        inside = False
        for tok, m in zip(response, e.loss_mask):
            if tok == docs_open:
                inside = True
            if inside or tok in (docs_open, docs_close):
                assert m == 0  # the tags and everything between them are injected
            if tok == docs_close:
                inside = False
        masked_text = tokenizer.decode([t for t, m in zip(response, e.loss_mask) if m == 0])
        trained_text = tokenizer.decode([t for t, m in zip(response, e.loss_mask) if m == 1])
        assert "Doc 1(Title:" in masked_text and "Doc 1(Title:" not in trained_text
        assert "<search>" in trained_text and "<answer>" in trained_text
        assert response[-1] == tokenizer.eos_token_id and e.loss_mask[-1] == 1


def test_sft_lowers_oracle_loss(world, tmp_path):
    from transformers import AutoModelForCausalLM

    from igsearch.data.loaders import load_qa

    world_dir, model_dir, tokenizer, retriever = world
    rows = load_qa(world_dir / "train.jsonl")
    held = build_sft_examples(rows[:8], tokenizer, retriever, max_len=320)
    before_model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa")
    with torch.no_grad():
        before = sft_loss(before_model, held).item()
    out = run_sft(model_dir, world_dir, tmp_path / "sft", steps=20, batch_size=6, lr=3e-3,
                  query_noise=0.2, hops=(1, 2), max_len=320, seed=0, retriever=retriever,
                  warmup_steps=3, progress=False)
    summary = json.loads((out / "sft_summary.json").read_text())
    assert summary["loss_last"] < summary["loss_first"]
    after_model = AutoModelForCausalLM.from_pretrained(out, attn_implementation="sdpa")
    with torch.no_grad():
        after = sft_loss(after_model, held).item()
    assert after < before - 0.5, (before, after)
    assert (out / "tokenizer.json").is_file()
    # the folder says what it was trained under: 1-2 hop demonstrations, 3 passages (run_sft's default)
    settings = json.loads((out / "rollout_settings.json").read_text())
    assert settings["topk"] == 3 and settings["template"] == "refine" and settings["max_doc_tokens"] == 0
    assert settings["max_turns"] >= 2 and settings["source"] == "sft"  # the most searches demonstrated + 1
    assert 0 < settings["max_response_tokens"] <= 320 and settings["max_new_tokens_per_turn"] % 32 == 0


def test_missing_model_dir_is_a_clear_error(world, tmp_path):
    world_dir, _, _, retriever = world
    with pytest.raises(FileNotFoundError, match="no model here"):
        run_sft(tmp_path / "nope", world_dir, tmp_path / "o", steps=1, retriever=retriever, progress=False)


def test_cli_parsing(tmp_path):
    from igsearch.train.cli import add_sft_command, add_train_command, parse_train_args

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd")
    add_sft_command(sub)
    add_train_command(sub)
    a = parser.parse_args(["sft", "--model", "m", "--world", "w", "--out", "o", "--hops", "1,2", "--query-noise", "0.3"])
    assert a.hops == (1, 2) and a.query_noise == 0.3 and a.func.__name__ == "run_sft_command"
    assert a.checkpoint_every is None  # SFT_CHECKPOINT_EVERY
    a = parser.parse_args(["sft", "--model", "m", "--world", "w", "--out", "o", "--checkpoint-every", "0"])
    assert a.checkpoint_every == 0
    with pytest.raises(SystemExit):
        parser.parse_args(["sft", "--model", "m", "--world", "w", "--out", "o", "--query-noise", "2"])
    a = parser.parse_args(["train", "--config", "configs/tiny-cpu.yaml", "--method", "grpo", "--steps", "3",
                           "--resume", str(tmp_path / "run" / "checkpoints" / "step_000002"), "lr=2e-5"])
    cfg, out, resume = parse_train_args(a)
    assert (cfg.advantage.method, cfg.steps, cfg.lr) == ("grpo", 3, 2e-5)
    assert out == tmp_path / "run" and resume.name == "step_000002"


def test_document_weight_adds_the_documents_to_the_loss(world):
    """sft_loss with document_weight w = (sum policy NLL + w * sum document NLL) / (n_policy + w * n_docs),
    against a float64 per-token reference from one unpadded forward per example."""
    from transformers import AutoModelForCausalLM

    from igsearch.data.loaders import load_qa

    world_dir, model_dir, tokenizer, retriever = world
    examples = build_sft_examples(load_qa(world_dir / "train.jsonl")[:5], tokenizer, retriever, max_len=300)
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa").eval()
    pol, doc, n_pol, n_doc = 0.0, 0.0, 0, 0
    with torch.no_grad():
        for e in examples:
            logits = model(torch.tensor([e.ids])).logits[0].double()
            nll = -torch.log_softmax(logits, -1)[e.prompt_len - 1:-1].gather(-1, torch.tensor(e.ids[e.prompt_len:])[:, None])[:, 0]
            m = torch.tensor(e.loss_mask, dtype=torch.float64)
            pol, doc = pol + float((nll * m).sum()), doc + float((nll * (1 - m)).sum())
            n_pol, n_doc = n_pol + int(m.sum()), n_doc + int((1 - m).sum())
        assert n_doc > n_pol > 0
        for w in (0.0, 0.3, 1.0):
            got = float(sft_loss(model, examples, max_tokens_per_row=700, document_weight=w))
            assert got == pytest.approx((pol + w * doc) / (n_pol + w * n_doc), rel=1e-4), w


def test_demonstrations_over_a_range_of_topk(world):
    """topk=[1, 3]: each question's demonstration reads one of the counts (drawn from its own seed, so the
    rest of the demonstration is the single-topk one's); a single count gives the examples it always did."""
    from igsearch.data.loaders import load_qa
    from igsearch.train.sft import sft_rollout_settings

    world_dir, _, tokenizer, retriever = world
    rows = load_qa(world_dir / "train.jsonl")[:40]
    docs_per_search = lambda e: tokenizer.decode(e.ids[e.prompt_len:]).count("Doc ") / max(1, e.ids[e.prompt_len:].count(  # noqa: E731
        tokenizer.convert_tokens_to_ids("<search>")))
    one = build_sft_examples(rows, tokenizer, retriever, topk=3, max_len=None)
    assert [e.ids for e in build_sft_examples(rows, tokenizer, retriever, topk=[3], max_len=None)] == [e.ids for e in one]
    mixed = build_sft_examples(rows, tokenizer, retriever, topk=[1, 3], max_len=None)
    counts = {round(docs_per_search(e)) for e in mixed}
    assert counts == {1, 3}
    assert sft_rollout_settings(mixed, tokenizer, template="refine", topk=[1, 2, 3], max_len=1024)["topk"] == 2
    with pytest.raises(ValueError, match="topk must be >= 1"):
        build_sft_examples(rows, tokenizer, retriever, topk=[0, 2])


def test_sft_prompt_is_the_rollout_prompt(world):
    """The warm start is trained on the prompt the rollouts give the policy, with or without a chat template;
    a row whose own prompt is another template's gets this template's (the oracle answers in its tags)."""
    import copy

    from igsearch.data.loaders import load_qa
    from igsearch.data.prompts import question_prompt
    from igsearch.train import sft

    world_dir, _, tokenizer, retriever = world
    row = load_qa(world_dir / "dev.jsonl")[0]
    plain = copy.copy(tokenizer)
    plain.chat_template = None
    foreign = copy.copy(row)
    foreign.prompt = [{"role": "user", "content": "Question: " + row.question}]
    for tok in (tokenizer, plain):
        sft_prompt = lambda r: question_prompt(tok, r, REFINE_TEMPLATE, own_only_if_same_template=True)  # noqa: E731
        assert sft_prompt(row) == question_prompt(tok, row, REFINE_TEMPLATE)
        assert sft_prompt(foreign) == question_prompt(tok, row, REFINE_TEMPLATE) != \
            question_prompt(tok, foreign, REFINE_TEMPLATE)
    # build_sft_examples trains on exactly that prompt, ahead of the oracle's response
    world_dir, _, tokenizer, retriever = world
    [example] = build_sft_examples([foreign], tokenizer, retriever, max_len=None)
    want = tokenizer(question_prompt(tokenizer, row, REFINE_TEMPLATE), add_special_tokens=False)["input_ids"]
    assert example.ids[:example.prompt_len] == want


def _weights(folder):
    from safetensors.torch import load_file

    return {k: v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(str(f)).items()}


def test_an_interrupted_sft_resumes_to_the_uninterrupted_weights(world, tmp_path, monkeypatch):
    """Killed after its step-3 checkpoint, run again with the same settings: resumes at step 3 and ends
    on the very weights, losses and token count of a run that was never interrupted (1 thread)."""
    import igsearch.train.sft as sft
    from igsearch.train.sft import sft_partial_dir

    world_dir, model_dir, _, retriever = world
    kw = dict(steps=7, batch_size=4, lr=3e-3, hops=(1, 2), max_len=320, seed=1, retriever=retriever, warmup_steps=2,
              progress=False, threads=1, checkpoint_every=3)
    whole = run_sft(model_dir, world_dir, tmp_path / "whole", **kw)
    assert not sft_partial_dir(whole).exists()

    calls, real_loss = [0], sft.sft_loss

    def dies_at_step_5(*a, **k):
        calls[0] += 1
        if calls[0] == 5:
            raise KeyboardInterrupt
        return real_loss(*a, **k)

    monkeypatch.setattr(sft, "sft_loss", dies_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        run_sft(model_dir, world_dir, tmp_path / "cut", **kw)
    monkeypatch.setattr(sft, "sft_loss", real_loss)
    assert not (tmp_path / "cut").exists() and (sft_partial_dir(tmp_path / "cut") / "checkpoints").is_dir()

    # other settings: refused with the field named, and the checkpoint kept
    with pytest.raises(ValueError, match=r"other SFT settings \(lr: 0\.003 there, 0\.002 now\)"):
        run_sft(model_dir, world_dir, tmp_path / "cut", **{**kw, "lr": 2e-3})
    cut = run_sft(model_dir, world_dir, tmp_path / "cut", **kw)
    summary, reference = (json.loads((d / "sft_summary.json").read_text()) for d in (cut, whole))
    assert summary["resumed_from_step"] == 3 and reference["resumed_from_step"] == 0
    for field in ("loss_first", "loss_last", "tokens_per_step"):
        assert summary[field] == reference[field], field
    a, b = _weights(cut), _weights(whole)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not sft_partial_dir(cut).exists()
