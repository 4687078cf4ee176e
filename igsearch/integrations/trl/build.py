"""An IG-Search TRL trainer from a model folder and a world (or a question file), set up like our trainer.

Settings come from one of our run configs (``igsearch.train.config.TrainConfig``: a preset such as
``configs/tiny-cpu.yaml`` plus ``key=value`` overrides), so that a TRL run and a run of our own trainer
on the same config are comparable. :func:`grpo_config` maps it to TRL's ``GRPOConfig``:

- ``questions_per_step`` x ``rollout.rollouts_per_question`` rollouts per step -> ``generation_batch_size`` =
  ``per_device_train_batch_size`` (``micro_batch_size`` rows per forward) x ``gradient_accumulation_steps``;
- ``rollout.rollouts_per_question`` -> ``num_generations``; ``rollout.temperature`` -> ``temperature`` (TRL
  divides the training logits by it, as we do); ``rollout.max_response_tokens`` -> ``max_completion_length``;
- ``loss.loss_agg`` -> ``loss_type`` (:func:`trl_loss_type`, below); ``loss.clip_low`` / ``clip_high`` ->
  ``epsilon`` / ``epsilon_high``; ``loss.kl_coef`` (k3 to the starting policy) -> ``beta``, with
  ``use_bias_correction_kl=False`` (TRL's default multiplies the KL by the ratio);
- ``ppo_epochs`` -> ``num_iterations`` (``max_steps`` = ``steps`` x ``ppo_epochs``); ``grad_clip`` ->
  ``max_grad_norm``;
- ``gradient_checkpointing`` (ours: off; TRL's default: on) -> ``gradient_checkpointing``; the model is
  loaded in ``dtype`` (float32 by default) and ``bf16`` / ``fp16`` are False (TRL's default bf16 is on);
- ``optimizer``, ``lr``, ``warmup_steps``, ``weight_decay``, Adam betas/eps -> our own optimizer
  (``build_optimizer``) and schedule (``learning_rate_at``: constant after a linear warm-up), handed to
  TRL as ``optimizers=`` by :func:`build_ig_search_trainer` (:func:`our_optimizer`).

``loss_agg`` -> ``loss_type`` (TRL's ``_compute_loss``; the policy term is the same clipped ratio x A):

- ``token-mean`` (ours: sum over the batch's policy tokens / their number) -> ``dapo``: sum / the number
  of policy tokens of the whole generation batch (``num_items_in_batch``), summed over the
  accumulation micro-batches: the same token mean over the whole batch for any ``micro_batch_size``.
  (``bnpo`` would divide each micro-batch by its own count; ``grpo`` is a per-sequence mean.)
- ``seq-mean-token-mean`` -> ``grpo`` (mean over sequences of each sequence's token mean).
- ``seq-mean-token-sum`` -> ``luspo`` (mean over sequences of each sequence's token sum; TRL logs a
  warning that LUSPO is meant with sequence-level importance sampling, which is not used here).

Not mapped (refused): ``mini_batches`` > 1 (several optimizer steps per batch: TRL's
``steps_per_generation`` normalises ``dapo`` by the average, not each part's, token count),
``sft_replay_coef`` > 0 and ``drop_zero_spread_groups``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from igsearch.data.loaders import QARow, load_qa
from igsearch.data.prompts import PromptTemplate, get_template, question_prompt
from igsearch.policy.load import load_policy
from igsearch.train.config import TrainConfig, load_config

#: our loss aggregation -> TRL's loss_type with the same normalisation (see the module docstring)
LOSS_TYPES = {"token-mean": "dapo", "seq-mean-token-mean": "grpo", "seq-mean-token-sum": "luspo"}


def trl_loss_type(loss_agg: str) -> str:
    """TRL's ``loss_type`` that aggregates the per-token loss as our ``loss_agg`` does."""
    try:
        return LOSS_TYPES[loss_agg]
    except KeyError:
        raise ValueError(f"unknown loss aggregation {loss_agg!r}; expected one of {sorted(LOSS_TYPES)}") from None


def device_of(cfg: TrainConfig) -> str:
    """The training device of ``cfg.device`` (auto: cuda when available)."""
    if cfg.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return cfg.device


