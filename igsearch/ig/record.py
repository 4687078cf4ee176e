"""Steps of a rollout from its token-span record (``Trajectory.steps``), as IG's contexts need them.

The agent records, while it runs, the token span of every step's query, documents and refine
(``igsearch.rollout.trajectory.StepSpans``). This module cuts each span to its tags in token space
and returns a ``ParsedRollout`` whose ``ids`` (:class:`RolloutIds`) are the token ids of the prefix
and of every block, as the policy wrote or read them: IG's contexts are concatenated from them
(``igsearch.ig.context.build_context_ids``) without re-tokenising any text. The same
``ParsedRollout`` carries the blocks' text (decoded once: the ``MIN_DOC_CHARS`` rule is defined on
characters, and the text is what a person reads), so the text parser ``parse_rollout`` and this
record can be compared on the agent's rollouts (``tests/test_plugin_method.py``, ``tests/test_ig.py``).

A block is taken as the policy's own ids when its tags are whole tokens of the span and its ids
decode to exactly the block's text; otherwise (a tokenizer whose tags merge with their neighbours)
the block's text is tokenised instead, and ``RolloutIds.retokenized`` counts it. On the tiny policy's
tokenizer every tag is one token and nothing is re-tokenised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from igsearch.data.prompts import DOCS_CLOSE, DOCS_OPEN, REFINE_CLOSE, REFINE_OPEN, SEARCH_CLOSE, SEARCH_OPEN

from .context import encode_text
from .parse import ParsedRollout, Step


@dataclass(frozen=True)
class StepIds:
    """Token ids of one step's blocks, tags included: ``search`` (None when the step has no query),
    ``documents``, ``refine`` (closed; None when the policy wrote none)."""

    search: tuple[int, ...] | None
    documents: tuple[int, ...]
    refine: tuple[int, ...] | None

    @property
    def pair(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(documents, refine) ids; a missing refine is ``()`` (as ``Step.pair``'s ``""``)."""
        return (self.documents, self.refine or ())


@dataclass(frozen=True)
class RolloutIds:
    """Token ids of a rollout's prefix (the prompt and what the policy wrote before its first query,
    trailing whitespace tokens dropped) and of each step's blocks; ``retokenized``: how many of them
    came from tokenising their text (see the module docstring)."""

    prefix: tuple[int, ...]
    steps: tuple[StepIds, ...]
    retokenized: int = 0


def _find(seq: Sequence[int], pat: Sequence[int], start: int = 0) -> int:
    n = len(pat)
    for i in range(max(0, start), len(seq) - n + 1):
        if list(seq[i:i + n]) == list(pat):
            return i
    return -1


def _rfind(seq: Sequence[int], pat: Sequence[int]) -> int:
    n = len(pat)
    for i in range(len(seq) - n, -1, -1):
        if list(seq[i:i + n]) == list(pat):
            return i
    return -1


def _between(text: str, open_tag: str, close_tag: str) -> str | None:
    """``text`` from its first ``open_tag`` to the end of its last ``close_tag``; None without both."""
    a, b = text.find(open_tag), text.rfind(close_tag)
    if a < 0 or b < a:
        return None
    return text[a:b + len(close_tag)]


def _refine_text(text: str) -> tuple[str | None, bool]:
    """The refine block inside a decoded refine span: closed as written, else right-stripped and
    closed (the parser's rule for an unclosed refine)."""
    a = text.find(REFINE_OPEN)
    if a < 0:
        return None, True
    close = text.find(REFINE_CLOSE, a)
    if close >= 0:
        return text[a:close + len(REFINE_CLOSE)], True
    return text[a:].rstrip() + REFINE_CLOSE, False


