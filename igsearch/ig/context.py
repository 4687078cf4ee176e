"""Context skeletons C_t(x) of docs/DESIGN.md section 3."""

from __future__ import annotations

from typing import Sequence

from igsearch.data.prompts import ANSWER_OPEN
from igsearch.scoring.config import ANSWER_TOKENIZATIONS  # noqa: F401  (re-exported: the choices of answer_tokens)

from .parse import ParsedRollout

#: The answer cue of the authors' pipeline: the context ends with a space and the gold answer is
#: tokenized on its own (``answer_tokens="separate"``).
ANSWER_CUE = "\n" + ANSWER_OPEN + " "



def encode_text(tokenizer, text: str) -> list[int]:
    """``text``'s token ids without special tokens."""
    # a lone surrogate (invalid UTF-16 from a broken file) makes fast tokenizers raise TypeError
    text = text.encode("utf-8", "replace").decode("utf-8")
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def answer_cue(answer_tokens: str = "as_written") -> str:
    """The text every IG context ends with under ``answer_tokens`` (see ANSWER_TOKENIZATIONS)."""
    if answer_tokens == "as_written":
        return "\n" + ANSWER_OPEN
    if answer_tokens == "separate":
        return ANSWER_CUE
    raise ValueError(f"answer_tokens must be one of {ANSWER_TOKENIZATIONS}, got {answer_tokens!r}")


def gold_token_ids(tokenizer, gold: str, answer_tokens: str = "as_written") -> list[int]:
    """Token ids of ``gold`` as they follow the answer cue of ``answer_tokens``: for ``as_written``
    the tokens that ``"<answer> " + gold`` has after the tokens of ``"<answer>"``, so that cue + gold
    tokenizes exactly as the policy's own answer does; for ``separate`` ``gold`` on its own. A blank
    gold has no tokens (``[]``) in either mode, so callers refuse it the same way."""
    answer_cue(answer_tokens)  # validates the mode
    if not gold.strip():
        return []
    if answer_tokens == "separate":
        return encode_text(tokenizer, gold)
    head, joint = encode_text(tokenizer, ANSWER_OPEN), encode_text(tokenizer, f"{ANSWER_OPEN} {gold}")
    if joint[:len(head)] == head:
        return joint[len(head):]
    return encode_text(tokenizer, f" {gold}")  # the tag merged with the space: the nearest there is


def build_context(rollout: ParsedRollout, t: int, pair: tuple[str, str] | None = None,
                  answer_tokens: str = "as_written") -> str:
    """C_t(x): the prefix, then for every step s <= t its search, documents and refine blocks (step
    t's documents and refine replaced by ``pair`` = (documents, refine or "") when given), joined
    with newlines, then the answer cue (``answer_cue(answer_tokens)``: ``"\\n<answer>"``, or the
    published ``"\\n<answer> "``). Text between blocks and steps after t are dropped."""
    if not 0 <= t < len(rollout.steps):
        raise IndexError(f"step {t} out of range: rollout has {len(rollout.steps)} steps")
    parts = [rollout.prefix]
    for s in range(t + 1):
        step = rollout.steps[s]
        if step.search is not None:
            parts.append(step.search)
        docs, refine = pair if (s == t and pair is not None) else step.pair
        parts.append(docs)
        if refine:
            parts.append(refine)
    return "\n".join(parts) + answer_cue(answer_tokens)


def build_context_ids(ids, t: int, pair: tuple[Sequence[int], Sequence[int]] | None, join: Sequence[int],
                      cue: Sequence[int]) -> list[int]:
    """C_t(x) as token ids, from a rollout's token record ``ids`` (``igsearch.ig.record.RolloutIds``):
    the prefix, then for every step s <= t ``join`` + each of its blocks (search, documents, refine;
    step t's documents and refine replaced by ``pair`` = (documents ids, refine ids or ()) when
    given), then ``cue``. ``join`` is the ids of ``"\\n"`` and ``cue`` those of ``answer_cue(...)``, so
    this is :func:`build_context`'s layout with every block in the tokens the policy wrote or read."""
    if not 0 <= t < len(ids.steps):
        raise IndexError(f"step {t} out of range: rollout has {len(ids.steps)} steps")
    out = list(ids.prefix)
    for s in range(t + 1):
        step = ids.steps[s]
        docs, refine = pair if (s == t and pair is not None) else step.pair
        for block in (step.search, docs, refine):
            if block:
                out += join
                out += block
    return out + list(cue)
