"""A small made-up question set and corpus in the Search-R1 format, for tests/test_own_data.py.

Nothing here comes from the synthetic world: 30 invented landmarks, each with who built it and where it
stands, one passage per landmark (plus a few passages that answer nothing), and 30 one-hop questions split
into train (parquet, Search-R1 columns with the answers in ``reward_model.ground_truth.target``) and dev /
test (jsonl with ``golden_answers``).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

_FIRST = ["Kelmi", "Orsa", "Tavin", "Brelle", "Quon", "Idris", "Malva", "Serk", "Anouk", "Pell"]
_LAST = ["Arasto", "Vennick", "Dolgrave", "Marrow", "Quillane", "Ostreth", "Pallidor", "Wrenshaw"]
_PLACES = ["Vaskeld", "Ombray", "Tirrow", "Kestune", "Halvane", "Drussel", "Morrinth", "Essary"]
_KINDS = ["Bridge", "Tower", "Library", "Observatory", "Canal", "Lighthouse"]
_STEMS = ["Zorvath", "Plimsey", "Cardune", "Ulvaro", "Feskin", "Brannoch", "Yelmora", "Tusk", "Glenvary",
          "Oskarne", "Rimble", "Hathow", "Nerrin", "Costrel", "Vintaro"]

#: the question that README.md's own-data block queries the index with (``igsearch retrieval query``)
README_QUESTION = "Who designed the Zorvath Bridge?"


def landmarks(n: int = 30, seed: int = 0) -> list[dict]:
    """``n`` invented landmarks with a designer and a town, names unique."""
    rng = random.Random(seed)
    names = [f"{stem} {kind}" for stem in _STEMS for kind in _KINDS]
    rng.shuffle(names)
    names.remove("Zorvath Bridge")
    names = ["Zorvath Bridge", *names[: n - 1]]
    people = [f"{a} {b}" for a in _FIRST for b in _LAST]
    rng.shuffle(people)
    return [{"name": name, "designer": people[i], "town": rng.choice(_PLACES), "year": rng.randrange(1700, 1950)}
            for i, name in enumerate(names)]


def write_own_data(folder, n: int = 30, seed: int = 0) -> dict:
    """Write ``corpus.jsonl``, ``train.parquet``, ``dev.jsonl`` and ``test.jsonl`` into ``folder``; return
    ``{"landmarks": [...], "questions": {split: [row, ...]}}``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    marks = landmarks(n, seed)
    corpus = [{"id": f"doc{i}", "contents": f'"{m["name"]}"\nThe {m["name"]} stands in {m["town"]}. It was designed '
                                           f'by {m["designer"]} and opened in {m["year"]}.'}
              for i, m in enumerate(marks)]
    corpus += [{"id": f"town{i}", "title": town, "text": f"{town} is a market town on the river {_STEMS[i]}."}
               for i, town in enumerate(_PLACES)]
    with (folder / "corpus.jsonl").open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(d) + "\n" for d in corpus)

    rows = [{"id": f"q{i}", "question": f"Who designed the {m['name']}?", "golden_answers": [m["designer"]],
             "data_source": "landmarks"} for i, m in enumerate(marks)]
    split = {"test": rows[:5], "dev": rows[5:10], "train": rows[10:]}
    # train: the Search-R1 parquet columns, answers only in reward_model.ground_truth.target
    train = [{"id": r["id"], "question": r["question"], "data_source": r["data_source"], "ability": "fact-reasoning",
              "reward_model": {"style": "rule", "ground_truth": {"target": r["golden_answers"]}},
              "extra_info": {"split": "train", "index": i}} for i, r in enumerate(split["train"])]
    pq.write_table(pa.Table.from_pylist(train), folder / "train.parquet")
    for name in ("dev", "test"):
        with (folder / f"{name}.jsonl").open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in split[name])
    return {"landmarks": marks, "questions": split}
