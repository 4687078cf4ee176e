"""``igsearch world ...``: build the synthetic world and look at oracle trajectories."""

from __future__ import annotations

import argparse
import json
import sys
import time


def _build(args: argparse.Namespace) -> int:
    from .build import build_world

    start = time.perf_counter()
    manifest = build_world(args.out, seed=args.seed, n_entities=args.entities, relations=args.relations,
                           parquet=not args.no_parquet)
    seconds = time.perf_counter() - start
    summary = {k: manifest[k] for k in ("seed", "n_entities", "n_passages", "splits", "hops")}
    print(json.dumps(summary, indent=2))
    print(f"built the world in {args.out} in {seconds:.2f} s", file=sys.stderr)
    return 0


def _oracle(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..data.loaders import load_qa
    from ..data.prompts import get_template
    from ..retrieval import load_retriever
    from .oracle import oracle_response

    world = Path(args.world)
    retriever = load_retriever("bm25", corpus=world / "corpus.jsonl")
    rows = load_qa(world / f"{args.split}.jsonl", limit=args.n)
    template = get_template(args.template)
    for row in rows:
        print(f"### {row.id}: {row.question}  (gold: {row.golden_answers})")
        print(oracle_response(row, retriever, template=template, topk=args.topk,
                              query_noise=args.noise))
        print()
    return 0


def add_world_commands(subparsers) -> None:
    """Add ``world build`` and ``world oracle`` to an argparse subparsers object."""
    from .graph import RELATION_SETS

    world = subparsers.add_parser("world", help="the synthetic multi-hop world")
    commands = world.add_subparsers(dest="world_command", required=True)

    build = commands.add_parser("build", help="build a world (same seed, same bytes)")
    build.add_argument("--seed", type=int, default=0, help="world seed (default 0)")
    build.add_argument("--out", required=True, help="output folder")
    build.add_argument("--entities", type=int, default=None,
                       help="number of entities (default 800; questions scale with it)")
    build.add_argument("--relations", default="base", choices=list(RELATION_SETS),
                       help="base: the demo's eight relations; dense: fourteen (five times the questions)")
    build.add_argument("--no-parquet", action="store_true", help="write only the jsonl splits")
    build.set_defaults(func=_build)

    oracle = commands.add_parser("oracle", help="print oracle trajectories for some questions")
    oracle.add_argument("--world", required=True, help="a built world folder")
    oracle.add_argument("--split", default="dev", choices=("train", "dev", "test"))
    oracle.add_argument("-n", type=int, default=3, help="number of questions (default 3)")
    oracle.add_argument("--topk", type=int, default=3)
    oracle.add_argument("--noise", type=float, default=0.0, help="query noise probability")
    oracle.add_argument("--template", default="refine", help="refine or search-r1")
    oracle.set_defaults(func=_oracle)
