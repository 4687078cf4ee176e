"""QA loaders (Search-R1 / FlashRAG, jsonl / parquet), their errors, EM / F1 / answer extraction."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from igsearch.data import (
    DataError, QARow, exact_match, extract_answer, f1_score, load_corpus, load_qa,
    normalize_answer,
)

SEARCH_R1_ROW = {
    "id": "train_0",
    "question": "who wrote the book?",
    "golden_answers": ["Ana Mor", "A. Mor"],
    "data_source": "nq",
    "prompt": [{"role": "user", "content": "Answer the given question. Question: who?"}],
    "ability": "fact-reasoning",
    "reward_model": {"style": "rule", "ground_truth": {"target": ["Ana Mor", "A. Mor"]}},
    "extra_info": {"split": "train", "index": 0},
}
FLASHRAG_ROW = {"id": "test_7", "question": "where is it?", "golden_answers": ["Tarn"],
                "metadata": {"type": "comparison"}}


def write_jsonl(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_search_r1_jsonl_rows_load(tmp_path):
    rows = load_qa(write_jsonl(tmp_path / "train.jsonl", [SEARCH_R1_ROW] * 3), limit=2)
    assert len(rows) == 2
    row = rows[0]
    assert isinstance(row, QARow)
    assert (row.id, row.question, row.golden_answers, row.data_source) == (
        "train_0", "who wrote the book?", ["Ana Mor", "A. Mor"], "nq")
    assert row.prompt == SEARCH_R1_ROW["prompt"]
    assert row.extra_info == {"split": "train", "index": 0}


def test_flashrag_rows_load_with_the_dataset_folder_as_source(tmp_path):
    row = load_qa(write_jsonl(tmp_path / "hotpotqa" / "dev.jsonl", [FLASHRAG_ROW]))[0]
    assert row.data_source == "hotpotqa" and row.prompt is None
    assert row.extra_info == {"metadata": {"type": "comparison"}}


def test_gold_answers_may_come_from_the_reward_model_only(tmp_path):
    record = {k: v for k, v in SEARCH_R1_ROW.items() if k not in ("golden_answers", "id")}
    row = load_qa(write_jsonl(tmp_path / "nq.jsonl", [record, record]))[1]
    assert row.golden_answers == ["Ana Mor", "A. Mor"] and row.id == "1"


def test_parquet_rows_load(tmp_path):
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist([SEARCH_R1_ROW, SEARCH_R1_ROW]), path)
    rows = load_qa(path)
    assert len(rows) == 2 and rows[1].golden_answers == ["Ana Mor", "A. Mor"]


@pytest.mark.parametrize("field, value, message", [
    ("golden_answers", 3, "field 'golden_answers': expected a non-empty list of strings, got 3"),
    ("golden_answers", [], "field 'golden_answers': expected a non-empty list of strings"),
    ("golden_answers", ["ok", 4], "field 'golden_answers'"),
    ("question", "", "field 'question': expected a non-empty string"),
    ("question", None, "field 'question'"),
    ("prompt", [{"role": "user"}], "field 'prompt'"),
    ("extra_info", [1], "field 'extra_info': expected an object"),
    ("id", [1], "field 'id'"),
])
def test_a_bad_field_names_file_line_and_field(tmp_path, field, value, message):
    bad = dict(SEARCH_R1_ROW, **{field: value})
    path = tmp_path / "data" / "train.jsonl"
    path.parent.mkdir()
    # Blank lines count: the bad record is on line 3.
    path.write_text(json.dumps(SEARCH_R1_ROW) + "\n\n" + json.dumps(bad) + "\n")
    with pytest.raises(DataError) as err:
        load_qa(path)
    assert str(err.value).startswith(f"{path}, line 3, ")
    assert message in str(err.value)


def test_a_bad_parquet_row_is_named_by_row(tmp_path):
    path = tmp_path / "dev.parquet"
    good = {"question": "q?", "golden_answers": ["a"]}
    pq.write_table(pa.Table.from_pylist([good, {"question": "q2?", "golden_answers": None}]), path)
    with pytest.raises(DataError, match=r"dev\.parquet, row 2, field 'golden_answers': missing"):
        load_qa(path)


def test_broken_json_empty_and_missing_files_are_clear(tmp_path):
    broken = tmp_path / "x.jsonl"
    broken.write_text(json.dumps(FLASHRAG_ROW) + "\n{not json\n")
    with pytest.raises(DataError, match=r"x\.jsonl, line 2: invalid JSON"):
        load_qa(broken)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match="empty"):
        load_qa(empty)
    with pytest.raises(DataError, match="no such file"):
        load_qa(tmp_path / "missing.jsonl")
    (tmp_path / "rows.csv").write_text("question,answer\n")
    with pytest.raises(DataError, match="unknown file type"):
        load_qa(tmp_path / "rows.csv")
    not_object = tmp_path / "list.jsonl"
    not_object.write_text("[1, 2]\n")
    with pytest.raises(DataError, match=r"line 1: expected a JSON object"):
        load_qa(not_object)


def test_corpus_loads_both_record_styles_and_names_bad_records(tmp_path):
    path = write_jsonl(tmp_path / "corpus.jsonl", [
        {"id": "0", "contents": '"Tarn"\nTarn is a city.'},
        {"id": 1, "title": "Mor", "text": "Mor is a river."},
    ])
    assert load_corpus(path) == [{"id": "0", "contents": '"Tarn"\nTarn is a city.'},
                                 {"id": "1", "contents": '"Mor"\nMor is a river.'}]
    write_jsonl(path, [{"id": "0", "contents": "ok"}, {"id": "1", "contents": 5}])
    with pytest.raises(DataError, match=r"corpus\.jsonl, line 2, field 'contents'"):
        load_corpus(path)
    write_jsonl(path, [{"contents": "ok"}])
    with pytest.raises(DataError, match=r"line 1, field 'id'"):
        load_corpus(path)


@pytest.mark.parametrize("text, expected", [
    ("The  Cat!", "cat"),
    ("an Apple, a day", "apple day"),
    ("  Theatre of the Absurd ", "theatre of absurd"),
    ("U.S.A.", "usa"),
])
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_a_gold_that_normalises_to_nothing_is_not_matched_by_an_empty_answer():
    assert exact_match("", ["A"]) == 0.0 and exact_match("the", ["A"]) == 0.0
    assert exact_match(" a ", ["A"]) == 1.0 and exact_match("The", ["the"]) == 1.0


def test_exact_match():
    assert exact_match("the Eiffel Tower.", ["Eiffel Tower", "La Tour"]) == 1.0
    assert exact_match("Eiffel", ["Eiffel Tower"]) == 0.0
    assert exact_match("A. Mor", "a mor") == 1.0
    assert exact_match(None, ["x"]) == 0.0
    assert exact_match("", [""]) == 1.0


def test_f1_score():
    assert f1_score("Eiffel Tower", ["Eiffel Tower"]) == 1.0
    assert f1_score("the tower", ["Eiffel Tower"]) == pytest.approx(2 / 3)
    assert f1_score("Paris", ["Eiffel Tower"]) == 0.0
    assert f1_score("big red house", ["red", "big red house cat"]) == pytest.approx(6 / 7)
    assert f1_score(None, ["a"]) == 0.0
    assert f1_score("the", ["a"]) == 1.0  # both normalise to nothing


@pytest.mark.parametrize("text, expected", [
    ("<answer> Tarn </answer>", "Tarn"),
    ("<answer>a</answer> more <answer>\n b \n</answer> tail", "b"),
    ("no answer here", None),
    ("<answer> a </answer> <answer> unclosed", None),
    ("<answer></answer>", ""),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize("record,message", [
    ({"question": "q?", "golden_answers": [""]}, "answer '' has no letter or digit"),
    ({"question": "q?", "golden_answers": [" ."]}, "has no letter or digit"),
    ({"question": "q?", "golden_answers": ["x" * 600]}, "an answer of 600 characters, at most 500"),
    ({"question": "q?", "reward_model": "x"}, "field 'reward_model': expected an object"),
    ({"question": "q" * 9000, "golden_answers": ["a"]}, "field 'question': 9000 characters"),
])
def test_hostile_rows_are_refused_with_file_line_and_field(tmp_path, record, message):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"question": "ok?", "golden_answers": ["a"]}) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(DataError, match=rf"d.jsonl, line 2.*{message}"):
        load_qa(path)


def test_unreadable_files_and_duplicate_corpus_ids_are_named(tmp_path):
    folder = tmp_path / "train.jsonl"
    folder.mkdir()
    with pytest.raises(DataError, match="train.jsonl: not a file"):
        load_qa(folder)
    latin = tmp_path / "l.jsonl"
    latin.write_bytes(b'{"question": "ok?", "golden_answers": ["a"]}\n{"question": "caf\xe9?", "golden_answers": ["a"]}\n')
    with pytest.raises(DataError, match=r"l.jsonl, line 2: not UTF-8 text"):
        load_qa(latin)
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"id": 1, "contents": "\\"A\\"\\ntext"}\n{"id": "1", "contents": "\\"B\\"\\ntext"}\n')
    with pytest.raises(DataError, match=r"c.jsonl, line 2, field 'id': '1' repeats the id of .*c.jsonl, line 1"):
        load_corpus(corpus)
