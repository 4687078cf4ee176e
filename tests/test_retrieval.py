"""BM25 and dense (faiss) retrieval on a small world: ranking, saved indexes, rebuilds."""

from __future__ import annotations

import argparse
import json
import shutil

import pytest

from igsearch.data.loaders import load_corpus, load_qa
from igsearch.retrieval import RetrievalClient, load_retriever
from igsearch.retrieval.base import Passage, Retriever
from igsearch.retrieval.bm25 import BM25Retriever
from igsearch.retrieval.cli import add_retrieval_commands
from igsearch.retrieval.index_store import read_meta
from igsearch.world import build_world, world_texts


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    build_world(out, seed=11, n_entities=80, parquet=False)
    return out


@pytest.fixture
def corpus_copy(world, tmp_path):
    """A private copy of the corpus (tests that rebuild indexes must not share the folder)."""
    path = tmp_path / "corpus.jsonl"
    shutil.copy(world / "corpus.jsonl", path)
    return path


def test_bm25_ranks_the_subject_passage_first(world):
    retriever = BM25Retriever.from_corpus(world / "corpus.jsonl")
    assert isinstance(retriever, Retriever)
    rows = load_qa(world / "test.jsonl")
    hops = [hop for row in rows for hop in row.extra_info["hops"]]
    results = retriever.retrieve([hop["query"] for hop in hops], topk=3)
    assert len(results) == len(hops)
    for passages, hop in zip(results, hops):
        assert len(passages) == 3 and all(isinstance(p, Passage) for p in passages)
        assert passages[0].id == hop["passage_id"] and hop["fact"] in passages[0].contents
        scores = [p.score for p in passages]
        assert scores == sorted(scores, reverse=True) and scores[0] > 0


def test_bm25_edge_cases(world):
    retriever = BM25Retriever.from_corpus(world / "corpus.jsonl")
    assert retriever.retrieve([], 3) == []
    assert len(retriever.retrieve(["zzzz unknown words"], 5)[0]) == 5
    assert len(retriever.retrieve(["the of a"], 2)[0]) == 2  # stopwords only
    assert len(retriever.retrieve(["city"], 10_000)[0]) == len(retriever) == 80
    with pytest.raises(ValueError, match="topk"):
        retriever.retrieve(["city"], 0)
    with pytest.raises(TypeError):
        retriever.retrieve("city", 3)


def test_bm25_index_is_saved_reused_and_rebuilt_when_the_corpus_changes(corpus_copy):
    index_dir = corpus_copy.parent / "bm25_index"
    first = BM25Retriever.from_corpus(corpus_copy)
    meta = read_meta(index_dir)
    assert meta is not None and meta["n_passages"] == 80
    stamp = (index_dir / "meta.json").stat().st_mtime_ns
    again = BM25Retriever.from_corpus(corpus_copy)
    assert (index_dir / "meta.json").stat().st_mtime_ns == stamp  # loaded, not rebuilt
    query = ["capital country"]
    assert again.retrieve(query, 5) == first.retrieve(query, 5)

    docs = load_corpus(corpus_copy)[:10]
    docs.append({"id": "new", "contents": '"Zyzzor"\nThe capital of Zyzzor is Quorv.'})
    corpus_copy.write_text("".join(json.dumps(d) + "\n" for d in docs))
    rebuilt = BM25Retriever.from_corpus(corpus_copy)
    assert read_meta(index_dir)["n_passages"] == 11
    assert rebuilt.retrieve(["Zyzzor capital"], 1)[0][0].id == "new"
    assert not [p for p in corpus_copy.parent.iterdir() if p.name.startswith(".bm25_index.tmp")]