class _Cutter:
    """Cuts token spans to their tags for one tokenizer, checking each cut against the block's text."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.tags = {t: encode_text(tokenizer, t) for t in (SEARCH_OPEN, SEARCH_CLOSE, DOCS_OPEN, DOCS_CLOSE,
                                                            REFINE_OPEN, REFINE_CLOSE)}
        self.retokenized = 0

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=False)

    def checked(self, ids: Sequence[int] | None, text: str) -> tuple[int, ...]:
        """``ids`` when they decode to ``text``, else ``text`` tokenised (counted)."""
        if ids is not None and self.decode(ids) == text:
            return tuple(ids)
        self.retokenized += 1
        return tuple(encode_text(self.tok, text))

    def rstrip(self, ids: Sequence[int]) -> list[int]:
        """``ids`` without trailing tokens that decode to whitespace only."""
        out = list(ids)
        while out and not self.decode(out[-1:]).strip():
            out.pop()
        return out

    def block(self, span: Sequence[int], open_tag: str, close_tag: str, text: str) -> tuple[int, ...]:
        """The ids of ``span`` from its first ``open_tag`` to the end of its last ``close_tag``."""
        o, c = self.tags[open_tag], self.tags[close_tag]
        a, b = _find(span, o), _rfind(span, c)
        return self.checked(span[a:b + len(c)] if 0 <= a <= b else None, text)

    def refine(self, span: Sequence[int], text: str, closed: bool) -> tuple[int, ...]:
        """The refine block of ``span``: to its first close tag, or right-stripped and closed."""
        o, c = self.tags[REFINE_OPEN], self.tags[REFINE_CLOSE]
        a = _find(span, o)
        if a < 0:
            return self.checked(None, text)
        if closed:
            b = _find(span, c, a + len(o))
            return self.checked(span[a:b + len(c)] if b >= 0 else None, text)
        return self.checked(self.rstrip(span[a:]) + list(c), text)


def rollout_from_trajectory(traj, tokenizer) -> ParsedRollout:
    """The prefix and steps of ``traj`` (a Trajectory) from its token spans, as text and as ids.

    The prefix is the prompt plus whatever the policy wrote before its first query, right-stripped;
    ``response_start`` is the length of the prompt text.
    """
    ids = list(traj.response_ids)
    cut = _Cutter(tokenizer)

    def span(s: tuple[int, int]) -> list[int]:
        return ids[s[0]:s[1]]

    steps, step_ids = [], []
    for k, s in enumerate(traj.steps):
        search = _between(cut.decode(span(s.query)), SEARCH_OPEN, SEARCH_CLOSE)
        documents = _between(cut.decode(span(s.documents)), DOCS_OPEN, DOCS_CLOSE)
        if documents is None:
            raise ValueError(f"trajectory step {k}: documents span {s.documents} holds no "
                             f"{DOCS_OPEN}...{DOCS_CLOSE} block")
        refine, closed = (None, True) if s.refine is None else _refine_text(cut.decode(span(s.refine)))
        steps.append(Step(k, search, documents, refine, closed))
        step_ids.append(StepIds(
            search=None if search is None else cut.block(span(s.query), SEARCH_OPEN, SEARCH_CLOSE, search),
            documents=cut.block(span(s.documents), DOCS_OPEN, DOCS_CLOSE, documents),
            refine=None if refine is None else cut.refine(span(s.refine), refine, closed)))
    first = traj.steps[0].query[0] if traj.steps else len(ids)
    before = cut.decode(ids[:first])
    at = before.find(SEARCH_OPEN)  # a query token may start with text before "<search>"
    prefix = (traj.prompt_text + (before if at < 0 else before[:at])).rstrip()
    open_at = _find(span(traj.steps[0].query), cut.tags[SEARCH_OPEN]) if traj.steps else -1
    prefix_ids = cut.checked(cut.rstrip(list(traj.prompt_ids) + ids[:first + max(0, open_at)]), prefix)
    return ParsedRollout(prefix=prefix, steps=steps, response_start=len(traj.prompt_text),
                         ids=RolloutIds(prefix_ids, tuple(step_ids), cut.retokenized))
