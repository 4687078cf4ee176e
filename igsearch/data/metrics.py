"""Answer extraction, exact match and token F1 with the standard (SQuAD) normalisation."""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Iterable

from .prompts import ANSWER_CLOSE, ANSWER_OPEN

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lowercase, drop punctuation, drop the articles a/an/the, collapse whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCTUATION)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _golds(golds: str | Iterable[str]) -> list[str]:
    return [golds] if isinstance(golds, str) else list(golds)


def _same(prediction: str, gold: str) -> bool:
    g = normalize_answer(gold)
    if not g:  # a gold like "A" or "The" normalises to nothing: then "" or "the" must not match it
        return " ".join(prediction.lower().split()) == " ".join(gold.lower().split())
    return normalize_answer(prediction) == g


def exact_match(prediction: str | None, golds: str | Iterable[str]) -> float:
    """1.0 if the normalised prediction equals any normalised gold answer, else 0.0. A gold that
    normalises to the empty string (e.g. "A") is compared case- and space-insensitively instead."""
    if prediction is None:
        return 0.0
    return float(any(_same(prediction, g) for g in _golds(golds)))


def _f1(prediction: str, gold: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    precision = common / len(pred_tokens)
    recall = common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str | None, golds: str | Iterable[str]) -> float:
    """Token-level F1 between prediction and gold after normalisation, maximised over the golds."""
    if prediction is None:
        return 0.0
    return max((_f1(prediction, g) for g in _golds(golds)), default=0.0)


def extract_answer(text: str) -> str | None:
    """The stripped content of the last ``<answer>...</answer>``.

    ``None`` when there is no ``<answer>`` or the last one is not closed.
    """
    start = text.rfind(ANSWER_OPEN)
    if start < 0:
        return None
    start += len(ANSWER_OPEN)
    end = text.find(ANSWER_CLOSE, start)
    if end < 0:
        return None
    return text[start:end].strip()