def check_supported(cfg: TrainConfig) -> None:
    """ValueError for settings of our trainer the TRL integration does not reproduce."""
    if cfg.mini_batches != 1:
        raise ValueError(f"mini_batches={cfg.mini_batches}: the TRL integration runs one optimizer step per batch "
                         "(use micro_batch_size for gradient accumulation)")
    if cfg.sft_replay_coef > 0:
        raise ValueError("sft_replay_coef > 0: the supervised replay is not part of the TRL integration")
    if cfg.drop_zero_spread_groups:
        raise ValueError("drop_zero_spread_groups: not part of the TRL integration")


def grpo_config(cfg: TrainConfig, output_dir, *, micro_batch_size: int | None = None, **overrides: Any):
    """TRL ``GRPOConfig`` equivalent to ``cfg`` (module docstring), on the CPU when ``cfg``'s device is.

    ``micro_batch_size``: rows per forward/backward in each process (default: all of the process's rows, one
    forward per step). Under ``torchrun`` (``WORLD_SIZE`` processes) each process holds batch / WORLD_SIZE of
    the ``questions_per_step`` x G rollouts, which the processes must divide, and ``micro_batch_size`` must
    divide that. ``overrides``: further ``GRPOConfig`` fields, applied last (e.g. ``logging_steps``).
    """
    from trl import GRPOConfig

    check_supported(cfg)
    G = cfg.rollout.rollouts_per_question
    batch = cfg.questions_per_step * G
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world < 1 or batch % world:
        raise ValueError(f"{world} processes must divide the batch of {cfg.questions_per_step} questions x {G} "
                         f"rollouts = {batch}")
    per_process = batch // world
    micro = micro_batch_size or per_process
    if micro < 1 or per_process % micro:
        raise ValueError(f"micro_batch_size={micro} must divide each process's {per_process} rows of the batch of "
                         f"{cfg.questions_per_step} questions x {G} rollouts = {batch}")
    on_cpu = device_of(cfg) == "cpu"
    kwargs: dict[str, Any] = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=per_process // micro,  # steps_per_generation defaults to it: one generation a step
        num_generations=G,
        max_completion_length=cfg.rollout.max_response_tokens,
        temperature=cfg.rollout.temperature,
        top_p=cfg.rollout.top_p,
        num_iterations=cfg.ppo_epochs,
        max_steps=cfg.steps * cfg.ppo_epochs,
        loss_type=trl_loss_type(cfg.loss.loss_agg),
        epsilon=cfg.loss.clip_low,
        epsilon_high=cfg.loss.clip_high,
        beta=cfg.loss.kl_coef,
        use_bias_correction_kl=False,
        importance_sampling_level="token",
        mask_truncated_completions=False,  # our rollouts end in </answer>, not EOS: TRL would call them truncated
        learning_rate=cfg.lr,
        lr_scheduler_type="constant",  # replaced by our schedule when the builder passes optimizers=
        max_grad_norm=cfg.grad_clip if cfg.grad_clip > 0 else 0.0,
        weight_decay=cfg.weight_decay,
        adam_beta1=cfg.adam_beta1,
        adam_beta2=cfg.adam_beta2,
        adam_epsilon=cfg.adam_eps,
        gradient_checkpointing=cfg.gradient_checkpointing,
        bf16=False,
        fp16=False,
        use_cpu=on_cpu,
        seed=cfg.seed,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        dataloader_num_workers=0,
        use_vllm=False,
        log_completions=False,
    )
    kwargs.update(overrides)
    return GRPOConfig(**kwargs)


def qa_dataset(rows: Sequence[QARow], tokenizer, template: PromptTemplate):
    """A ``datasets.Dataset`` of our questions for TRL: ``prompt`` (the chat prompt text our trainer rolls out
    from), ``golden_answers``, ``data_source`` and ``id``."""
    from datasets import Dataset

    return Dataset.from_list([
        {"prompt": question_prompt(tokenizer, r, template), "golden_answers": list(r.golden_answers),
         "data_source": r.data_source, "id": r.id}
        for r in rows])


def our_optimizer(model, cfg: TrainConfig):
    """(optimizer, scheduler) as our trainer has them: ``build_optimizer`` and a LambdaLR following
    ``learning_rate_at`` (TRL's optimizer step k, 0-based, runs at our step k + 1's rate)."""
    from igsearch.train.trainer import build_optimizer, learning_rate_at

    optimizer = build_optimizer([p for p in model.parameters() if p.requires_grad], cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: learning_rate_at(cfg, k + 1) / cfg.lr)
    return optimizer, scheduler


