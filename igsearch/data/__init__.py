"""QA data: Search-R1 / FlashRAG loaders, EM/F1 metrics and the prompt templates."""

from .loaders import DataError, QARow, load_corpus, load_qa
from .metrics import exact_match, extract_answer, f1_score, normalize_answer

__all__ = [
    "DataError", "QARow", "exact_match", "extract_answer", "f1_score", "load_corpus", "load_qa",
    "normalize_answer",
]
