"""SFT warm start: teach the policy the search protocol on oracle trajectories of the world.

For every training question (restricted to the chosen hop counts) the oracle
(``igsearch.world.oracle_response``) writes what an ideal agent does: search the right entity,
refine the right fact from the documents the retriever really returns, answer. With
``query_noise`` p each hop's query is corrupted with probability p, so the warm-started policy
learns imperfect searching (and recovery) and RL has something to fix on multi-hop questions.

Each example is tokenised the way the rollouts build it: the chat-templated prompt on its own, then
the response in segments, every ``\\n<documents>...</documents>\\n`` block tokenised separately with
loss mask 0 (injected by the environment, never trained on), everything else with loss mask 1,
then ``<|im_end|>``. The loss is the mean negative log-likelihood over mask-1 response tokens,
computed on length-bucketed padded micro-batches (CPU / SDPA) or with the packed varlen forward
(``igsearch.policy.packing``, flash-attn); the output layer only runs on the trained positions.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from igsearch.data.prompts import SEARCH_OPEN, PromptTemplate, get_template, question_prompt

#: The embedded warm start's loss weight on the injected documents and its cut of an example, in tokens
#: (``igsearch.warmstart.WarmStartConfig``'s defaults; the PPO-ptx replay's fallback for a folder that does
#: not say how it was warm-started, ``igsearch.train.replay``).
WARM_START_DOCUMENT_WEIGHT = 1.0
WARM_START_MAX_LEN = 1024
#: Steps between the checkpoints of a warm-start build or ``igsearch sft`` (a save is the weights plus AdamW's two
#: moments, ~12 bytes a parameter, against 100 steps of minutes), so a build killed after an hour resumes.
SFT_CHECKPOINT_EVERY = 100


@dataclass
class SFTExample:
    """One tokenised oracle trajectory: ``ids`` = prompt + response (+ eos); ``loss_mask`` covers the
    response tokens (``len(ids) - prompt_len`` entries), 1 = written by the policy, 0 = injected."""

    ids: list[int]
    prompt_len: int
    loss_mask: list[int]
    hops: int
    row_id: str = ""


def split_injected(text: str, template: PromptTemplate) -> list[tuple[str, bool]]:
    """Cut a response into (segment, injected) pieces; injected = a ``\\n<documents>...</documents>\\n`` block."""
    pattern = re.compile(
        r"\n" + re.escape(template.docs_open) + r".*?" + re.escape(template.docs_close) + r"\n", re.DOTALL
    )
    pieces: list[tuple[str, bool]] = []
    pos = 0
    for m in pattern.finditer(text):
        if m.start() > pos:
            pieces.append((text[pos:m.start()], False))
        pieces.append((m.group(0), True))
        pos = m.end()
    if pos < len(text):
        pieces.append((text[pos:], False))
    return pieces


def _row_hops(row) -> int:
    return len((row.extra_info or {}).get("hops", []))


def tokenize_example(tokenizer, prompt: str, response: str, template: PromptTemplate, *,
                     max_len: int | None = None) -> tuple[list[int], int, list[int]] | None:
    """(ids, prompt_len, response loss mask) or None when the prompt alone does not fit ``max_len``.

    Responses longer than ``max_len`` are cut at the end."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    response_ids: list[int] = []
    mask: list[int] = []
    for piece, injected in split_injected(response, template):
        ids = tokenizer(piece, add_special_tokens=False)["input_ids"]
        response_ids += ids
        mask += [0 if injected else 1] * len(ids)
    if tokenizer.eos_token_id is not None:
        response_ids.append(tokenizer.eos_token_id)
        mask.append(1)
    if max_len is not None:
        if len(prompt_ids) + 1 > max_len:
            return None
        keep = max_len - len(prompt_ids)
        response_ids, mask = response_ids[:keep], mask[:keep]
    return prompt_ids + response_ids, len(prompt_ids), mask


