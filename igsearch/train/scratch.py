"""Policies from scratch for timing and smoke runs: a random-weight Qwen2 model of a real model's shape
(no download) with the world's tokenizer, and a few SFT steps that teach it the tags so its rollouts
search. Not a warm start (``igsearch.warmstart``): nothing here is meant to answer well.

Used by bench/step_overhead.py and bench/peer_trl.py (their GPU presets) and by the verl smoke run
(``python -m igsearch.integrations.verl.smoke``).
"""

from __future__ import annotations

from pathlib import Path

import torch


def build_random_policy(world: Path, out: Path, *, shape: dict, seed: int = 0, dtype=torch.bfloat16,
                        device: str = "cuda") -> Path:
    """A random-weight Qwen2 model of ``shape`` with the world's tokenizer, saved as an HF directory."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from igsearch.policy.tiny import ENDOFTEXT, IM_END, build_tokenizer, save_policy
    from igsearch.world import world_texts

    tok = build_tokenizer(world_texts(world))
    dims = dict(shape)
    dims["vocab_size"] = max(dims.get("vocab_size", 0), len(tok))
    config = Qwen2Config(bos_token_id=tok.convert_tokens_to_ids(ENDOFTEXT), eos_token_id=tok.convert_tokens_to_ids(IM_END),
                         pad_token_id=tok.convert_tokens_to_ids(ENDOFTEXT), torch_dtype=str(dtype).removeprefix("torch."),
                         **dims)
    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen2ForCausalLM(config).to(dtype)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    path = save_policy(model, tok, out)
    del model
    return path


def short_sft(model_dir: Path, world: Path, out: Path, *, steps: int, lr: float, batch_size: int = 8,
              dtype=torch.bfloat16, device: str = "cuda", seed: int = 0, tag: str = "short_sft") -> Path:
    """A few AdamW steps on oracle trajectories in ``dtype`` with gradient checkpointing (so a 3B model
    fits next to nothing else); only meant to make a random policy emit the tags, not to train it.
    Progress lines start with ``[tag]``."""
    import random

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from igsearch.data.loaders import load_qa
    from igsearch.policy.tiny import save_policy
    from igsearch.retrieval.bm25 import BM25Retriever
    from igsearch.train.sft import build_sft_examples, sft_loss

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation="sdpa").to(device)
    model.gradient_checkpointing_enable()
    model.config.use_cache = False
    examples = build_sft_examples(load_qa(world / "train.jsonl"), tok, BM25Retriever.from_corpus(world / "corpus.jsonl"),
                                  query_noise=0.25, max_len=1024, seed=seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    rng = random.Random(seed)
    model.train()
    for step in range(1, steps + 1):
        loss = sft_loss(model, rng.sample(examples, min(batch_size, len(examples))), max_tokens_per_row=4096)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step == 1 or step % 10 == 0 or step == steps:
            print(f"[{tag}] sft step {step}/{steps}: loss {loss.item():.3f}", flush=True)
    model.config.use_cache = True
    model.gradient_checkpointing_disable()
    model.eval()
    path = save_policy(model, tok, out)
    del model, opt
    if device == "cuda":
        torch.cuda.empty_cache()
    return path