def test_a_truncated_or_corrupted_bm25_index_is_rebuilt(corpus_copy):
    index_dir = corpus_copy.parent / "bm25_index"
    first = BM25Retriever.from_corpus(corpus_copy)
    assert set(read_meta(index_dir)["files"]) == {p.name for p in index_dir.iterdir() if p.name != "meta.json"}
    query = ["capital country"]
    for damage in ("truncate", "flip"):
        victim = max((p for p in index_dir.iterdir() if p.suffix == ".npy"), key=lambda p: p.stat().st_size)
        data = bytearray(victim.read_bytes())
        if damage == "truncate":
            victim.write_bytes(bytes(data[: len(data) // 2]))
        else:
            data[-1] ^= 0xFF
            victim.write_bytes(bytes(data))
        stamp = (index_dir / "meta.json").stat().st_mtime_ns
        rebuilt = BM25Retriever.from_corpus(corpus_copy)
        assert (index_dir / "meta.json").stat().st_mtime_ns != stamp, damage  # rebuilt, not loaded
        assert rebuilt.retrieve(query, 5) == first.retrieve(query, 5)


def test_bm25_index_dir_can_be_chosen(corpus_copy, tmp_path):
    index_dir = tmp_path / "elsewhere" / "idx"
    retriever = load_retriever("bm25", corpus=corpus_copy, index=index_dir)
    assert (index_dir / "meta.json").exists() and len(retriever) == 80


def test_load_retriever_specs(corpus_copy):
    client = load_retriever("http://127.0.0.1:9/")
    assert isinstance(client, RetrievalClient) and client.url == "http://127.0.0.1:9/retrieve"
    with pytest.raises(ValueError, match="unknown retriever"):
        load_retriever("tfidf", corpus=corpus_copy)
    with pytest.raises(ValueError, match="corpus"):
        load_retriever("bm25")
    with pytest.raises(ValueError, match="encoder"):
        load_retriever("dense", corpus=corpus_copy)


def test_retrieval_query_command(world, capsys):
    parser = argparse.ArgumentParser(prog="igsearch")
    add_retrieval_commands(parser.add_subparsers(dest="command"))
    hop = load_qa(world / "dev.jsonl")[0].extra_info["hops"][0]
    args = parser.parse_args(["retrieval", "query", "--corpus", str(world / "corpus.jsonl"),
                              "--topk", "2", hop["query"]])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["query"] == hop["query"] and out[0]["result"][0]["id"] == hop["passage_id"]
    assert len(out[0]["result"]) == 2


# ---------------------------------------------------------------- dense retrieval (faiss)

@pytest.fixture(scope="module")
def tiny_encoder(world, tmp_path_factory):
    """A random-weight 1-layer BERT with a word-level tokenizer trained on the world's text."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("faiss")
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    tokenizer.train_from_iterator(world_texts(world), trainers.WordLevelTrainer(
        special_tokens=specials, vocab_size=4000))
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
        sep_token="[SEP]")
    path = tmp_path_factory.mktemp("tiny-encoder")
    fast.save_pretrained(path)
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(fast), hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=64,
                                     max_position_embeddings=256)
    transformers.BertModel(config).eval().save_pretrained(path)
    return path


def test_dense_retrieval_finds_a_passage_by_its_own_text_and_reloads(corpus_copy, tiny_encoder):
    from igsearch.retrieval.dense import DenseRetriever

    index_dir = corpus_copy.parent / "dense"
    kwargs = dict(index_dir=index_dir, query_prefix="", passage_prefix="", batch_size=32,
                  device="cpu", max_length=128)
    built = DenseRetriever.from_corpus(corpus_copy, tiny_encoder, **kwargs)
    assert (index_dir / "index.faiss").exists() and read_meta(index_dir)["n_passages"] == 80
    docs = load_corpus(corpus_copy)
    sample = docs[::9]
    results = built.retrieve([d["contents"] for d in sample], topk=3)
    for doc, passages in zip(sample, results):
        assert passages[0].id == doc["id"]
        assert passages[0].score == pytest.approx(1.0, abs=1e-4)
        assert passages[0].score >= passages[1].score >= passages[2].score

    stamp = (index_dir / "meta.json").stat().st_mtime_ns
    reloaded = DenseRetriever.from_corpus(corpus_copy, tiny_encoder, **kwargs)
    assert (index_dir / "meta.json").stat().st_mtime_ns == stamp
    queries = ["capital country", sample[0]["contents"]]
    assert reloaded.retrieve(queries, 4) == built.retrieve(queries, 4)


def test_dense_default_index_dir_and_e5_prefixes(corpus_copy, tiny_encoder):
    retriever = load_retriever("dense", corpus=corpus_copy, encoder=tiny_encoder)
    index_dir = corpus_copy.parent / f"dense_index_{tiny_encoder.name}"
    assert read_meta(index_dir)["passage_prefix"] == "passage: "
    assert retriever.query_prefix == "query: "
    assert len(retriever.retrieve(["capital"], 5)[0]) == 5


def test_a_retriever_kind_is_one_registered_function(corpus_copy, tmp_path):
    """A plug-in kind: registered in one place, then named by a training config like a built-in one."""
    from igsearch.retrieval import Passage, register_retriever, retriever_kinds
    from igsearch.train.assembly import make_retriever
    from igsearch.train.config import ConfigError, load_config

    class FirstPassages:
        def __init__(self, corpus):
            self.rows = [json.loads(line) for line in open(corpus)]

        def retrieve(self, queries, topk):
            return [[Passage(r["id"], r["contents"], 0.0) for r in self.rows[:topk]] for _ in queries]

    with pytest.raises(ConfigError, match="field 'retrieval.retriever': expected one of"):
        load_config(None, ["model_path=m", "retrieval.retriever=test_first"])

    @register_retriever("test_first")
    def first(corpus, index=None, encoder=None):
        return FirstPassages(corpus)

    assert {"bm25", "dense", "test_first"} <= set(retriever_kinds())
    cfg = load_config(None, ["model_path=m", "retrieval.retriever=test_first"])
    retriever = make_retriever(cfg, {"corpus": corpus_copy})
    assert [p.contents for p in retriever.retrieve(["q"], 2)[0]] == [r["contents"] for r in FirstPassages(corpus_copy).rows[:2]]
    with pytest.raises(ValueError, match="already registered"):
        register_retriever("test_first")(lambda corpus, index=None, encoder=None: None)
    with pytest.raises(ValueError, match="reserved"):
        register_retriever("http")