def build_sft_examples(
    rows: Sequence,
    tokenizer,
    retriever,
    *,
    template: str | PromptTemplate = "refine",
    topk: int | Sequence[int] = 3,
    query_noise: float = 0.0,
    early_answer: float = 0.0,
    distractor: float = 0.0,
    hops: Sequence[int] = (1, 2, 3),
    max_len: int | None = 1024,
    seed: int = 0,
) -> list[SFTExample]:
    """Oracle trajectories for the rows with the given hop counts, tokenised with their loss masks.
    ``topk``: passages per search, or several (each question's demonstration draws one of them, from its
    own seed, so a warm start sees every count)."""
    from igsearch.world import oracle_response

    tmpl = get_template(template) if isinstance(template, str) else template
    topks = [int(topk)] if isinstance(topk, int) else [int(k) for k in topk]
    if not topks or min(topks) < 1:
        raise ValueError(f"topk must be >= 1 (or a list of such), got {topk!r}")
    wanted = set(int(h) for h in hops)
    examples = []
    for row in rows:
        n_hops = _row_hops(row)
        if n_hops not in wanted:
            continue
        rng = random.Random(f"sft-{seed}-{row.id}")
        k = topks[0] if len(topks) == 1 else random.Random(f"sft-topk-{seed}-{row.id}").choice(topks)
        response = oracle_response(row, retriever, template=tmpl, topk=k, query_noise=query_noise,
                                   early_answer=early_answer, distractor=distractor, rng=rng)
        prompt = question_prompt(tokenizer, row, tmpl, own_only_if_same_template=True)
        tokenized = tokenize_example(tokenizer, prompt, response, tmpl, max_len=max_len)
        if tokenized is None:
            continue
        ids, prompt_len, mask = tokenized
        examples.append(SFTExample(ids, prompt_len, mask, n_hops, str(row.id)))
    return examples


def _token_weights(e: SFTExample, document_weight: float) -> torch.Tensor:
    """Loss weight of each response token of ``e``: 1 for the policy's tokens, ``document_weight``
    for the injected documents."""
    mask = torch.tensor(e.loss_mask, dtype=torch.float32)
    return mask + (1.0 - mask) * document_weight


def sft_loss(model, examples: Sequence[SFTExample], *, max_tokens_per_row: int | None = 2048,
             document_weight: float = 0.0) -> torch.Tensor:
    """Weighted mean negative log-likelihood over the response tokens of ``examples`` (scalar, with grad).

    The policy's own tokens (loss mask 1) weigh 1; the injected documents weigh ``document_weight``
    (0: plain SFT; > 0 adds a language-modelling loss on the documents, which teaches a policy
    trained from scratch to read and repeat the names it sees in them).

    The forward is ``igsearch.policy.packing.packed_token_logprobs``'s: length-sorted right-padded
    micro-batches of at most ``max_tokens_per_row`` padded tokens with SDPA (the CPU), packed varlen rows
    with flash-attn; the output layer runs only on response positions (fused log-prob gather).
    """
    from igsearch.policy.packing import packed_token_logprobs

    logps = packed_token_logprobs(model, [e.ids for e in examples], compute_from=[e.prompt_len for e in examples],
                                  max_tokens_per_row=max_tokens_per_row)
    device = logps[0].device
    weights = [_token_weights(e, document_weight).to(device) for e in examples]
    total = sum((-(lp * w)).sum() for lp, w in zip(logps, weights))
    count = sum(w.sum() for w in weights)
    return total / count.clamp_min(1.0)


