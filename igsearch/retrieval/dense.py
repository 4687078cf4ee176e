"""Dense retrieval: a local Hugging Face encoder plus a faiss flat inner-product index.

Texts are encoded as ``prefix + text`` (e5 style: ``"query: "`` / ``"passage: "``), mean-pooled over
the attention mask and L2-normalised, so inner product is cosine similarity. The index is saved
(``index.faiss`` + ``meta.json``) and rebuilt when the corpus, the encoder or the settings change.
faiss-gpu is used when present and the encoder runs on CUDA; faiss-cpu otherwise.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from ..data.loaders import load_corpus
from .base import Passage, check_retrieve_args
from .index_store import corpus_fingerprint, is_fresh, write_index_atomically

log = logging.getLogger(__name__)

_INDEX_FORMAT = "igsearch-dense-flatip/1"
_INDEX_FILE = "index.faiss"


def encoder_fingerprint(encoder_path) -> str:
    """A digest of a local encoder folder (file names, sizes, mtimes); the path for hub ids."""
    path = Path(encoder_path)
    if not path.is_dir():
        return str(encoder_path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        stat = file.stat()
        digest.update(f"{file.relative_to(path)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return f"{path.resolve()}:{digest.hexdigest()[:16]}"


class TextEncoder:
    """Mean-pooled, L2-normalised embeddings from a Hugging Face encoder (e.g. e5, BERT)."""

    def __init__(self, encoder_path, device: str | None = None, max_length: int = 256,
                 batch_size: int = 64):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(str(encoder_path))
        self.model = AutoModel.from_pretrained(str(encoder_path)).to(self.device).eval()
        if self.device.startswith("cuda"):
            self.model = self.model.half()
        self.max_length = max_length
        self.batch_size = batch_size

    def encode(self, texts: Sequence[str], prefix: str = "") -> np.ndarray:
        """``[len(texts), dim]`` float32 unit vectors of ``prefix + text``."""
        import torch

        chunks = []
        for start in range(0, len(texts), self.batch_size):
            batch = [prefix + t for t in texts[start:start + self.batch_size]]
            enc = self.tokenizer(batch, padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt")
            enc = {k: v.to(self.device) for k, v in enc.items()}
            with torch.inference_mode():
                hidden = self.model(**enc).last_hidden_state.float()
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
            chunks.append(pooled.cpu().numpy().astype(np.float32))
        if not chunks:
            return np.zeros((0, self.model.config.hidden_size), dtype=np.float32)
        return np.concatenate(chunks)


def _to_gpu_if_possible(index, device: str):
    import faiss

    if not device.startswith("cuda") or not hasattr(faiss, "StandardGpuResources"):
        return index
    try:
        return faiss.index_cpu_to_all_gpus(index)
    except Exception as exc:  # faiss-gpu present but no usable GPU: stay on the CPU
        log.warning("faiss could not move the index to the GPU (%s); searching on the CPU", exc)
        return index


class DenseRetriever:
    """Ranks passages by the inner product of normalised query and passage embeddings."""

    def __init__(self, ids: list[str], contents: list[str], index, encoder: TextEncoder,
                 query_prefix: str = "query: "):
        self.ids = ids
        self.contents = contents
        self.index = index
        self.encoder = encoder
        self.query_prefix = query_prefix

    @classmethod
    def from_corpus(cls, corpus_path, encoder_path, index_dir=None, query_prefix: str = "query: ",
                    passage_prefix: str = "passage: ", batch_size: int = 64,
                    device: str | None = None, max_length: int = 256) -> "DenseRetriever":
        """Load (or build and save) the flat inner-product index of ``corpus_path`` embedded with
        ``encoder_path``. ``index_dir`` defaults to ``<corpus dir>/dense_index_<encoder name>``."""
        import faiss

        corpus_path = Path(corpus_path)
        name = Path(str(encoder_path).rstrip("/")).name or "encoder"
        index_dir = Path(index_dir) if index_dir else corpus_path.parent / f"dense_index_{name}"
        docs = load_corpus(corpus_path)
        ids = [d["id"] for d in docs]
        contents = [d["contents"] for d in docs]
        encoder = TextEncoder(encoder_path, device=device, max_length=max_length,
                              batch_size=batch_size)
        meta = {
            "format": _INDEX_FORMAT,
            "corpus": corpus_fingerprint(corpus_path),
            "n_passages": len(docs),
            "encoder": encoder_fingerprint(encoder_path),
            "passage_prefix": passage_prefix,
            "max_length": max_length,
        }
        if is_fresh(index_dir, meta):
            index = faiss.read_index(str(index_dir / _INDEX_FILE))
        else:
            log.info("embedding %d passages of %s for the dense index in %s",
                     len(docs), corpus_path, index_dir)
            vectors = encoder.encode(contents, prefix=passage_prefix)
            index = faiss.IndexFlatIP(vectors.shape[1])
            index.add(vectors)
            write_index_atomically(
                index_dir, meta, lambda folder: faiss.write_index(index, str(folder / _INDEX_FILE))
            )
        if index.ntotal != len(docs):
            raise RuntimeError(f"{index_dir}: the index holds {index.ntotal} vectors but the "
                               f"corpus has {len(docs)} passages; delete the folder to rebuild it")
        index = _to_gpu_if_possible(index, encoder.device)
        return cls(ids, contents, index, encoder, query_prefix=query_prefix)

    def __len__(self) -> int:
        return len(self.ids)

    def retrieve(self, queries: Sequence[str], topk: int) -> list[list[Passage]]:
        """For each query the ``topk`` passages with the highest cosine similarity, best first."""
        k = check_retrieve_args(queries, topk, len(self.ids))
        if not queries:
            return []
        vectors = self.encoder.encode(list(queries), prefix=self.query_prefix)
        scores, idx = self.index.search(vectors, k)
        return [
            [Passage(self.ids[i], self.contents[i], float(s))
             for i, s in zip(row, row_scores) if i >= 0]
            for row, row_scores in zip(idx.tolist(), scores.tolist())
        ]
