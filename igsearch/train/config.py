"""The training configuration's schema: run-level fields plus sections owned by their modules.

Sections: ``retrieval`` (``igsearch.retrieval.config.RetrievalConfig``), ``generation``
(``igsearch.rollout.engine.EngineConfig``: the engine and vLLM's settings), ``rollout``
(``igsearch.rollout.agent.RolloutConfig``: the agent loop), ``advantage``
(``igsearch.algo.advantages.AdvantageConfig``: the method and the group normalisation), ``loss``
(``igsearch.algo.loss.LossConfig``) and ``scoring`` (``igsearch.scoring.config.ScoringConfig``: the
continuation scorer every method's step scorers use). A method registered with its own config class
(``register_advantage_estimator(name, config=cls)``: ``ig``, ``gigpo``, ``igpo``) has a section named after
it, held in ``cfg.methods`` and handed to its estimator by :meth:`TrainConfig.method_options`.

A field has one spelling: ``lr`` for a run-level field, ``ig.beta`` for a section's, in an override
(``ig.beta=0.3``) and in YAML dotted or nested (``ig: {beta: 0.3}``); ``cfg.lr`` and ``cfg.scoring.scorer``
in code, and ``cfg.method_options("gigpo").omega`` for a method's. Files written by older versions, with
their names, load through ``igsearch.train.config_legacy.migrate_legacy``.

Every field carries its documentation in ``metadata["help"]`` (shown by ``describe_config()`` and in
error messages). Presets live in ``configs/``:

- ``configs/tiny-cpu.yaml``: the embedded default (synthetic world, BM25, tiny Qwen2 policy, CPU).
- ``configs/qwen2.5-3b-gpu.yaml``: the Search-R1 / AutoRefine settings for Qwen2.5-3B on a GPU.

``load_config(path, overrides)`` reads a preset, applies ``key=value`` overrides typed by the field
(``lr=1e-6``, ``generation.vllm_enforce_eager=true``, ``ig.clip=none``; lists as ``1,2`` or ``[1, 2]``) and
validates the result; the loader is ``igsearch.config_fields.Schema``. Errors name the source and the field:
``configs/x.yaml: field 'lr': expected a float, got 'abc'``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

import igsearch.methods  # noqa: F401  (the built-in methods register their config sections)
from igsearch.algo.advantages import AdvantageConfig, estimator_config_classes
from igsearch.algo.loss import LossConfig
from igsearch.config_fields import ConfigError, Schema, config_field, settable_fields
from igsearch.io import atomic_write_text
from igsearch.precision import PRECISIONS
from igsearch.retrieval.config import RetrievalConfig
from igsearch.rollout.agent import RolloutConfig
from igsearch.rollout.engine import EngineConfig
from igsearch.scoring.config import ScoringConfig


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
    scoring: ScoringConfig = _section(ScoringConfig, "The continuation scorer of every method's step scorers, and "
                                                     "how a gold answer follows a context.")

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
        "help": "Method name -> its config section (built from the registry: see method_options).", "settable": False})

    # ------------------------------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        # a misspelt or old name (``cfg.ig_beta = 0.3``) would otherwise become a new attribute that nothing reads
        if name not in _FIELD_NAMES:
            from igsearch.train.config_legacy import legacy_name

            new = legacy_name(name)
            raise AttributeError(f"{type(self).__name__} has no field {name!r}" + (f"; it is {new}" if new else ""))
        object.__setattr__(self, name, value)

    def method_options(self, name: str | None = None) -> Any:
        """The config section of method ``name`` (default: the run's ``advantage.method``): its entry in
        ``methods``, or the registered class's defaults when absent; None for a method registered without one."""
        name = name or self.advantage.method
        cls = estimator_config_classes().get(name)
        return None if cls is None else self.methods.get(name) or cls()

    def advantage_config(self) -> AdvantageConfig:
        """The ``advantage`` section carrying the run's method options: what ``compute_advantages`` takes."""
        return self.advantage.with_options(self.method_options())

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every settable field, sections nested, the run's own method's section under its name
        (JSON / YAML serialisable), with ``config_version``. Other methods' sections are left out: a saved
        config must not depend on plug-ins that happened to be imported when it was written."""
        from igsearch.train.config_legacy import CONFIG_VERSION

        out: dict[str, Any] = {"config_version": CONFIG_VERSION}
        for f in settable_fields(TrainConfig):
            value = getattr(self, f.name)
            if f.name in _SECTIONS:
                value = {g.name: getattr(value, g.name) for g in settable_fields(type(value))}
            out[f.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
        options = self.methods.get(self.advantage.method)
        if options is not None:
            out[self.advantage.method] = dataclasses.asdict(options)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "TrainConfig":
        """A config from a dict such as ``to_dict()`` wrote (e.g. a checkpoint's config.json; an older
        version's names are migrated), with the same typing and error messages as ``load_config``; not
        validated."""
        values: dict[str, Any] = {}
        SCHEMA.read(values, source, SCHEMA.migrate(data, source))
        return SCHEMA.build(values)

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
        sections = {**{name: getattr(self, name) for name in _SECTIONS}, **self.methods}
        for name, section in sections.items():
            try:
                if hasattr(section, "validate"):
                    section.validate(source)
            except ConfigError as e:  # the section names its field; the run's spelling is dotted
                raise ConfigError(str(e).replace(f"{source}: field '", f"{source}: field '{name}.", 1)) from None
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
            raise bad("rollout.rollouts_per_question", "GRPO needs at least 2 rollouts per question")
        return self


#: section name -> its dataclass
_SECTIONS: dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(TrainConfig)
                              if f.metadata.get("section")}
_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(TrainConfig))
#: run-level fields (the ``methods`` holder is filled from the method sections, not set by name)
_RUN_FIELDS = [f for f in settable_fields(TrainConfig) if f.name not in _SECTIONS]


def _method_sections() -> dict[str, type]:
    """Method name -> config class of the registered methods that have one (read at each call: a plug-in
    registers when its module is imported). A method may not take the name of a field or section."""
    taken = _FIELD_NAMES
    return {name: cls for name, cls in estimator_config_classes().items() if name not in taken}


def _all_values(cfg: TrainConfig):
    """(name, value) of every run-level, section and method-section field."""
    for f in _RUN_FIELDS:
        yield f.name, getattr(cfg, f.name)
    for section in _SECTIONS:
        yield from ((f"{section}.{g.name}", getattr(getattr(cfg, section), g.name))
                    for g in settable_fields(_SECTIONS[section]))
    for method, options in cfg.methods.items():
        yield from ((f"{method}.{g.name}", getattr(options, g.name)) for g in dataclasses.fields(options))


def _schema() -> Schema:
    from igsearch.train.config_legacy import legacy_name, migrate_legacy

    return Schema(TrainConfig, holder="methods", extra_sections=_method_sections, hint=legacy_name,
                  migrate=migrate_legacy)


SCHEMA = _schema()


def config_fields() -> dict[str, dataclasses.Field]:
    """Spelling -> dataclass Field of every settable field (run-level by name, section fields as
    ``section.field``)."""
    return SCHEMA.fields()


def load_config(path: str | Path | None = None, overrides: Iterable[str] = (), *, validate: bool = True) -> TrainConfig:
    """TrainConfig from the YAML preset ``path`` (None = the defaults; ``base: other.yaml`` in it loads that one
    first), then ``key=value`` overrides, typed by the field and validated. Errors are ConfigError naming
    the file (or the override) and the field."""
    cfg = SCHEMA.load(path, overrides)
    if validate:
        cfg.validate(str(path) if path is not None else "defaults")
    return cfg


def describe_config() -> str:
    """One line per field: spelling, type, default and help (for ``--help`` epilogues and docs)."""
    return SCHEMA.describe()