def resolve_config(config: TrainConfig | str | Path | None, model_dir, world_dir, train_data,
                   overrides: Iterable[str]) -> TrainConfig:
    """The run config: a preset path (or None = the defaults) with ``model_path``/``world_dir``/``train_data``
    and ``overrides`` applied, or a given ``TrainConfig`` with those fields replaced; validated."""
    given = [f"model_path={model_dir}"]
    if world_dir is not None:
        given.append(f"world_dir={world_dir}")
    if train_data is not None:
        given.append(f"train_data={train_data}")
    if isinstance(config, TrainConfig):
        data = config.to_dict()
        data.update({"model_path": str(model_dir)})
        if world_dir is not None:
            data["world_dir"] = str(world_dir)
        if train_data is not None:
            data["train_data"] = str(train_data)
        cfg = TrainConfig.from_dict(data, source="config")
        if list(overrides):
            raise ValueError("pass overrides with a preset path, or set them on the TrainConfig")
        return cfg.validate("config")
    return load_config(config, [*given, *overrides])


def build_ig_search_trainer(model_dir, world_dir=None, *, output_dir, config: TrainConfig | str | Path | None = None,
                            overrides: Iterable[str] = (), train_data=None, engine: Any = None,
                            micro_batch_size: int | None = None, max_questions: int | None = None,
                            reward_funcs=None, callbacks=None, **grpo_overrides: Any):
    """An :class:`igsearch.integrations.trl.trainer.IGSearchGRPOTrainer` ready to ``train()``.

    ``model_dir``: the policy (an HF folder, e.g. ``runs/demo/sft``); ``world_dir``: a world from
    ``igsearch world build`` (train split, corpus for BM25) or ``train_data``: a question file (then the
    retriever's corpus must be set in the config). ``config``: a preset path (default: the built-in
    defaults) or a ``TrainConfig``; ``overrides``: ``key=value`` strings, e.g. ``advantage.method=grpo``.
    ``engine``: "hf" (transformers ``generate`` on the trained model), "vllm" (our vLLM engine, synced
    after every step; create the trainer under ``if __name__ == "__main__":``), an engine object, or None
    = ``generation.engine`` of the config. ``max_questions``: use only the first questions of the split.
    ``grpo_overrides``: further ``GRPOConfig`` fields.
    """
    from igsearch.train.assembly import check_prompt_lengths, engine_from_config, make_retriever, resolve_paths

    from .trainer import IGSearchGRPOTrainer

    cfg = resolve_config(config, model_dir, world_dir, train_data, overrides)
    check_supported(cfg)
    kind = engine if isinstance(engine, str) or engine is None else None
    if kind is not None:
        kind = kind or cfg.generation.engine
        if kind not in ("hf", "vllm"):
            raise ValueError(f"engine={kind!r}: expected 'hf', 'vllm' or an engine object")
        cfg.generation.engine = kind  # keeps the scorers' checks (scoring.scorer=vllm needs the vLLM engine) true
    paths = resolve_paths(cfg)
    device = device_of(cfg)
    torch.manual_seed(cfg.seed)
    model, tokenizer = load_policy(paths["model"], dtype=cfg.dtype, device=device,
                                   attn_implementation=cfg.attn_implementation)
    template = get_template(cfg.template)
    rows = load_qa(paths["train"], limit=max_questions)
    check_prompt_lengths(rows, tokenizer, template, cfg.max_prompt_tokens, paths["train"])
    if len(rows) < cfg.questions_per_step:
        raise ValueError(f"{paths['train']}: {len(rows)} questions, fewer than questions_per_step="
                         f"{cfg.questions_per_step}")
    retriever = make_retriever(cfg, paths)
    engine_obj = engine if kind is None else (
        engine_from_config(cfg, paths["model"], model, tokenizer) if kind == "vllm" else None)
    args = grpo_config(cfg, output_dir, micro_batch_size=micro_batch_size, **grpo_overrides)
    return IGSearchGRPOTrainer(model, igsearch_config=cfg, retriever=retriever, args=args,
                               train_dataset=qa_dataset(rows, tokenizer, template), engine=engine_obj,
                               reward_funcs=reward_funcs, processing_class=tokenizer, callbacks=callbacks,
                               optimizers=our_optimizer(model, cfg))


__all__ = ["LOSS_TYPES", "build_ig_search_trainer", "check_supported", "device_of", "grpo_config",
           "our_optimizer", "qa_dataset", "resolve_config", "trl_loss_type"]
