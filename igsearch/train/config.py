"""The training configuration: one documented dataclass, YAML presets and ``key=value`` overrides.

Every field carries its documentation in ``metadata["help"]`` (shown by ``describe_config()`` and in
error messages). Presets live in ``configs/``:

- ``configs/tiny-cpu.yaml``: the embedded default (synthetic world, BM25, tiny Qwen2 policy, CPU).
- ``configs/qwen2.5-3b-gpu.yaml``: the Search-R1 / AutoRefine settings for Qwen2.5-3B on a GPU.

``load_config(path, overrides)`` reads a preset, applies overrides typed by the field
(``lr=1e-6``, ``vllm_enforce_eager=true``, ``ig_clip=none``; lists as ``1,2`` or ``[1, 2]``) and validates the result.
Errors name the source and the field: ``configs/x.yaml: field 'lr': expected a float, got 'abc'``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from igsearch.train.io import atomic_write_text

#: fields older versions wrote into checkpoints' config.json, skipped when such a config is read back
REMOVED_FIELDS = frozenset({"tokenizer_path"})  # the tokenizer is always the model directory's


def _f(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with its documentation attached."""
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


class ConfigError(ValueError):
    """A configuration value that is missing, of the wrong type or out of range."""


@dataclass
class TrainConfig:
    """Everything a GRPO / IG-Search training run needs, with the embedded CPU default as defaults."""

    # ---------------------------------------------------------------- model
    model_path: str | None = _f(
        None,
        "HF model directory (or hub id) of the policy to train, e.g. the SFT warm start. "
        "Required; the GPU preset leaves it unset on purpose.",
    )
    dtype: str = _f("float32", "Parameter dtype of the trained policy: float32 | bfloat16 | float16.")
    device: str = _f("auto", "Device for the policy update: auto (cuda if available) | cpu | cuda | cuda:N.")
    attn_implementation: str = _f(
        "auto",
        "Attention for the packed policy forward: auto (flash_attention_2 when flash-attn is "
        "installed on GPU, else sdpa) | sdpa | flash_attention_2.",
    )
    gradient_checkpointing: bool = _f(False, "Recompute activations in the backward pass to save memory.")

    # ---------------------------------------------------------------- data
    world_dir: str | None = _f(
        "runs/world",
        "Directory of the synthetic world (corpus + train/dev/test splits). Used for any data or "
        "corpus path left unset.",
    )
    train_data: str | None = _f(None, "Training questions (Search-R1 parquet / jsonl); None = world_dir's train split.")
    eval_data: str | None = _f(None, "Evaluation questions; None = world_dir's dev split.")
    template: str = _f("refine", "Prompt template: refine (AutoRefine, used by IG) | search-r1.")
    max_prompt_tokens: int = _f(512, "Prompts longer than this many tokens are rejected when loading the data.")

    # ---------------------------------------------------------------- retrieval
    retriever: str = _f("bm25", "Retriever: bm25 (local, over corpus_path) | dense | http.")
    corpus_path: str | None = _f(None, "Passage corpus (jsonl, Search-R1 format); None = world_dir's corpus.")
    index_path: str | None = _f(None, "Dense index (faiss) for retriever=dense.")
    retriever_url: str | None = _f(None, "URL of a retrieval server for retriever=http, e.g. http://127.0.0.1:8000/retrieve.")
    retriever_timeout_s: float = _f(30.0, "Seconds to wait for the retrieval server before failing with a clear error.")
    topk: int = _f(3, "Passages returned per search.")

    # ---------------------------------------------------------------- method and rollouts
    method: str = _f(
        "ig",
        "Advantage estimator by registry name: ig (GRPO + step information gain) | grpo "
        "(trajectory-level baseline) | rloo (leave-one-out baseline) | gigpo (GiGPO anchor-state step "
        "groups) | igpo (IGPO turn-level gain) | any name registered with register_advantage_estimator.",
    )
    steps: int = _f(100, "Number of policy updates (training steps).")
    questions_per_step: int = _f(8, "Questions sampled per training step.")
    rollouts_per_question: int = _f(4, "G: rollouts per question, forming one GRPO group.")
    max_turns: int = _f(3, "Maximum search turns per rollout; the rollout is cut after that.")
    max_new_tokens_per_turn: int = _f(128, "Maximum tokens the policy generates in one turn.")
    max_response_tokens: int = _f(512, "Maximum response length (generated + injected tokens) per rollout.")
    max_doc_tokens: int = _f(256, "Injected documents are truncated to this many tokens per search.")
    temperature: float = _f(1.0, "Sampling temperature of the rollouts (also applied to the training log-probs).")
    top_p: float = _f(1.0, "Nucleus sampling threshold of the rollouts. Below 1, vLLM's sampling log-probs are "
                           "not pi_old's, so the trainer recomputes pi_old under the rollout weights.")
    format_penalty: float = _f(0.0, "Subtracted from the reward of a malformed rollout or one without an answer.")

    # ---------------------------------------------------------------- optimisation
    lr: float = _f(1e-4, "AdamW learning rate.")
    weight_decay: float = _f(0.0, "AdamW weight decay.")
    adam_beta1: float = _f(0.9, "AdamW beta1.")
    adam_beta2: float = _f(0.999, "AdamW beta2.")
    adam_eps: float = _f(1e-8, "AdamW epsilon.")
    warmup_steps: int = _f(0, "Linear learning-rate warm-up: lr * step / warmup_steps for the first steps, "
                              "constant afterwards (0 = none).")
    grad_clip: float = _f(1.0, "Clip the global gradient norm to this value (<= 0 disables).")
    ppo_epochs: int = _f(1, "Passes over each batch of rollouts (1 = on-policy, ratio starts at 1).")
    mini_batches: int = _f(1, "Optimizer steps per pass: the batch of rollouts is split into this many parts.")
    sft_replay_coef: float = _f(
        0.0, "PPO-ptx: weight of a supervised loss on oracle trajectories (questions of sft_replay_data) added to "
             "every policy update, so that RL does not erase what the warm start learned; 0 = off.")
    sft_replay_data: str | None = _f(None, "Questions with oracle hops for sft_replay_coef (a world split); "
                                           "None = world_dir's warmup split, the warm start's own data.")
    sft_replay_batch: int = _f(8, "Oracle trajectories per policy update for sft_replay_coef.")
    drop_zero_spread_groups: bool = _f(
        False, "Train only on groups whose rewards differ (DAPO-style dynamic filtering). This also drops the "
               "all-fail groups, where only step IG gives a gradient.")
    max_tokens_per_forward: int = _f(
        8192, "Token budget of one packed policy forward (sequences are packed without padding)."
    )

    # ---------------------------------------------------------------- loss
    clip_low: float = _f(0.2, "PPO ratio clip below: ratio >= 1 - clip_low.")
    clip_high: float = _f(0.2, "PPO ratio clip above: ratio <= 1 + clip_high.")
    kl_coef: float = _f(0.0, "Coefficient of the k3 KL penalty to a frozen reference policy (0 = no reference).")
    loss_agg: str = _f("token-mean", "Loss aggregation: token-mean | seq-mean-token-mean | seq-mean-token-sum.")

    # ---------------------------------------------------------------- advantages (docs/DESIGN.md section 4)
    adv_scale: str = _f("std", "GRPO group advantage: std ((R - mean) / (std + eps)) | none (R - mean).")
    adv_eps: float = _f(1e-6, "Epsilon added to the group standard deviations.")
    ig_beta: float = _f(0.5, "beta: weight of the normalised step IG added to the query-span tokens' advantage "
                             "(default measured by bench/ig_coefficients.py).")
    ig_norm: str = _f("group", "Step-IG normalisation: group (z-score per group) | batch (z-score per batch) | none.")
    ig_clip: float | None = _f(2.0, "c: normalised step IG is clipped to [-c, c]; none disables clipping "
                                      "(default measured by bench/ig_coefficients.py).")
    span_weight: str = _f("uniform", "Weight of a query-span token: uniform (1) | inverse_length (1 / |span|).")
    gigpo_omega: float = _f(1.0, "GiGPO: weight omega of the step-level (anchor-state group) advantage.")
    gigpo_gamma: float = _f(0.95, "GiGPO: discount gamma of the episode reward back to earlier turns.")
    igpo_gamma: float = _f(1.0, "IGPO: discount gamma of the cumulative normalised turn rewards.")

    # ---------------------------------------------------------------- IG scoring (docs/DESIGN.md section 3)
    ig_n_random: int = _f(3, "Counterfactual (documents, refine) pairs drawn per step.")
    ig_head_tokens: int = _f(3, "Number of leading gold-answer tokens weighted by ig_head_weight.")
    ig_head_weight: float = _f(3.0, "Weight of the leading gold-answer tokens before normalising the weights to mean 1.")
    ig_max_gold_variants: int = _f(1, "Gold answer variants scored per question (the best real score is kept).")
    ig_max_context_tokens: int = _f(4096, "Scoring contexts are truncated from the left to this many tokens.")
    ig_scorer: str = _f("tree", "Continuation scorer for IG: tree (shared-prefix packing) | naive (one sequence each).")

    # ---------------------------------------------------------------- operations
    seed: int = _f(0, "Seed of the run (data order, rollouts, counterfactual draws, initialisation).")
    checkpoint_every: int = _f(50, "Write a checkpoint every this many steps (and always at the end).")
    keep_checkpoints: int = _f(3, "Number of most recent checkpoints kept on disk.")
    log_every: int = _f(1, "Write metrics every this many steps.")
    eval_every: int = _f(0, "Evaluate on eval_questions before training, every this many steps and at the last step, writing "
                            "per-question results to evals/step_NNNNNN.json (0 = only at the end).")
    eval_questions: int = _f(64, "Questions of the eval split used for evaluation (greedy, one rollout each).")
    probe_questions: int = _f(0, "At every evaluation, also roll out this many eval questions rollouts_per_question "
                                 "times at the training temperature, with fixed seeds (0 = no probe).")
    tensorboard: bool = _f(True, "Also write TensorBoard event files next to metrics.jsonl.")

    # ---------------------------------------------------------------- vLLM
    vllm_gpu_memory_utilization: float = _f(0.4, "Share of GPU memory vLLM may take for weights and KV cache.")
    vllm_enforce_eager: bool = _f(True, "Disable CUDA graphs in vLLM (faster start, slower decode).")
    vllm_max_model_len: int | None = _f(None, "vLLM context length; None = prompt + response limits.")
    vllm_cpu_kvcache_gb: float = _f(1.0, "KV-cache size in GiB for the CPU backend of vLLM.")
    engine: str = _f("vllm", "Rollout engine: vllm (vllm on GPU, vllm-cpu here) | hf (transformers generate; slow, no vLLM needed).")

    # ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field (JSON / YAML serialisable)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "TrainConfig":
        """A config from a dict such as ``to_dict()`` wrote (e.g. a checkpoint's config.json), with the
        same typing and error messages as ``load_config``; not validated."""
        values: dict[str, Any] = {}
        for name, raw in data.items():
            if name in REMOVED_FIELDS:  # written by an older version: nothing reads it any more
                continue
            _set_field(values, source, str(name), raw)
        return cls(**values)

    def save(self, path: str | Path) -> Path:
        """Write the config atomically: YAML for ``.yaml``/``.yml``, JSON otherwise."""
        path = Path(path)
        if path.suffix in (".yaml", ".yml"):
            text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        else:
            text = json.dumps(self.to_dict(), indent=2) + "\n"
        return atomic_write_text(path, text)

    def validate(self, source: str = "config") -> "TrainConfig":
        """Raise ConfigError naming ``source`` and the field for a value out of range; returns self."""

        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"{source}: field {name!r}: {why}")

        if not self.model_path:
            raise bad(
                "model_path",
                "not set; pass model_path=/path/to/model (an HF model directory, e.g. the SFT warm "
                "start or Qwen2.5-3B)",
            )
        for f in dataclasses.fields(self):  # inf / nan pass every range check below and poison the run later
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise bad(f.name, f"must be a finite number, got {value}")
        for name in ("steps", "questions_per_step", "rollouts_per_question", "max_turns",
                     "max_new_tokens_per_turn", "max_response_tokens", "topk", "ppo_epochs",
                     "mini_batches", "max_tokens_per_forward", "checkpoint_every", "keep_checkpoints",
                     "log_every", "sft_replay_batch", "ig_n_random", "ig_max_gold_variants", "ig_max_context_tokens"):
            if getattr(self, name) < 1:
                raise bad(name, f"must be >= 1, got {getattr(self, name)}")
        for name in ("gigpo_gamma", "igpo_gamma"):
            if not 0 < getattr(self, name) <= 1:
                raise bad(name, f"must be in (0, 1], got {getattr(self, name)}")
        for name in ("lr", "temperature", "ig_head_weight", "retriever_timeout_s", "vllm_cpu_kvcache_gb"):
            if not getattr(self, name) > 0:
                raise bad(name, f"must be > 0, got {getattr(self, name)}")
        for name in ("weight_decay", "clip_low", "clip_high", "kl_coef", "adv_eps", "format_penalty", "sft_replay_coef",
                     "eval_every", "eval_questions", "probe_questions", "warmup_steps", "ig_head_tokens"):
            if getattr(self, name) < 0:
                raise bad(name, f"must be >= 0, got {getattr(self, name)}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise bad("device", f"expected auto, cpu, cuda or cuda:N, got {self.device!r}")
        if not 0 < self.vllm_gpu_memory_utilization <= 1:
            raise bad("vllm_gpu_memory_utilization", f"must be in (0, 1], got {self.vllm_gpu_memory_utilization}")
        if not 0 < self.top_p <= 1:
            raise bad("top_p", f"must be in (0, 1], got {self.top_p}")
        if self.ig_clip is not None and self.ig_clip <= 0:
            raise bad("ig_clip", f"must be > 0 or none, got {self.ig_clip}")
        # each choice list lives with the code that acts on it
        from igsearch.algo.advantages import ADV_SCALES, IG_NORMS, SPAN_WEIGHTS
        from igsearch.algo.loss import LOSS_AGGS
        from igsearch.data.prompts import TEMPLATES
        from igsearch.retrieval import RETRIEVERS
        from igsearch.scoring import list_scorers

        choices = {
            "dtype": ("float32", "bfloat16", "float16"),
            "attn_implementation": ("auto", "sdpa", "flash_attention_2", "eager"),
            "template": tuple(TEMPLATES),
            "retriever": RETRIEVERS,
            "loss_agg": LOSS_AGGS,
            "adv_scale": ADV_SCALES,
            "ig_norm": IG_NORMS,
            "span_weight": SPAN_WEIGHTS,
            "ig_scorer": tuple(list_scorers()),
            "engine": ("vllm", "hf"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise bad(name, f"expected one of {list(allowed)}, got {getattr(self, name)!r}")
        if self.retriever == "http" and not self.retriever_url:
            raise bad("retriever_url", "retriever=http needs retriever_url=http://HOST:PORT/retrieve")
        if self.rollouts_per_question < 2:
            raise bad("rollouts_per_question", "GRPO needs at least 2 rollouts per question")
        return self

    def advantage_config(self):
        """The advantage-estimator settings as ``igsearch.algo.advantages.AdvantageConfig``."""
        from igsearch.algo.advantages import AdvantageConfig

        return AdvantageConfig(
            estimator=self.method, scale=self.adv_scale, eps=self.adv_eps, ig_beta=self.ig_beta,
            ig_norm=self.ig_norm, ig_clip=self.ig_clip, span_weight=self.span_weight,
            gigpo_omega=self.gigpo_omega, gigpo_gamma=self.gigpo_gamma, igpo_gamma=self.igpo_gamma,
        )

    def loss_config(self):
        """The loss settings as ``igsearch.algo.loss.LossConfig``."""
        from igsearch.algo.loss import LossConfig

        return LossConfig(
            clip_low=self.clip_low, clip_high=self.clip_high, kl_coef=self.kl_coef, agg=self.loss_agg
        )


# ------------------------------------------------------------------------------------------------
# Loading, typed coercion and error messages


_TRUE = {"true", "yes", "on", "1", "y"}
_FALSE = {"false", "no", "off", "0", "n"}
_NONE = {"none", "null", "~", ""}


def config_fields() -> dict[str, dataclasses.Field]:
    """Name -> dataclass Field of every TrainConfig field."""
    return {f.name: f for f in dataclasses.fields(TrainConfig)}


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _type_name(tp: Any) -> str:
    base, optional = _unwrap_optional(tp)
    if typing.get_origin(base) is list:
        (inner,) = typing.get_args(base) or (str,)
        name = f"a list of {_type_name(inner)}s"
    else:
        name = {int: "an int", float: "a float", bool: "a bool (true/false)", str: "a string"}.get(
            base, getattr(base, "__name__", str(base))
        )
    return f"{name} or none" if optional else name


class _Mismatch(Exception):
    pass


def coerce_value(value: Any, tp: Any) -> Any:
    """``value`` (from YAML or an override string) converted to type ``tp``; raises _Mismatch."""
    base, optional = _unwrap_optional(tp)
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in _NONE):
        if optional:
            return None
        raise _Mismatch
    if typing.get_origin(base) is list:
        (inner,) = typing.get_args(base) or (str,)
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    value = yaml.safe_load(text)
                except yaml.YAMLError:
                    raise _Mismatch from None
            else:
                value = [p.strip() for p in text.split(",") if p.strip()]
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            value = [value]
        return [coerce_value(v, inner) for v in value]
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise _Mismatch
    if base is int:
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip().replace("_", ""))
            except ValueError:
                try:
                    f = float(value)
                except ValueError:
                    raise _Mismatch from None
                if f.is_integer():
                    return int(f)
        raise _Mismatch
    if base is float:
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())  # PyYAML reads "1e-6" (no dot) as a string
            except ValueError:
                raise _Mismatch from None
        raise _Mismatch
    if base is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise _Mismatch
    return value


