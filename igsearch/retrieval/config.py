"""The ``retrieval`` section of the run config: which retriever serves the agent's searches."""

from __future__ import annotations

from dataclasses import dataclass

from igsearch.config_fields import ConfigError, check_choice, check_range, config_field

@dataclass
class RetrievalConfig:
    """Where the passages come from (the number per search, ``topk``, is a rollout setting)."""

    retriever: str = config_field("bm25", "Retriever: a registered kind over corpus_path (bm25 | dense | a plug-in's, "
                                          "igsearch.retrieval.registry) | http (a retrieval server at retriever_url).")
    corpus_path: str | None = config_field(None, "Passage corpus (jsonl, Search-R1 format); None = world_dir's "
                                                 "corpus.")
    index_path: str | None = config_field(None, "Index folder (BM25 or faiss); None = next to the corpus.")
    encoder_path: str | None = config_field(None, "Local Hugging Face encoder folder for retriever=dense.")
    retriever_url: str | None = config_field(None, "URL of a retrieval server for retriever=http, e.g. "
                                                   "http://127.0.0.1:8000/retrieve.")
    retriever_timeout_s: float = config_field(30.0, "Seconds to wait for the retrieval server before failing "
                                                    "with a clear error.")
    retriever_patience_s: float = config_field(300.0, "Seconds a retrieval outage (server down, restarting or "
                                                      "answering 5xx) is ridden out, retrying with capped "
                                                      "exponential backoff, before the run stops after a "
                                                      "checkpoint; 4xx answers fail at once.")

    def validate(self, where: str = "retrieval") -> "RetrievalConfig":
        from .registry import retriever_kinds

        check_choice(where, "retriever", self.retriever, ["http", *retriever_kinds()])
        check_range(where, "retriever_timeout_s", self.retriever_timeout_s, low=0, low_open=True)
        check_range(where, "retriever_patience_s", self.retriever_patience_s, low=0)
        if self.retriever == "http" and not self.retriever_url:
            raise ConfigError(f"{where}: field 'retriever_url': retriever=http needs "
                              "retriever_url=http://HOST:PORT/retrieve")
        return self