def cosine_schedule(optimizer, total_steps: int, warmup_steps: int = 0):
    """LambdaLR: linear warm-up, then cosine decay to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _load_policy(model_dir: Path, device: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(
            f"{model_dir}: no model here (expected an HF directory with config.json); build the tiny "
            "default with `igsearch sft --model tiny ...` or pass a Qwen2.5 directory"
        )
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    return model.to(device), tokenizer


def sft_rollout_settings(examples: Sequence[SFTExample], tokenizer, *, template: str, topk: int | Sequence[int],
                         max_len: int) -> dict:
    """The rollout settings an SFT warm start was trained under, from its demonstrations: their template
    and passages per search, uncut documents, one turn more than the most searches demonstrated, twice the
    longest demonstrated turn (policy tokens between two injections, in steps of 32) and 1.5 times the
    longest response (in steps of 64, within ``max_len`` after the longest prompt)."""
    search_id = tokenizer.convert_tokens_to_ids(SEARCH_OPEN)
    searches = turn = response = prompt = 0
    for ex in examples:
        searches = max(searches, ex.ids[ex.prompt_len:].count(search_id))
        run = 0
        for m in ex.loss_mask:
            run = run + 1 if m else 0
            turn = max(turn, run)
        response = max(response, len(ex.ids) - ex.prompt_len)
        prompt = max(prompt, ex.prompt_len)
    up = lambda n, k: -(-n // k) * k  # noqa: E731
    topk = topk if isinstance(topk, int) else sorted(topk)[len(topk) // 2]  # trained over several: the middle one
    return {"template": template, "topk": topk, "max_doc_tokens": 0, "max_turns": searches + 1,
            "max_new_tokens_per_turn": up(max(1, 2 * turn), 32),
            "max_response_tokens": max(64, min(up(int(1.5 * response), 64), max_len - prompt))}


def run_sft(
    model_dir,
    world_dir,
    out_dir,
    *,
    steps: int = 300,
    batch_size: int = 16,
    lr: float = 1e-3,
    query_noise: float = 0.2,
    early_answer: float = 0.0,
    distractor: float = 0.0,
    hops: Sequence[int] = (1, 2, 3),
    max_len: int = 1024,
    seed: int = 0,
    retriever=None,
    template: str = "refine",
    topk: int | Sequence[int] = 3,
    warmup_steps: int = 10,
    weight_decay: float = 0.0,
    grad_clip: float = 1.0,
    device: str = "cpu",
    max_tokens_per_forward: int = 2048,
    split: str = "train",
    document_weight: float = 0.0,
    progress: bool = True,
    threads: str | int | None = None,
    precision: str = "auto",
    checkpoint_every: int = 0,
) -> Path:
    """Fine-tune the policy in ``model_dir`` on oracle trajectories of ``world_dir`` and save it
    (model + tokenizer, atomically) to ``out_dir``; returns ``out_dir``.

    ``hops``: hop counts of the questions seen; ``query_noise``: probability of a corrupted query per
    hop; ``early_answer``: probability that the demonstrator stops after a non-final hop;
    ``distractor``: probability that it follows a look-alike entity after a non-final hop
    (:func:`igsearch.world.oracle_response`);
    ``document_weight``: loss weight of the injected documents (see :func:`sft_loss`);
    ``retriever`` defaults to BM25 over the world's corpus; ``threads``: torch threads, ``auto`` (chosen from
    the load every ``igsearch.threads.SFT_RECHECK_STEPS`` steps), a count, or None (``IGSEARCH_THREADS``,
    else auto); ``precision``: the forwards' precision (``igsearch.precision``: auto | fp32 | bf16; bf16 is
    autocast over fp32 master weights, the loss in fp32). Writes ``sft_summary.json`` in ``out_dir`` with the settings, the threads chosen, the loss at
    the start and the end, the seconds of the training loop and the tokens (prompt + response) per step.

    ``checkpoint_every`` N > 0: every N steps the whole training state (weights, AdamW, schedule, data
    order and RNG states) is checkpointed into ``<out_dir>.partial/`` (:func:`sft_partial_dir`), and a
    later call with the same settings and demonstrations resumes from it, to the same weights as an
    uninterrupted run at the same thread count; the folder is removed once ``out_dir`` is written. A
    checkpoint of other settings is an error that names the first field that differs.
    """
    from igsearch.data.loaders import load_qa
    from igsearch.io import atomic_write_json
    from igsearch.policy.tiny import save_policy
    from igsearch.precision import resolve_precision
    from igsearch.rollout.trained import write_rollout_settings
    from igsearch.threads import SFT_RECHECK_STEPS, ThreadPolicy
    from igsearch.train.logging import TrainProgress

    model_dir, world_dir, out_dir = Path(model_dir), Path(world_dir), Path(out_dir)
    rows_path = world_dir / f"{split}.jsonl"
    if not rows_path.is_file():
        raise FileNotFoundError(f"{rows_path}: no {split} split; build the world first (igsearch world)")
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model, tokenizer = _load_policy(model_dir, device)
    prec = resolve_precision(precision, device)
    if retriever is None:
        from igsearch.retrieval.bm25 import BM25Retriever

        retriever = BM25Retriever.from_corpus(world_dir / "corpus.jsonl")
    examples = build_sft_examples(
        load_qa(rows_path), tokenizer, retriever, template=template, topk=topk,
        query_noise=query_noise, early_answer=early_answer, distractor=distractor, hops=hops, max_len=max_len,
        seed=seed,
    )
    if not examples:
        raise ValueError(f"{rows_path}: no questions with {list(hops)} hops fit max_len={max_len}")

    resume_key = _resume_key(model_dir, examples, steps=steps, batch_size=batch_size, lr=lr,
                             warmup_steps=warmup_steps, weight_decay=weight_decay, grad_clip=grad_clip,
                             document_weight=document_weight, seed=seed, precision=prec.name,
                             max_tokens_per_forward=max_tokens_per_forward)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )
    scheduler = cosine_schedule(optimizer, steps, warmup_steps)
    order: list[int] = []
    losses: list[float] = []
    tokens = 0
    threads_policy = ThreadPolicy(threads, log=None)
    partial = sft_partial_dir(out_dir)
    done, seconds_before = 0, 0.0
    if checkpoint_every > 0:
        state = _resume(partial, resume_key, model, optimizer, scheduler)
        if state is not None:
            done, seconds_before, tokens = state["step"], state["train_seconds"], state["tokens"]
            order, losses = state["order"], state["losses"]
            rng.setstate(state["python_rng"])
    t_train = time.perf_counter()
    with TrainProgress(steps, initial=done, description="sft", disable=not progress) as bar:
        threads_policy.log = bar.print if progress else None
        if done:
            (bar.print if progress else print)(f"sft: resumed at step {done}/{steps} from {partial}")
        for step in range(done + 1, steps + 1):
            if step % SFT_RECHECK_STEPS == 1 or SFT_RECHECK_STEPS == 1:
                threads_policy.choose("sft")
            batch = []
            while len(batch) < min(batch_size, len(examples)):
                if not order:
                    order = list(range(len(examples)))
                    rng.shuffle(order)
                batch.append(examples[order.pop()])
            tokens += sum(len(e.ids) for e in batch)
            with prec.autocast():
                loss = sft_loss(model, batch, max_tokens_per_row=max_tokens_per_forward, document_weight=document_weight)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"SFT loss is {loss.item()} at step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            bar.update(step, {"loss": loss.item()})
            if checkpoint_every > 0 and step % checkpoint_every == 0 and step < steps:
                _checkpoint(partial, resume_key, step, model, optimizer, scheduler, order=order, losses=losses,
                            tokens=tokens, python_rng=rng.getstate(),
                            train_seconds=seconds_before + time.perf_counter() - t_train)
    train_seconds = seconds_before + time.perf_counter() - t_train
    model.eval()
    save_policy(model, tokenizer, out_dir)
    write_rollout_settings(out_dir, sft_rollout_settings(examples, tokenizer, template=template, topk=topk,
                                                         max_len=max_len), source="sft")
    window = max(1, min(10, len(losses) // 5))
    atomic_write_json(out_dir / "sft_summary.json", {
        "model": str(model_dir), "world": str(world_dir), "steps": steps, "batch_size": batch_size,
        "lr": lr, "query_noise": query_noise, "early_answer": early_answer, "distractor": distractor, "document_weight": document_weight, "hops": list(hops), "max_len": max_len, "seed": seed,
        "template": template, "topk": topk, "examples": len(examples), "threads": threads_policy.summary(),
        "precision": prec.to_dict(),
        "train_seconds": train_seconds, "tokens_per_step": tokens / max(1, steps),
        "loss_first": sum(losses[:window]) / window, "loss_last": sum(losses[-window:]) / window,
        "resumed_from_step": done,
    })
    shutil.rmtree(partial, ignore_errors=True)
    return out_dir


def sft_partial_dir(out_dir) -> Path:
    """Where :func:`run_sft` keeps the checkpoints of an unfinished run for ``out_dir``: ``<out_dir>.partial``
    beside it (so ``out_dir`` itself only ever holds a finished policy)."""
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + ".partial")


def _resume_key(model_dir: Path, examples: Sequence[SFTExample], **settings) -> dict:
    """What a checkpoint must match to be resumed: the settings that shape the optimisation, the starting
    model's folder and a digest of the demonstrations (token ids and loss masks, in order)."""
    digest = hashlib.sha256()
    for e in examples:
        digest.update(repr((e.ids, e.prompt_len, e.loss_mask)).encode())
    return {**settings, "model": str(model_dir.resolve()), "examples": len(examples),
            "examples_sha256": digest.hexdigest()}


