"""Loaders for QA datasets and corpora in the Search-R1 / FlashRAG formats (jsonl or parquet).

Every record is validated; a bad one raises :class:`DataError` naming the file, the line (jsonl)
or row (parquet) and the field, e.g.
``data/train.jsonl, line 12, field 'golden_answers': expected a non-empty list of strings, got 3``.

Accepted QA rows:

- Search-R1: ``{"id"?, "question", "golden_answers", "data_source", "prompt", "ability",
  "reward_model", "extra_info"}`` (``golden_answers`` may be absent when
  ``reward_model.ground_truth.target`` holds them);
- FlashRAG: ``{"id", "question", "golden_answers", "metadata"}`` (``metadata`` lands in
  ``extra_info["metadata"]``).

Accepted corpus records: ``{"id", "contents"}`` (contents ``"Title"\\ntext``) or
``{"id", "title", "text"}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

_SPLIT_NAMES = {"train", "dev", "val", "valid", "validation", "test"}


class DataError(ValueError):
    """A dataset or corpus file is missing, unreadable or holds an invalid record."""


@dataclass
class QARow:
    """One question with its gold answers, in the form the rest of igsearch uses."""

    id: str
    question: str
    golden_answers: list[str]
    data_source: str
    prompt: list[dict] | None = None
    extra_info: dict = field(default_factory=dict)


#: per-row size bounds: a row beyond them is refused with its file, line and field instead of
#: costing memory in tokenization, rollouts and IG scoring
MAX_QUESTION_CHARS = 8_000
MAX_ANSWER_CHARS = 500
MAX_ANSWERS = 64
MAX_PROMPT_CHARS = 32_000


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _iter_records(path: Path) -> Iterator[tuple[str, Any]]:
    """``(location, record)`` for every record of a .jsonl/.json lines or .parquet file."""
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if not path.is_file():
        raise DataError(f"{path}: not a file (a directory?)")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as exc:  # pyarrow raises several kinds for broken files
            raise DataError(f"{path}: not a readable parquet file ({exc})") from exc
        for i, record in enumerate(table.to_pylist(), 1):
            yield f"{path}, row {i}", record
        return
    if path.suffix not in (".jsonl", ".json"):
        raise DataError(f"{path}: unknown file type {path.suffix!r}; expected .jsonl or .parquet")
    with path.open("rb") as handle:
        for lineno, raw in enumerate(handle, 1):
            where = f"{path}, line {lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{where}: not UTF-8 text (byte {exc.start + 1}: {exc.reason})") from None
            if not line.strip():
                continue
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as exc:
                message = f"{where}: invalid JSON ({exc.msg} at column {exc.colno})"
                raise DataError(message) from None


def _field_error(where: str, name: str, expected: str, value: Any) -> DataError:
    return DataError(f"{where}, field {name!r}: expected {expected}, got {_describe(value)}")


def _string_list(where: str, name: str, value: Any) -> list[str]:
    if (not isinstance(value, (list, tuple)) or not value
            or not all(isinstance(v, str) for v in value)):
        raise _field_error(where, name, "a non-empty list of strings", value)
    return list(value)


def _answers(where: str, name: str, value: Any) -> list[str]:
    """Gold answers: a non-empty list of strings, each with a letter or digit (an empty gold would give
    EM 1 to any empty answer: a reward hack), bounded in number and length."""
    answers = _string_list(where, name, value)
    if len(answers) > MAX_ANSWERS:
        raise DataError(f"{where}, field {name!r}: {len(answers)} answers, at most {MAX_ANSWERS} are accepted")
    for a in answers:
        if not any(ch.isalnum() for ch in a):
            raise DataError(f"{where}, field {name!r}: answer {_describe(a)} has no letter or digit")
        if len(a) > MAX_ANSWER_CHARS:
            raise DataError(f"{where}, field {name!r}: an answer of {len(a)} characters, at most "
                            f"{MAX_ANSWER_CHARS} are accepted")
    return answers


def _default_data_source(path: Path) -> str:
    """FlashRAG keeps ``<dataset>/<split>.jsonl``: the folder names the dataset, else the stem."""
    return path.parent.name if path.stem.lower() in _SPLIT_NAMES and path.parent.name else path.stem


def _qa_row(where: str, record: Any, index: int, default_source: str) -> QARow:
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {_describe(record)}")
    question = record.get("question")
    if not isinstance(question, str) or not question.strip():
        raise _field_error(where, "question", "a non-empty string", question)
    if len(question) > MAX_QUESTION_CHARS:
        raise DataError(f"{where}, field 'question': {len(question)} characters, at most {MAX_QUESTION_CHARS} "
                        "are accepted")

    if record.get("golden_answers") is not None:
        golden = _answers(where, "golden_answers", record["golden_answers"])
    else:
        reward_model = record.get("reward_model") or {}
        if not isinstance(reward_model, dict):
            raise _field_error(where, "reward_model", "an object", reward_model)
        ground_truth = reward_model.get("ground_truth") or {}
        if not isinstance(ground_truth, dict):
            raise _field_error(where, "reward_model.ground_truth", "an object", ground_truth)
        target = ground_truth.get("target")
        if target is None:
            raise DataError(f"{where}, field 'golden_answers': missing (and no "
                            "reward_model.ground_truth.target to take it from)")
        if isinstance(target, str):
            target = [target]
        golden = _answers(where, "reward_model.ground_truth.target", target)

    row_id = record.get("id", index)
    if isinstance(row_id, bool) or not isinstance(row_id, (str, int)):
        raise _field_error(where, "id", "a string or an integer", row_id)

    source = record.get("data_source", default_source)
    if not isinstance(source, str) or not source:
        raise _field_error(where, "data_source", "a non-empty string", source)

    prompt = record.get("prompt")
    if prompt is not None:
        if (not isinstance(prompt, (list, tuple)) or not prompt or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str)
                and isinstance(m.get("content"), str) for m in prompt)):
            raise _field_error(where, "prompt",
                               "a non-empty list of {'role': str, 'content': str}", prompt)
        if sum(len(m["content"]) for m in prompt) > MAX_PROMPT_CHARS:
            raise DataError(f"{where}, field 'prompt': longer than {MAX_PROMPT_CHARS} characters")
        prompt = [{"role": m["role"], "content": m["content"]} for m in prompt]

    extra = record.get("extra_info") or {}
    if not isinstance(extra, dict):
        raise _field_error(where, "extra_info", "an object", extra)
    extra = dict(extra)
    if "metadata" in record:
        extra.setdefault("metadata", record["metadata"])
    return QARow(id=str(row_id), question=question, golden_answers=golden, data_source=source,
                 prompt=prompt, extra_info=extra)


def load_qa(path, *, limit: int | None = None) -> list[QARow]:
    """Read and validate the QA rows of a .jsonl or .parquet file (the first ``limit`` if given)."""
    path = Path(path)
    default_source = _default_data_source(path)
    rows: list[QARow] = []
    for where, record in _iter_records(path):
        if limit is not None and len(rows) >= limit:
            break
        rows.append(_qa_row(where, record, len(rows), default_source))
    if not rows:
        raise DataError(f"{path}: the dataset is empty")
    return rows


def _corpus_record(where: str, record: Any) -> dict:
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {_describe(record)}")
    doc_id = record.get("id")
    if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)):
        raise _field_error(where, "id", "a string or an integer", doc_id)
    contents = record.get("contents")
    if contents is None and "text" in record:
        title, text = record.get("title", ""), record["text"]
        if not isinstance(title, str):
            raise _field_error(where, "title", "a string", title)
        if not isinstance(text, str):
            raise _field_error(where, "text", "a string", text)
        contents = f'"{title}"\n{text}'
    if not isinstance(contents, str) or not contents.strip():
        raise _field_error(where, "contents", "a non-empty string", contents)
    return {"id": str(doc_id), "contents": contents}


def load_corpus(path) -> list[dict]:
    """Read and validate a corpus: a list of ``{"id": str, "contents": str}`` in file order. Ids are
    unique as strings (``1`` and ``"1"`` are the same id)."""
    path = Path(path)
    docs, first_seen = [], {}
    for where, record in _iter_records(path):
        doc = _corpus_record(where, record)
        if doc["id"] in first_seen:
            raise DataError(f"{where}, field 'id': {doc['id']!r} repeats the id of {first_seen[doc['id']]}")
        first_seen[doc["id"]] = where
        docs.append(doc)
    if not docs:
        raise DataError(f"{path}: the corpus is empty")
    return docs