def _unknown_field_error(source: str, name: str) -> ConfigError:
    close = difflib.get_close_matches(name, list(config_fields()), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else (
        "; see `describe_config()` or configs/tiny-cpu.yaml for the known fields"
    )
    return ConfigError(f"{source}: unknown field {name!r}{hint}")


def _set_field(values: dict[str, Any], source: str, name: str, raw: Any) -> None:
    types_ = _field_types()
    if name not in types_:
        raise _unknown_field_error(source, name)
    try:
        values[name] = coerce_value(raw, types_[name])
    except _Mismatch:
        raise ConfigError(
            f"{source}: field {name!r}: expected {_type_name(types_[name])}, got {raw!r}"
        ) from None


def parse_override(text: str) -> tuple[str, str]:
    """``"key=value"`` -> (key, value); the key may use dashes for underscores."""
    key, sep, value = text.partition("=")
    key = key.strip().lstrip("-").replace("-", "_")
    if not sep or not key:
        raise ConfigError(f"override {text!r}: expected key=value, e.g. lr=1e-6")
    return key, value.strip()


def load_config(
    path: str | Path | None = None, overrides: typing.Iterable[str] = (), *, validate: bool = True
) -> TrainConfig:
    """TrainConfig from the YAML file ``path`` (None = the defaults), then ``key=value`` overrides.

    Values are typed by the field (int / float / bool / str / list / optional). Errors are
    ConfigError naming the file (or the override) and the field.
    """
    values: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{source}: config file not found")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError(f"{source}: not valid YAML: {e}") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"{source}: not UTF-8 text (byte {e.start}: {e.reason})") from None
        except RecursionError:
            raise ConfigError(f"{source}: nested too deeply to be a config (expected a flat mapping of field: value)") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a mapping of field: value, got {type(data).__name__}")
        for name, raw in data.items():
            if name in REMOVED_FIELDS:  # e.g. the config.yaml of a run made by an older version
                print(f"{source}: field {name!r} is no longer used and is ignored", file=sys.stderr)
                continue
            _set_field(values, source, str(name), raw)
    for text in overrides:
        key, raw = parse_override(text)
        _set_field(values, f"override {text!r}", key, raw)
    cfg = TrainConfig(**values)
    if validate:
        cfg.validate(source)
    return cfg


def describe_config() -> str:
    """One line per field: name, type, default and help (for ``--help`` epilogues and docs)."""
    types_ = _field_types()
    lines = []
    for f in dataclasses.fields(TrainConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        lines.append(f"{f.name} ({_type_name(types_[f.name])}, default {default!r}): {f.metadata['help']}")
    return "\n".join(lines)