def _checkpoint(partial: Path, key: dict, step: int, model, optimizer, scheduler, *, order: list[int],
                losses: list[float], tokens: int, python_rng: tuple, train_seconds: float) -> None:
    from igsearch.train.checkpoint import save_checkpoint

    version, internal, gauss = python_rng
    extra = {"order": torch.tensor(order, dtype=torch.int64), "losses": torch.tensor(losses, dtype=torch.float64),
             "tokens": int(tokens), "train_seconds": float(train_seconds),
             "python_rng": [int(version), torch.tensor(internal, dtype=torch.int64), gauss]}
    save_checkpoint(partial, step, model, optimizer, key, extra, scheduler=scheduler, keep=1)


def _resume(partial: Path, key: dict, model, optimizer, scheduler) -> dict | None:
    """Load the newest checkpoint under ``partial`` into the model, optimizer and scheduler (and the
    global RNGs); returns its step, data order, losses, tokens, seconds and the data RNG's state, or None
    when there is none. A checkpoint that does not verify is skipped (with a line); one of other
    settings raises ``ValueError`` naming the first field that differs."""
    from igsearch.train.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, resolve_checkpoint

    if latest_checkpoint(partial) is None:
        return None
    try:
        path = resolve_checkpoint(partial, verify=True, log=print)
    except CheckpointError as e:
        print(f"sft: starting over: {e}")
        return None
    saved = json.loads((path / "config.json").read_text(encoding="utf-8"))
    if saved != key:
        field = next(k for k in sorted(set(saved) | set(key)) if saved.get(k) != key.get(k))
        raise ValueError(f"{path}: a checkpoint of other SFT settings ({field}: {saved.get(field)!r} there, "
                         f"{key.get(field)!r} now); remove {partial} to start over")
    state = load_checkpoint(path, model, optimizer, scheduler=scheduler)
    extra = state["extra"]
    version, internal, gauss = extra["python_rng"]
    return {"step": state["step"], "order": extra["order"].tolist(), "losses": extra["losses"].tolist(),
            "tokens": int(extra["tokens"]), "train_seconds": float(extra["train_seconds"]),
            "python_rng": (int(version), tuple(int(x) for x in internal.tolist()), gauss)}
