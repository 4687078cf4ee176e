"""What a training run is assembled from, before its loop: the paths of its model and data, its retriever
and rollout engine, checks of its inputs, and its run folder (what a previous run left there)."""

from __future__ import annotations

from pathlib import Path

from igsearch.data.loaders import DataError, QARow
from igsearch.data.prompts import question_prompt
from igsearch.policy.load import check_model_dir
from igsearch.train.checkpoint import list_checkpoints
from igsearch.train.config import TrainConfig


def resolve_paths(cfg: TrainConfig) -> dict[str, Path]:
    """Model, train/eval data and corpus paths of a config, with clear errors for missing ones."""
    model = check_model_dir(cfg.model_path)
    world = Path(cfg.world_dir) if cfg.world_dir else None

    def pick(explicit, name):
        if explicit:
            return Path(explicit)
        if world is None:
            raise DataError(f"config: field {name!r}: not set and no world_dir to take it from")
        return world / {"train_data": "train.jsonl", "eval_data": "dev.jsonl", "corpus_path": "corpus.jsonl"}[name]

    paths = {"model": model, "train": pick(cfg.train_data, "train_data"), "eval": pick(cfg.eval_data, "eval_data")}
    if cfg.retrieval.retriever != "http":  # every registered kind reads a corpus
        paths["corpus"] = pick(cfg.retrieval.corpus_path, "corpus_path")
        if not paths["corpus"].exists():
            raise DataError(f"{paths['corpus']}: corpus not found (build the world with `igsearch world build`)")
    for key in ("train", "eval"):
        if not paths[key].exists():
            raise DataError(f"{paths[key]}: {key} data not found")
    return paths


def make_retriever(cfg: TrainConfig, paths: dict):
    from igsearch.retrieval import load_retriever
    from igsearch.retrieval.client import RetrievalClient

    if cfg.retrieval.retriever == "http":
        if not cfg.retrieval.retriever_url:
            raise DataError("config: field 'retriever_url': needed for retriever=http")
        return RetrievalClient(cfg.retrieval.retriever_url, timeout=cfg.retrieval.retriever_timeout_s,
                               patience=cfg.retrieval.retriever_patience_s)
    return load_retriever(cfg.retrieval.retriever, corpus=paths.get("corpus"), index=cfg.retrieval.index_path,
                          encoder=cfg.retrieval.encoder_path)


def engine_from_config(cfg: TrainConfig, model_dir: Path, model, tokenizer, precision=None):
    """The run's rollout engine (``igsearch.rollout.engine.build_engine``): vLLM on ``model_dir`` (the weights
    the run starts from) or transformers on the trained ``model``. vLLM holds its weights in ``precision``'s
    dtype (``igsearch.precision.Precision``; None: ``cfg.precision`` resolved on the model's device) when the
    parameters are fp32, else in the parameters' dtype."""
    from igsearch.precision import resolve_precision
    from igsearch.rollout.engine import build_engine

    if precision is None:
        precision = resolve_precision(cfg.precision, next(model.parameters()).device if model is not None else "cpu")
    dtype = precision.engine_dtype if cfg.dtype == "float32" else cfg.dtype
    return build_engine(cfg.generation.engine, model_dir, model=model, tokenizer=tokenizer, dtype=dtype,
                        max_model_len=cfg.generation.vllm_max_model_len or (cfg.max_prompt_tokens + cfg.rollout.max_response_tokens + 64),
                        seed=cfg.seed, enforce_eager=cfg.generation.vllm_enforce_eager, cpu_kvcache_gb=cfg.generation.vllm_cpu_kvcache_gb,
                        gpu_memory_utilization=cfg.generation.vllm_gpu_memory_utilization)


def check_prompt_lengths(rows: list[QARow], tokenizer, template, limit: int, path) -> None:
    """DataError naming the file and the first question whose chat prompt is longer than ``limit``
    tokens (``max_prompt_tokens``), before anything trains: such a prompt would leave the rollout no
    room within the engine's context."""
    prompts = [question_prompt(tokenizer, r, template) for r in rows]
    for start in range(0, len(prompts), 4096):  # batched: a large split tokenizes in seconds
        ids = tokenizer(prompts[start:start + 4096], add_special_tokens=False)["input_ids"]
        for row, tokens in zip(rows[start:start + 4096], ids):
            if len(tokens) > limit:
                raise DataError(f"{path}: question {row.id!r}: its prompt is {len(tokens)} tokens, more than "
                                f"max_prompt_tokens={limit} (raise max_prompt_tokens or shorten the question)")


def run_progress(out: Path) -> str:
    """What of a training run ``out`` holds ("" for nothing): checkpoints and logged steps."""
    parts = []
    ckpts = list_checkpoints(out)
    if ckpts:
        parts.append(f"{len(ckpts)} checkpoint(s), the last {ckpts[-1].name}")
    metrics = out / "metrics.jsonl"
    if metrics.is_file() and metrics.stat().st_size > 0:
        parts.append("logged metrics")
    return ", ".join(parts)


def clear_run(out: Path) -> None:
    """Remove what a run wrote into ``out``: checkpoints, metrics, evaluations, saved batches."""
    import shutil

    for name in ("checkpoints", "evals", "tensorboard", ".engine"):
        shutil.rmtree(out / name, ignore_errors=True)
    for pattern in ("metrics.jsonl", "eval.json", "batch_step*.jsonl"):
        for f in out.glob(pattern):
            f.unlink()
