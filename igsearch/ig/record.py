"""Steps of a rollout from its token-span record (``Trajectory.steps``), as IG's contexts need them.

The agent records, while it runs, the token span of every step's query, documents and refine
(``igsearch.rollout.trajectory.StepSpans``). This module turns that record into the same
``ParsedRollout`` the text parser produces, by decoding each span and cutting it to its tags, so
IG is computed on exactly the steps the rollout took (the advantage estimators put the IG on the
same steps' query tokens). ``tests/test_plugin_method.py`` checks it against ``parse_rollout`` on the
agent's rollouts.
"""

from __future__ import annotations

from igsearch.data.prompts import DOCS_CLOSE, DOCS_OPEN, REFINE_CLOSE, REFINE_OPEN, SEARCH_CLOSE, SEARCH_OPEN

from .parse import ParsedRollout, Step


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


def rollout_from_trajectory(traj, tokenizer) -> ParsedRollout:
    """The prefix and steps of ``traj`` (a Trajectory) from its token spans.

    The prefix is the prompt text plus whatever the policy wrote before its first query,
    right-stripped; ``response_start`` is the length of the prompt text.
    """
    ids = traj.response_ids

    def text(span: tuple[int, int]) -> str:
        return tokenizer.decode(ids[span[0]:span[1]], skip_special_tokens=False)

    steps = []
    for k, s in enumerate(traj.steps):
        search = _between(text(s.query), SEARCH_OPEN, SEARCH_CLOSE)
        documents = _between(text(s.documents), DOCS_OPEN, DOCS_CLOSE)
        if documents is None:
            raise ValueError(f"trajectory step {k}: documents span {s.documents} holds no "
                             f"{DOCS_OPEN}...{DOCS_CLOSE} block")
        refine, closed = (None, True) if s.refine is None else _refine_text(text(s.refine))
        steps.append(Step(k, search, documents, refine, closed))
    first = traj.steps[0].query[0] if traj.steps else len(ids)
    before = tokenizer.decode(ids[:first], skip_special_tokens=False)
    cut = before.find(SEARCH_OPEN)  # a query token may start with text before "<search>"
    prefix = traj.prompt_text + (before if cut < 0 else before[:cut])
    return ParsedRollout(prefix=prefix.rstrip(), steps=steps, response_start=len(traj.prompt_text))
