"""Build the synthetic world on disk: corpus, question splits and a manifest.

Output (all byte-identical for the same seed and size):

- ``corpus.jsonl``: one ``{"id", "contents"}`` line per entity, contents ``"Title"\\ntext``;
- ``train/dev/test.jsonl`` (and ``.parquet``): Search-R1 rows;
- ``manifest.json``: seed, sizes, counts per split and hop, version, sha256 of every file.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from ..data.prompts import REFINE_TEMPLATE
from .graph import RELATION_SETS, generate_entities, kind_counts
from .passages import build_passages
from .questions import all_questions, hop_records, pick_questions, question_text

WORLD_VERSION = "1"
DEFAULT_ENTITIES = 800
#: Split sizes of the default world; other sizes scale them by ``n_entities / DEFAULT_ENTITIES``.
DEFAULT_SPLITS = {"train": 1500, "dev": 200, "test": 300}
#: Share of 1-, 2- and 3-hop questions.
HOP_SHARES = {1: 0.40, 2: 0.35, 3: 0.25}
SPLITS = ("train", "dev", "test")


def default_split_sizes(n_entities: int) -> dict[str, int]:
    """The split sizes for a world of ``n_entities`` (the defaults, scaled; at least 5 each)."""
    scale = n_entities / DEFAULT_ENTITIES
    return {split: max(5, int(round(size * scale))) for split, size in DEFAULT_SPLITS.items()}


def build_world(out_dir, seed: int = 0, n_entities: int | None = None, *,
                split_sizes: dict[str, int] | None = None, parquet: bool = True,
                disjoint_from=None, relations: str = "base") -> dict:
    """Build the world for ``seed`` into ``out_dir`` and return its manifest.

    ``n_entities`` defaults to :data:`DEFAULT_ENTITIES`; ``split_sizes`` (``{"train", "dev",
    "test"}`` -> number of questions) defaults to :func:`default_split_sizes`. Questions are
    1-, 2- and 3-hop in the shares of :data:`HOP_SHARES`, as far as the world has enough of each.
    ``disjoint_from``: directories of worlds whose name words this world must not use, so that no
    entity of this world shares a name (or a name word) with theirs. ``relations``: ``base`` (the demo's eight
    relations) or ``dense`` (fourteen: more questions from as many passages), :data:`~.graph.RELATION_SETS`.
    """
    n_entities = DEFAULT_ENTITIES if n_entities is None else int(n_entities)
    sizes = dict(split_sizes or default_split_sizes(n_entities))
    missing = set(SPLITS) - set(sizes)
    if missing:
        raise ValueError(f"split_sizes lacks {sorted(missing)}; give train, dev and test")
    # extra splits (e.g. a warm-up split that RL and evaluation never see) come after the standard ones
    names = [*SPLITS, *(s for s in sizes if s not in SPLITS)]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    rng = random.Random(f"igsearch-world-{seed}")
    reserved = set().union(*(world_name_words(w) for w in (disjoint_from or ())))
    entities = generate_entities(rng, n_entities, reserved_words=reserved, relations=relations)
    corpus = [{"id": str(e.index), "contents": contents}
              for e, contents in zip(entities, build_passages(entities, rng))]
    splits = _draw_splits(entities, {name: sizes[name] for name in names}, rng)

    files = {"corpus.jsonl": _write_jsonl(out / "corpus.jsonl", corpus)}
    for split in names:
        files[f"{split}.jsonl"] = _write_jsonl(out / f"{split}.jsonl", splits[split])
        if parquet:
            files[f"{split}.parquet"] = _write_parquet(out / f"{split}.parquet", splits[split])

    manifest = {
        "name": "igsearch-world",
        "version": WORLD_VERSION,
        "seed": seed,
        "n_entities": n_entities,
        "entities": kind_counts(n_entities),
        "relations": sorted(RELATION_SETS[relations]),
        "n_passages": len(corpus),
        "disjoint_from": [json.loads((Path(w) / "manifest.json").read_text())["files"]["corpus.jsonl"]
                          for w in (disjoint_from or ())],
        "splits": {split: len(rows) for split, rows in splits.items()},
        "hops": {
            split: {f"{h}hop": sum(r["data_source"] == f"world_{h}hop" for r in rows)
                    for h in HOP_SHARES}
            for split, rows in splits.items()
        },
        "files": files,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def world_name_words(world_dir) -> set[str]:
    """Every word of every entity name (passage title) of the world in ``world_dir``, lower-cased."""
    from ..data.loaders import load_corpus

    path = Path(world_dir) / "corpus.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no corpus; build that world first")
    return {w.lower() for doc in load_corpus(path) for w in doc["contents"].partition("\n")[0].strip('"').split()}


def _draw_splits(entities, sizes: dict[str, int], rng: random.Random) -> dict[str, list[dict]]:
    """Pick the questions per hop count, then deal each hop group across the splits (in ``sizes`` order;
    when the world has too few questions of a hop count, every split gets its share of the shortfall)."""
    names = list(sizes)
    total = sum(sizes.values())
    grouped = all_questions(entities, max_hops=max(HOP_SHARES))
    assigned: dict[str, list] = {split: [] for split in names}
    for hops, share in HOP_SHARES.items():
        picked = pick_questions(grouped[hops], int(round(share * total)), rng)
        rng.shuffle(picked)
        start = 0
        for i, split in enumerate(names):
            if i == len(names) - 1:
                take = len(picked) - start
            else:
                take = int(round(len(picked) * sizes[split] / total))
            assigned[split].extend(picked[start:start + take])
            start += take
    rows: dict[str, list[dict]] = {}
    for split in names:
        questions = assigned[split]
        rng.shuffle(questions)
        rows[split] = [_row(q, entities, split, i, rng) for i, q in enumerate(questions)]
    return rows


def _row(question, entities, split: str, index: int, rng: random.Random) -> dict:
    """One question in the Search-R1 row format."""
    text = question_text(question, entities, rng)
    golden = entities[question.path[-1]].answer_variants
    return {
        "id": f"{split}_{index}",
        "question": text,
        "golden_answers": golden,
        "data_source": f"world_{question.hops}hop",
        "prompt": [{"role": "user", "content": REFINE_TEMPLATE.render(text)}],
        "ability": "multihop-qa",
        "reward_model": {"style": "rule", "ground_truth": {"target": list(golden)}},
        "extra_info": {"split": split, "index": index, "hops": hop_records(question, entities)},
    }


def _write_jsonl(path: Path, rows: list[dict]) -> str:
    """Write one JSON object per line; return the file's sha256."""
    data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _write_parquet(path: Path, rows: list[dict]) -> str:
    """Write the rows as a parquet table; return the file's sha256."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return hashlib.sha256(path.read_bytes()).hexdigest()
