"""Argument parsing of ``igsearch sft`` and ``igsearch train`` (wired into ``igsearch.cli``).

Each ``add_*_command(subparsers)`` adds a subcommand whose ``func(args) -> int`` runs it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _hops(text: str) -> tuple[int, ...]:
    try:
        hops = tuple(int(h) for h in text.split(",") if h.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected hop counts like 1,2,3, got {text!r}") from None
    if not hops or any(h < 1 for h in hops):
        raise argparse.ArgumentTypeError(f"expected hop counts like 1,2,3, got {text!r}")
    return hops


def _probability(text: str) -> float:
    try:
        p = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1], got {text!r}") from None
    if not 0.0 <= p <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1], got {text!r}")
    return p


def add_sft_command(subparsers) -> argparse.ArgumentParser:
    """``igsearch sft --model DIR|tiny --world DIR --out DIR [--steps N] [--query-noise P] [--hops 1,2] ...``"""
    p = subparsers.add_parser(
        "sft",
        help="warm-start the policy on oracle trajectories of the world",
        description="Supervised warm start on oracle search trajectories (search the right entity, "
        "refine the right fact, answer). Injected documents are trained on only with --document-weight > 0.",
    )
    p.add_argument("--model", required=True,
                   help="HF policy directory to fine-tune, or 'tiny' to build the tiny default policy for the world first")
    p.add_argument("--world", required=True, help="world directory (corpus.jsonl, train.jsonl)")
    p.add_argument("--out", required=True, help="output HF directory (written atomically)")
    p.add_argument("--steps", type=int, default=300, help="optimizer steps (default 300)")
    p.add_argument("--batch-size", type=int, default=16, help="trajectories per step (default 16)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate, cosine decay (default 1e-3)")
    p.add_argument("--warmup-steps", type=int, default=10, help="linear warm-up steps (default 10)")
    p.add_argument("--query-noise", type=_probability, default=0.2,
                   help="probability that a hop's query is corrupted (default 0.2)")
    p.add_argument("--early-answer", type=_probability, default=0.0,
                   help="probability that the demonstrator answers the bridge entity after a non-final hop (default 0)")
    p.add_argument("--document-weight", type=float, default=0.0,
                   help="loss weight of the injected documents' tokens (default 0: policy tokens only)")
    p.add_argument("--hops", type=_hops, default=(1, 2, 3), help="hop counts of the questions seen, e.g. 1,2 (default 1,2,3)")
    p.add_argument("--max-len", type=int, default=1024, help="max tokens per trajectory (default 1024)")
    p.add_argument("--template", default="refine", choices=["refine", "search-r1"], help="prompt template")
    p.add_argument("--topk", type=int, default=3, help="passages per search (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="compute precision (igsearch.precision): auto = bf16 where the hardware multiplies it natively")
    p.add_argument("--threads", default=None, help="torch CPU threads: auto (from the load, igsearch.threads) | N; "
                                                   "default: IGSEARCH_THREADS, else auto")
    p.add_argument("--checkpoint-every", type=int, default=None,
                   help="steps between checkpoints in OUT.partial/, from which the same command resumes a killed run "
                        "(default 100; 0: none)")
    p.set_defaults(func=run_sft_command)
    return p


def run_sft_command(args) -> int:
    from igsearch.train.sft import SFT_CHECKPOINT_EVERY, run_sft

    model = Path(args.model)
    if args.model == "tiny":
        from igsearch.policy.tiny import DEFAULT_POLICY_SIZE, build_tiny_policy, policy_shape

        model = Path(args.out).with_name(Path(args.out).name + "-init")
        print(f"building the tiny default policy ({DEFAULT_POLICY_SIZE}) for {args.world} in {model}",
              file=sys.stderr)
        build_tiny_policy(args.world, model, seed=args.seed, **policy_shape(DEFAULT_POLICY_SIZE))
    out = run_sft(
        model, args.world, args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
        query_noise=args.query_noise, early_answer=args.early_answer, document_weight=args.document_weight,
        hops=args.hops, max_len=args.max_len, seed=args.seed,
        template=args.template, topk=args.topk, warmup_steps=args.warmup_steps, device=args.device,
        progress=not args.no_progress, threads=args.threads, precision=args.precision,
        checkpoint_every=SFT_CHECKPOINT_EVERY if args.checkpoint_every is None else args.checkpoint_every,
    )
    print(out)
    return 0


def add_train_command(subparsers) -> argparse.ArgumentParser:
    """``igsearch train --config FILE [--method NAME] [--plugin MODULE] [--steps N] [--out DIR] [--resume DIR] [key=value ...]``"""
    from igsearch.train.config import describe_config

    p = subparsers.add_parser(
        "train",
        help="GRPO-family training: grpo, rloo, gigpo, igpo or ig (IG-Search)",
        description="GRPO-family RL on vLLM rollouts; method ig adds step information gain to the query tokens.",
        epilog="Any config field can be overridden as key=value. Fields:\n" + describe_config(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", default=None, help="YAML preset, e.g. configs/tiny-cpu.yaml (default: built-in defaults)")
    p.add_argument("--method", default=None,
                   help="advantage estimator: ig | grpo | rloo | gigpo | igpo | a registered name (overrides the config)")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="import this Python module (dotted name, importable from the current directory) before "
                        "training, so that the methods it registers can be named; repeatable")
    p.add_argument("--steps", type=int, default=None, help="training steps (overrides the config)")
    p.add_argument("--out", default=None, help="run directory (default runs/<config name>-<method>)")
    p.add_argument("--resume", default=None, help="run or checkpoint directory to continue from")
    p.add_argument("--overwrite", action="store_true",
                   help="start again from step 0 in an output directory that holds a run (its checkpoints, "
                        "metrics and evaluations are removed)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. lr=1e-6 ig.beta=0.3")
    p.set_defaults(func=run_train_command)
    return p


def parse_train_args(args) -> tuple:
    """(TrainConfig, out_dir, resume) from parsed ``igsearch train`` arguments; ConfigError on bad input."""
    from igsearch.train.config import ConfigError, load_config

    overrides = list(args.overrides)
    if args.method is not None:
        overrides.append(f"advantage.method={args.method}")
    if args.steps is not None:
        overrides.append(f"steps={args.steps}")
    resume = Path(args.resume) if args.resume else None
    config_path = args.config
    if config_path is None and resume is not None:
        # resuming without --config: the run's own saved config
        run_dir = resume.parent.parent if resume.parent.name == "checkpoints" else resume
        saved = run_dir / "config.yaml"
        if not saved.is_file():
            raise ConfigError(f"{run_dir}: no config.yaml to resume with; pass --config FILE")
        config_path = str(saved)
    for module in getattr(args, "plugin", []):
        import importlib
        import os

        if os.getcwd() not in sys.path:  # the console script's sys.path does not hold the current directory
            sys.path.insert(0, os.getcwd())
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ConfigError(f"--plugin {module}: cannot import it ({e}); give a dotted module name importable "
                              "from the current directory, e.g. my_methods.novelty") from None
    cfg = load_config(config_path, overrides)
    # a resumed run keeps its own saved settings; a new one takes the model folder's over a preset's
    trained_overrides = trained_setting_overrides(cfg, overrides) if resume is None else []
    if trained_overrides:
        cfg = load_config(config_path, [*trained_overrides, *overrides])
    if args.out is not None:
        out = Path(args.out)
    elif resume is not None:
        # a run directory continues in place; a checkpoint directory continues in its run
        out = resume.parent.parent if resume.parent.name == "checkpoints" else resume
    else:
        name = Path(args.config).stem if args.config else "default"
        out = Path("runs") / f"{name}-{cfg.advantage.method}"
    return cfg, out, resume


def trained_setting_overrides(cfg, overrides: list[str], announce=print) -> list[str]:
    """``key=value`` for each rollout setting the model folder was trained under (its rollout_settings.json)
    that the config file sets otherwise and no override names: a preset's ``topk: 3`` must not silently
    break a policy trained with 2 passages. Each is announced; an override that differs is too."""
    from igsearch.config_fields import ConfigError
    from igsearch.rollout.trained import TrainedSettingsError, read_rollout_settings

    if not cfg.model_path:
        return []
    try:
        trained = read_rollout_settings(cfg.model_path)
    except TrainedSettingsError as e:
        raise ConfigError(str(e)) from None
    named = {o.partition("=")[0].strip().rpartition(".")[2] for o in overrides}
    current = {"template": cfg.template, **{k: getattr(cfg.rollout, k) for k in trained if k != "template"}}
    out = []
    for key, value in trained.items():
        spelt = key if key == "template" else f"rollout.{key}"  # the template is run-level, the rest the agent loop's
        if key in named:
            if current[key] != value:
                announce(f"igsearch train: {spelt}={current[key]} overrides the value {cfg.model_path} was trained with "
                         f"({value})")
        elif current[key] != value:
            announce(f"igsearch train: {spelt}={value}, as {cfg.model_path} was trained (the config says {current[key]})")
            out.append(f"{spelt}={value}")
    return out


def run_train_command(args) -> int:
    from igsearch.train.config import ConfigError

    try:
        cfg, out, resume = parse_train_args(args)
    except ConfigError as e:
        print(f"igsearch train: {e}", file=sys.stderr)
        return 2
    from igsearch.train import trainer  # imported lazily (pulls in vLLM)
    from igsearch.train.checkpoint import CheckpointError

    try:
        trainer.train(cfg, out, resume=resume, overwrite=getattr(args, "overwrite", False))
    except (trainer.TrainingError, CheckpointError) as e:
        print(f"igsearch train: {e}", file=sys.stderr)
        return 2
    return 0
