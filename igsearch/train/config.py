"""The training configuration: run-level fields plus sections owned by their modules, YAML presets
and ``key=value`` overrides.

Sections: ``retrieval`` (``igsearch.retrieval.config.RetrievalConfig``), ``generation``
(``igsearch.rollout.engine.EngineConfig``: the engine and vLLM's settings), ``rollout``
(``igsearch.rollout.agent.RolloutConfig``: the agent loop), ``advantage``
(``igsearch.algo.advantages.AdvantageConfig``: the method and the group normalisation), ``loss``
(``igsearch.algo.loss.LossConfig``) and ``ig`` (``igsearch.ig.config.IGConfig``: IG-Search's knobs and
how IG is scored). Each section declares, documents and validates its own fields; ``TrainConfig``
holds the run-level ones. A field has one name: ``ig.ig_beta`` in an override (``ig.ig_beta=0.3``), nested
under its section in YAML, ``cfg.ig.ig_beta`` in code. Section fields have unique names, so input written
before the sections existed, flat (``ig_beta=0.3``, ``method=grpo``), still loads as that field; what
igsearch writes and shows is always the section's name.

Method sections: a method registered with its own config class
(``register_advantage_estimator(name, config=cls)``, e.g. ``gigpo``, ``igpo``) has a section named
after it, dotted only (``gigpo.omega=0.8``; YAML ``gigpo: {omega: 0.8}``), held in ``cfg.methods`` and
handed to its estimator by :meth:`TrainConfig.method_options`. Names of older versions (``gigpo_omega``,
``advantage.ig_beta``, ...) still load: :data:`RENAMED_FIELDS`.

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

import igsearch.methods  # noqa: F401  (the built-in methods register their config sections)
from igsearch.algo.advantages import AdvantageConfig, estimator_config_classes
from igsearch.algo.loss import LossConfig
from igsearch.config_fields import ConfigError, config_field
from igsearch.ig.config import IGConfig
from igsearch.retrieval.config import RetrievalConfig
from igsearch.rollout.agent import RolloutConfig
from igsearch.rollout.engine import EngineConfig
from igsearch.io import atomic_write_text
from igsearch.precision import PRECISIONS

#: fields older versions wrote into checkpoints' config.json, skipped when such a config is read back
REMOVED_FIELDS = frozenset({"tokenizer_path"})  # the tokenizer is always the model directory's
#: names of older versions -> today's, so their presets, overrides and checkpoints' config.json still load
_MOVED_METHOD_KNOBS = {"gigpo_omega": "gigpo.omega", "gigpo_gamma": "gigpo.gamma", "igpo_gamma": "igpo.gamma"}
RENAMED_FIELDS = {
    **_MOVED_METHOD_KNOBS,
    **{f"advantage.{old}": new for old, new in _MOVED_METHOD_KNOBS.items()},
    **{f"advantage.{name}": f"ig.{name}" for name in ("ig_beta", "ig_norm", "ig_clip", "span_weight")},
}


_f = config_field


def _section(cls: type, help: str) -> Any:
    return field(default_factory=cls, metadata={"help": help, "section": True})


#: the choices of TrainConfig.optimizer (built by igsearch.train.trainer.build_optimizer)
OPTIMIZERS = ("adamw", "sgd")


@dataclass
class TrainConfig:
    """Everything a GRPO / IG-Search training run needs, with the embedded CPU default as defaults."""

    # ---------------------------------------------------------------- model
    model_path: str | None = _f(
        None,
        "HF model directory (or hub id) of the policy to train, e.g. the SFT warm start. "
        "Required; the GPU preset leaves it unset on purpose.",
    )
    dtype: str = _f("float32", "Parameter dtype of the trained policy (its master weights and optimizer state): "
                               "float32 | bfloat16 | float16.")
    precision: str = _f(
        "auto",
        "Compute precision of every phase (igsearch.precision): auto (bf16 where the hardware multiplies it "
        "natively: AMX or AVX-512-BF16 on the CPU, a GPU with bf16; else fp32) | fp32 | bf16. bf16 runs the rollout "
        "engine with bf16 weights and the policy forwards, the IG scorers and the update under bf16 autocast, "
        "with fp32 master weights, optimizer state, log-softmax and loss. The run folder's precision.json says "
        "what was chosen and why.")
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
    max_prompt_tokens: int = _f(512, "Training questions whose chat prompt is longer than this many tokens are refused when the trainer "
                                 "starts (the question named); also sizes the vLLM context with max_response_tokens.")

    # ---------------------------------------------------------------- rollouts
    steps: int = _f(100, "Number of policy updates (training steps).")
    questions_per_step: int = _f(8, "Questions sampled per training step.")
    format_penalty: float = _f(0.0, "Subtracted from the reward of a malformed rollout or one without an answer.")

    # ---------------------------------------------------------------- optimisation
    optimizer: str = _f("adamw", "Policy optimizer: adamw | sgd (plain SGD with sgd_momentum; its step follows the "
                                 "gradient's size, where AdamW gives every parameter an lr-sized step).")
    lr: float = _f(1e-4, "Learning rate of the optimizer.")
    sgd_momentum: float = _f(0.0, "SGD momentum (optimizer=sgd).")
    weight_decay: float = _f(0.0, "Weight decay (decoupled for adamw, L2 for sgd).")
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
        8192, "Token budget of one policy forward: a packed row with flash-attn (GPU); on SDPA (the CPU) every "
              "sequence is a row of its own (igsearch.policy.packing) and this bounds the SFT replay's padded "
              "micro-batches.")

    # ---------------------------------------------------------------- sections owned by their modules
    retrieval: RetrievalConfig = _section(RetrievalConfig, "Where the passages come from.")
    generation: EngineConfig = _section(EngineConfig, "Which engine generates the rollouts, and vLLM's settings.")
    rollout: RolloutConfig = _section(RolloutConfig, "The agent loop: group size, turns, lengths, sampling, topk.")
    advantage: AdvantageConfig = _section(AdvantageConfig, "The method (advantage estimator) and its knobs.")
    loss: LossConfig = _section(LossConfig, "PPO clip, KL penalty and loss aggregation.")
    ig: IGConfig = _section(IGConfig, "How step information gain is scored (docs/DESIGN.md section 3).")

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
    threads: str = _f("auto", "Torch CPU threads: auto (as many as the cores other processes leave free, chosen before "
                              "every step's generation and update, igsearch.threads) | N (fixed: the way to reproduce "
                              "a run's floats bit for bit).")

    # ---------------------------------------------------------------- the methods' own sections
    methods: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "Method name -> its config section (built from the registry: see method_options).", "methods": True})

    # ------------------------------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        # a misspelt or flat name (``cfg.ig_beta = 0.3``) would otherwise become a new attribute that nothing reads
        if name not in _FIELD_NAMES:
            where = f"; it is {_ALIASES[name]}.{name}" if name in _ALIASES else ""
            raise AttributeError(f"{type(self).__name__} has no field {name!r}{where}")
        object.__setattr__(self, name, value)

    def method_options(self, name: str | None = None) -> Any:
        """The config section of method ``name`` (default: the run's ``method``): a fixed section when its
        class is one (IG-Search's is ``ig``), else its entry in ``methods`` (the registered class's
        defaults when absent); None for a method registered without one."""
        cls = estimator_config_classes().get(name or self.advantage.method)
        if cls is None:
            return None
        for section, section_cls in _SECTIONS.items():
            if section_cls is cls:
                return getattr(self, section)
        return self.methods.get(name or self.advantage.method) or cls()

    def advantage_config(self) -> AdvantageConfig:
        """The ``advantage`` section carrying the run's method options: what ``compute_advantages`` takes."""
        return self.advantage.with_options(self.method_options())

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field, sections nested (JSON / YAML serialisable). Of the method sections
        only the run's own method's is kept: a saved config must not depend on other plug-ins that
        happened to be imported when it was written."""
        out = dataclasses.asdict(self)
        out["methods"] = {name: options for name, options in out["methods"].items() if name == self.advantage.method}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "TrainConfig":
        """A config from a dict such as ``to_dict()`` wrote (e.g. a checkpoint's config.json), with the
        same typing and error messages as ``load_config``; not validated."""
        values: dict[str, Any] = {}
        _set_fields(values, source, data)
        return _build(values)

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
        for name, value in _all_values(self):  # inf / nan pass every range check below and poison the run later
            if isinstance(value, float) and not math.isfinite(value):
                raise bad(name, f"must be a finite number, got {value}")
        for name in _SECTIONS:
            getattr(self, name).validate(source)
        for options in self.methods.values():
            if hasattr(options, "validate"):
                options.validate(source)
        for name in ("steps", "questions_per_step", "ppo_epochs",
                     "mini_batches", "max_tokens_per_forward", "checkpoint_every", "keep_checkpoints",
                     "log_every", "sft_replay_batch"):
            if getattr(self, name) < 1:
                raise bad(name, f"must be >= 1, got {getattr(self, name)}")
        for name in ("lr",):
            if not getattr(self, name) > 0:
                raise bad(name, f"must be > 0, got {getattr(self, name)}")
        for name in ("weight_decay", "format_penalty", "sft_replay_coef", "eval_every", "eval_questions",
                     "probe_questions", "warmup_steps"):
            if getattr(self, name) < 0:
                raise bad(name, f"must be >= 0, got {getattr(self, name)}")
        from igsearch.threads import parse_threads

        try:
            parse_threads(self.threads)
        except ValueError as e:
            why = str(e).split(": ", 1)[1] if str(e).startswith("threads: ") else str(e)  # or the env var's
            raise bad("threads", why) from None
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise bad("device", f"expected auto, cpu, cuda or cuda:N, got {self.device!r}")
        # each choice list lives with the code that acts on it
        from igsearch.data.prompts import TEMPLATES

        choices = {
            "dtype": ("float32", "bfloat16", "float16"),
            "precision": PRECISIONS,
            "attn_implementation": ("auto", "sdpa", "flash_attention_2", "eager"),
            "template": tuple(TEMPLATES),
            "optimizer": OPTIMIZERS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise bad(name, f"expected one of {list(allowed)}, got {getattr(self, name)!r}")
        if not 0 <= self.sgd_momentum < 1:
            raise bad("sgd_momentum", f"must be in [0, 1), got {self.sgd_momentum}")
        if self.rollout.rollouts_per_question < 2:
            raise bad("rollouts_per_question", "GRPO needs at least 2 rollouts per question")
        return self


#: section name -> its dataclass
_SECTIONS: dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(TrainConfig)
                              if f.metadata.get("section")}
_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(TrainConfig))
#: section field name -> section name (a flat name, as input written before the sections used it)
_ALIASES: dict[str, str] = {f.name: section for section, cls in _SECTIONS.items() for f in dataclasses.fields(cls)}
assert not set(_ALIASES) & {f.name for f in dataclasses.fields(TrainConfig)}, "a section field shadows a run field"
#: run-level fields (the ``methods`` holder is filled from the method sections, not set by name)
_RUN_FIELDS = [f for f in dataclasses.fields(TrainConfig) if f.name not in _SECTIONS and not f.metadata.get("methods")]


def _method_sections() -> dict[str, type]:
    """Method name -> config class, for the registered methods whose class is not a fixed section (read
    at each call: a plug-in registers when its module is imported)."""
    fixed = set(_SECTIONS.values())
    return {name: cls for name, cls in estimator_config_classes().items()
            if cls not in fixed and name not in _SECTIONS and name not in {f.name for f in _RUN_FIELDS}}


def _all_values(cfg: TrainConfig):
    """(name, value) of every run-level, section and method-section field."""
    for f in _RUN_FIELDS:
        yield f.name, getattr(cfg, f.name)
    for section in _SECTIONS:
        yield from ((g.name, getattr(getattr(cfg, section), g.name)) for g in dataclasses.fields(_SECTIONS[section]))
    for method, options in cfg.methods.items():
        yield from ((f"{method}.{g.name}", getattr(options, g.name)) for g in dataclasses.fields(options))


# ------------------------------------------------------------------------------------------------
# Loading, typed coercion and error messages


_TRUE = {"true", "yes", "on", "1", "y"}
_FALSE = {"false", "no", "off", "0", "n"}
_NONE = {"none", "null", "~", ""}


def config_fields() -> dict[str, dataclasses.Field]:
    """Name -> dataclass Field of every settable field: run-level ones by name, section fields as
    ``section.field`` (their flat names are aliases)."""
    out = {}
    for f in dataclasses.fields(TrainConfig):
        if f.name in _SECTIONS:
            out.update({f"{f.name}.{g.name}": g for g in dataclasses.fields(_SECTIONS[f.name])})
        elif not f.metadata.get("methods"):
            out[f.name] = f
    for method, cls in _method_sections().items():
        out.update({f"{method}.{g.name}": g for g in dataclasses.fields(cls)})
    return out


def _field_types() -> dict[str, Any]:
    """``config_fields()`` name -> type."""
    hints = typing.get_type_hints(TrainConfig)
    types_ = {f.name: hints[f.name] for f in _RUN_FIELDS}
    for section, cls in {**_SECTIONS, **_method_sections()}.items():
        types_.update({f"{section}.{k}": v for k, v in typing.get_type_hints(cls).items()})
    return types_


def _canonical(name: str) -> str:
    """The ``config_fields()`` name of ``name`` (a run field, a flat section alias, ``section.field`` or a
    name of an older version)."""
    name = RENAMED_FIELDS.get(name, name)
    return f"{_ALIASES[name]}.{name}" if name in _ALIASES else name


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
    known = list(config_fields()) + list(_ALIASES)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else (
        "; see `describe_config()` or configs/tiny-cpu.yaml for the known fields"
    )
    return ConfigError(f"{source}: unknown field {name!r}{hint}")


def _set_field(values: dict[str, Any], source: str, name: str, raw: Any) -> None:
    """Type ``raw`` for field ``name`` (run-level, flat alias or ``section.field``) into ``values``
    (run-level names, and ``section.field`` keys)."""
    types_ = _field_types()
    key = _canonical(name)
    if key not in types_:
        raise _unknown_field_error(source, name)
    try:
        values[key] = coerce_value(raw, types_[key])
    except _Mismatch:
        raise ConfigError(
            f"{source}: field {name!r}: expected {_type_name(types_[key])}, got {raw!r}"
        ) from None


def _set_fields(values: dict[str, Any], source: str, data: dict) -> None:
    """All fields of a mapping (a YAML file, a saved config): flat, dotted, or nested under a section."""
    for name, raw in data.items():
        name = str(name)
        if name in REMOVED_FIELDS:  # e.g. the config of a run made by an older version
            print(f"{source}: field {name!r} is no longer used and is ignored", file=sys.stderr)
            continue
        sections = {**_SECTIONS, **_method_sections()}
        if name in sections and isinstance(raw, dict):
            for sub, sub_raw in raw.items():
                dotted = f"{name}.{sub}"
                if str(sub) not in {f.name for f in dataclasses.fields(sections[name])} and dotted not in RENAMED_FIELDS:
                    raise _unknown_field_error(source, dotted)
                _set_field(values, source, dotted, sub_raw)
        elif name == "methods" and isinstance(raw, dict):  # as to_dict() writes the run's method section
            for method, options in raw.items():
                if str(method) not in _method_sections():
                    raise ConfigError(f"{source}: field 'methods.{method}': the settings of method {str(method)!r}, "
                                      "which is not registered (import its module first: igsearch train --plugin "
                                      "MODULE)")
                _set_fields(values, source, {str(method): options})
        else:
            _set_field(values, source, name, raw)


def _build(values: dict[str, Any]) -> TrainConfig:
    """A TrainConfig from ``_set_field`` values (missing fields keep their defaults)."""
    top = {k: v for k, v in values.items() if "." not in k}

    def section_of(name: str, cls: type) -> Any:
        prefix = name + "."
        return cls(**{k[len(prefix):]: v for k, v in values.items() if k.startswith(prefix)})

    for section, cls in _SECTIONS.items():
        top[section] = section_of(section, cls)
    top["methods"] = {method: section_of(method, cls) for method, cls in _method_sections().items()}
    return TrainConfig(**top)


def parse_override(text: str) -> tuple[str, str]:
    """``"key=value"`` -> (key, value); the key may use dashes for underscores."""
    key, sep, value = text.partition("=")
    key = key.strip().lstrip("-").replace("-", "_")
    if not sep or not key:
        raise ConfigError(f"override {text!r}: expected key=value, e.g. lr=1e-6")
    return key, value.strip()


def _load_preset(path: Path, values: dict[str, Any], chain: list[Path]) -> None:
    """The fields of the YAML preset ``path`` into ``values``, after those of its ``base:`` preset (a path
    relative to it), so a preset states only what it changes."""
    source = str(path)
    if not path.is_file():
        raise ConfigError(f"{source}: config file not found" + (f" (the base of {chain[-1]})" if chain else ""))
    if path.resolve() in chain or len(chain) > 8:
        raise ConfigError(f"{source}: presets name each other as base in a cycle: "
                          + " -> ".join(str(p) for p in [*chain, path]))
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
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
    base = data.pop("base", None)
    if base is not None:
        if not isinstance(base, str) or not base.strip():
            raise ConfigError(f"{source}: field 'base': expected the path of another preset, got {base!r}")
        _load_preset(path.parent / base, values, [*chain, path.resolve()])
    _set_fields(values, source, data)


def load_config(
    path: str | Path | None = None, overrides: typing.Iterable[str] = (), *, validate: bool = True
) -> TrainConfig:
    """TrainConfig from the YAML file ``path`` (None = the defaults), then ``key=value`` overrides.
    A preset may start from another: ``base: tiny-cpu.yaml`` (relative to it) loads that one first.

    Values are typed by the field (int / float / bool / str / list / optional). Errors are
    ConfigError naming the file (or the override) and the field.
    """
    values: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        _load_preset(Path(path), values, [])
    for text in overrides:
        key, raw = parse_override(text)
        _set_field(values, f"override {text!r}", key, raw)
    cfg = _build(values)
    if validate:
        cfg.validate(source)
    return cfg


def describe_config() -> str:
    """One line per field: name, type, default and help (for ``--help`` epilogues and docs); section
    fields as ``section.field``, which may also be given by their flat name."""
    types_ = _field_types()
    lines = []
    for name, f in config_fields().items():
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        lines.append(f"{name} ({_type_name(types_[name])}, default {default!r}): {f.metadata['help']}")
    return "\n".join(lines)
