"""``igsearch retrieval ...``: build indexes, serve the Search-R1 API, run queries."""

from __future__ import annotations

import argparse
import json


def _add_backend_args(parser: argparse.ArgumentParser, corpus_required: bool = True) -> None:
    parser.add_argument("--corpus", required=corpus_required,
                        help="corpus .jsonl ({'id', 'contents'} per line)")
    parser.add_argument("--retriever", default="bm25",
                        help="bm25 (default), dense, or the URL of a retrieval server (query only)")
    parser.add_argument("--index", default=None,
                        help="index folder (default: next to the corpus)")
    parser.add_argument("--encoder", default=None,
                        help="local Hugging Face encoder folder (dense only), e.g. e5-base-v2")


def _index(args: argparse.Namespace) -> int:
    from . import load_retriever

    retriever = load_retriever(args.retriever, corpus=args.corpus, index=args.index,
                               encoder=args.encoder)
    print(f"{args.retriever} index ready for {len(retriever)} passages")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from .server import serve

    return serve(args.corpus, args.port, retriever=args.retriever, index=args.index,
                 encoder=args.encoder, host=args.host, default_topk=args.topk)


def _query(args: argparse.Namespace) -> int:
    from . import load_retriever

    retriever = load_retriever(args.retriever, corpus=args.corpus, index=args.index,
                               encoder=args.encoder)
    results = retriever.retrieve(args.queries, args.topk)
    print(json.dumps([
        {"query": q, "result": [{"id": p.id, "score": p.score, "contents": p.contents}
                                for p in passages]}
        for q, passages in zip(args.queries, results)
    ], indent=2, ensure_ascii=False))
    return 0


def add_retrieval_commands(subparsers) -> None:
    """Add ``retrieval index``, ``retrieval serve`` and ``retrieval query`` to ``subparsers``."""
    retrieval = subparsers.add_parser("retrieval", help="retrieval indexes, server and queries")
    commands = retrieval.add_subparsers(dest="retrieval_command", required=True)

    index = commands.add_parser("index", help="build (or check) the index of a corpus")
    _add_backend_args(index)
    index.set_defaults(func=_index)

    serve = commands.add_parser("serve", help="serve POST /retrieve (the Search-R1 API)")
    _add_backend_args(serve)
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--topk", type=int, default=3, help="topk when a request gives none")
    serve.set_defaults(func=_serve)

    query = commands.add_parser("query", help="print the top passages of some queries as JSON")
    _add_backend_args(query, corpus_required=False)
    query.add_argument("--topk", type=int, default=3)
    query.add_argument("queries", nargs="+")
    query.set_defaults(func=_query)
