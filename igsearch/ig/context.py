"""Context skeletons C_t(x) of docs/DESIGN.md section 3."""

from __future__ import annotations

from .parse import ParsedRollout

ANSWER_CUE = "\n<answer> "


def build_context(rollout: ParsedRollout, t: int, pair: tuple[str, str] | None = None) -> str:
    """C_t(x): the prefix, then for every step s <= t its search, documents and refine blocks (step
    t's documents and refine replaced by ``pair`` = (documents, refine or "") when given), joined
    with newlines, then ``"\\n<answer> "``. Text between blocks and steps after t are dropped."""
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
    return "\n".join(parts) + ANSWER_CUE
