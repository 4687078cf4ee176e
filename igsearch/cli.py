"""The ``igsearch`` command line.

    igsearch world build --seed S --out DIR [--entities N]
    igsearch retrieval serve --corpus FILE --port P [--retriever bm25|dense] [--index DIR]
    igsearch policy build --world DIR --out DIR
    igsearch eval --model DIR --data FILE [--retriever bm25|dense|URL] [--corpus FILE]
    igsearch sft --model DIR --world DIR --out DIR
    igsearch train --config FILE [--method NAME] [--plugin MODULE] [--steps N] [--out DIR] [--resume DIR] [key=value ...]
    igsearch demo [--out DIR] [--steps N] [--seed S]

Every subcommand returns an exit code; expected failures (bad input, missing files, a dead
retrieval server) print one clear line instead of a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

#: libgomp spin count before an idle OpenMP thread sleeps. Measured (bench/thread_contention.py,
#: 2 threads on 2 cores, SFT step of the tiny policy): the default (300,000) is x3.1-4.1 slower beside
#: one busy process; 1,000 is as fast alone and x1.9-2.0 beside it; OMP_WAIT_POLICY=PASSIVE is x1.6
#: beside it but 14-19% slower alone.
GOMP_SPINCOUNT = "1000"


def set_openmp_wait_policy(environ=os.environ) -> bool:
    """Set ``GOMP_SPINCOUNT`` for this process and the engines it starts, unless the user chose a wait
    policy or torch (hence OpenMP) is already loaded, when it would have no effect. True if set."""
    if "OMP_WAIT_POLICY" in environ or "GOMP_SPINCOUNT" in environ or "torch" in sys.modules:
        return False
    environ["GOMP_SPINCOUNT"] = GOMP_SPINCOUNT
    return True


class CLIError(RuntimeError):
    """An expected failure with a message meant for the user."""


def _add_policy_commands(subparsers) -> None:
    from igsearch.policy.tiny import POLICY_SIZES

    p = subparsers.add_parser("policy", help="build the tiny default policy")
    sub = p.add_subparsers(dest="policy_cmd", required=True)
    b = sub.add_parser("build", help="train a tokenizer on a world's text and build a random tiny Qwen2 policy")
    b.add_argument("--world", required=True, help="world directory (from `igsearch world build`)")
    b.add_argument("--out", required=True, help="output HF model directory")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--vocab-size", type=int, default=3072)
    b.add_argument("--size", default=None, choices=list(POLICY_SIZES),
                   help="policy size (default: the warm start's, WarmStartConfig.policy_size)")
    b.set_defaults(func=_run_policy_build)


def _run_policy_build(args) -> int:
    from igsearch.policy.tiny import build_tiny_policy, policy_shape
    from igsearch.warmstart import WarmStartConfig

    world = Path(args.world)
    if not (world / "corpus.jsonl").exists():
        raise CLIError(f"{world} is not a world directory (no corpus.jsonl); run `igsearch world build` first")
    shape = policy_shape(args.size or WarmStartConfig.policy_size)
    out = build_tiny_policy(world, args.out, seed=args.seed, vocab_size=args.vocab_size, **shape)
    print(f"tiny policy written to {out}")
    return 0


def _add_eval_command(subparsers) -> None:
    p = subparsers.add_parser("eval", help="EM/F1 of a search agent on a QA file, per data_source")
    p.add_argument("--model", required=True, help="local HF model directory")
    p.add_argument("--data", required=True, help="QA rows (.jsonl or .parquet, Search-R1 or FlashRAG format)")
    p.add_argument("--retriever", default="bm25", help="bm25 | dense | http(s)://host:port/retrieve")
    p.add_argument("--corpus", default=None, help="corpus.jsonl (default: next to --data)")
    p.add_argument("--index", default=None, help="index directory (default: next to the corpus)")
    p.add_argument("--encoder", default=None, help="local HF encoder directory for --retriever dense")
    p.add_argument("--engine", default="vllm", choices=["vllm", "hf"], help="generation engine")
    # rollout settings: default to those the model folder was trained under (its rollout_settings.json), else
    # to EVAL_DEFAULTS; a value given here that differs from the trained one is announced
    p.add_argument("--template", default=None, choices=["refine", "search-r1"], help="default: trained, else refine")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N rows")
    p.add_argument("--topk", type=int, default=None, help="passages per search (default: trained, else 3)")
    p.add_argument("--max-turns", type=int, default=None, help="default: trained, else 4")
    p.add_argument("--max-new-tokens", type=int, default=None, help="per turn (default: trained, else 160)")
    p.add_argument("--max-response-tokens", type=int, default=None, help="default: trained, else 1536")
    p.add_argument("--max-doc-tokens", type=int, default=None,
                   help="cut injected documents to this many tokens (0 = no cut; default: trained, else 0)")
    p.add_argument("--out", default=None, help="run directory for eval.json (default runs/eval-<model name>)")
    p.add_argument("--dtype", default="float32")
    p.set_defaults(func=_run_eval)


#: ``igsearch eval``'s rollout settings for a model folder that does not say what it was trained under
EVAL_DEFAULTS = {"template": "refine", "topk": 3, "max_turns": 4, "max_new_tokens_per_turn": 160,
                 "max_response_tokens": 1536, "max_doc_tokens": 0}


def _run_eval(args) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from igsearch.data.loaders import load_qa
    from igsearch.data.prompts import get_template
    from igsearch.evaluation import evaluate, format_table
    from igsearch.policy.load import check_model_dir, load_tokenizer
    from igsearch.retrieval import load_retriever
    from igsearch.rollout.agent import RolloutConfig
    from igsearch.rollout.engine import build_engine
    from igsearch.rollout.trained import TrainedSettingsError, read_rollout_settings, resolve_settings
    from igsearch.io import atomic_write_json

    model_dir = check_model_dir(args.model)
    rows = load_qa(args.data, limit=args.limit)
    corpus = args.corpus or str(Path(args.data).parent / "corpus.jsonl")
    if not args.retriever.startswith("http") and not Path(corpus).exists():
        raise CLIError(f"corpus {corpus} not found; pass --corpus FILE")
    retriever = load_retriever(args.retriever, corpus=corpus, index=args.index, encoder=args.encoder)
    tokenizer = load_tokenizer(model_dir)
    try:
        trained = read_rollout_settings(model_dir)
    except TrainedSettingsError as e:
        raise CLIError(str(e)) from None
    given = {"template": args.template, "topk": args.topk, "max_turns": args.max_turns,
             "max_new_tokens_per_turn": args.max_new_tokens, "max_response_tokens": args.max_response_tokens,
             "max_doc_tokens": args.max_doc_tokens}
    settings = resolve_settings(trained, given, EVAL_DEFAULTS, announce=lambda m: print(f"igsearch eval: {m}"))
    template = settings.pop("template")
    print("igsearch eval: rollout settings " + ", ".join(f"{k}={v}" for k, v in settings.items())
          + f", template={template} ({'as trained' if trained else 'the model folder names none: defaults'})")
    config = RolloutConfig(**settings)
    engine = build_engine(args.engine, model_dir, dtype=args.dtype)
    console = Console()
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(f"eval {Path(args.data).name}", total=len(rows))
        result = evaluate(engine, retriever, tokenizer, rows, template=get_template(template), config=config,
                          progress=lambda done, total: bar.update(task, completed=done))
    out = Path(args.out or f"runs/eval-{model_dir.name}")
    path = atomic_write_json(out / "eval.json", {"model": str(model_dir), "data": str(args.data),
                                                 "rollout": {**settings, "template": template}, **result.to_dict()})
    console.print(format_table(result.metrics, f"{model_dir.name} on {Path(args.data).name} ({result.seconds:.0f} s)"))
    console.print(f"results: {path}")
    if hasattr(engine, "close"):
        engine.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    from igsearch.retrieval.cli import add_retrieval_commands
    from igsearch.train.cli import add_sft_command, add_train_command
    from igsearch.world.cli import add_world_commands

    parser = argparse.ArgumentParser(prog="igsearch", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add_world_commands(sub)
    add_retrieval_commands(sub)
    _add_policy_commands(sub)
    _add_eval_command(sub)
    add_sft_command(sub)
    add_train_command(sub)
    try:
        from igsearch.demo import add_demo_command
    except ImportError:
        pass
    else:
        add_demo_command(sub)
    return parser


def main(argv=None) -> int:
    set_openmp_wait_policy()  # before anything imports torch
    from igsearch.data.loaders import DataError
    from igsearch.policy.load import PolicyLoadError
    from igsearch.retrieval.client import RetrievalError

    args = build_parser().parse_args(argv)
    expected = (CLIError, DataError, PolicyLoadError, RetrievalError, FileNotFoundError, ValueError)
    try:
        extra = _expected_errors()
        return int(args.func(args) or 0)
    except expected + extra as exc:
        print(f"igsearch {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"igsearch {args.command}: interrupted", file=sys.stderr)
        return 130


def _expected_errors() -> tuple:
    """Error types of the training stack that carry a user-facing message."""
    from igsearch.train.checkpoint import CheckpointError
    from igsearch.train.config import ConfigError

    errors = [ConfigError, CheckpointError]
    try:  # the trainer imports vLLM-side modules lazily; keep the CLI usable without them
        from igsearch.train.trainer import TrainingError
    except ImportError:
        pass
    else:
        errors.append(TrainingError)
    return tuple(errors)


if __name__ == "__main__":
    sys.exit(main())
