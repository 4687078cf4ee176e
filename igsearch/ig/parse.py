"""Steps of a rollout's assistant turn, as docs/DESIGN.md section 3 defines them.

- The assistant turn starts after the LAST ``<|im_start|>assistant\\n`` of the text (Qwen chat
  template). For another template pass the prompt text: the turn then starts right after it (the
  text must start with the prompt). A text with neither is an error, never a silent zero.
- A step is each ``<documents>...</documents>`` block of the assistant turn, in order.
- Its refine is the first ``<refine>`` that starts after the block and before the next
  ``<documents>`` (or the end). It ends at the first ``</refine>`` in that same region; if there is
  none, it ends at the first ``\\n<search>`` or ``\\n<answer>`` after it (else at the region's end),
  is right-stripped, and ``</refine>`` is appended.
- The step's query is the t-th ``<search>...</search>`` block of the assistant turn (None if the
  turn has fewer search blocks than documents blocks).
- The prefix is the text from the very start (prompt included) up to the first ``<search>`` of the
  assistant turn (or its first ``<documents>`` when no search precedes it), right-stripped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from igsearch.data.prompts import DOCS_CLOSE, DOCS_OPEN, REFINE_CLOSE, REFINE_OPEN, SEARCH_CLOSE, SEARCH_OPEN

ASSISTANT_MARKER = "<|im_start|>assistant\n"
#: Steps whose documents content (tags stripped, whitespace-stripped) is shorter get no IG.
MIN_DOC_CHARS = 10

_DOCS_RE = re.compile(re.escape(DOCS_OPEN) + r"(.*?)" + re.escape(DOCS_CLOSE), re.S)
_SEARCH_RE = re.compile(re.escape(SEARCH_OPEN) + r"(.*?)" + re.escape(SEARCH_CLOSE), re.S)
_REFINE_STOPS = ("\n" + SEARCH_OPEN, "\n<answer>")


@dataclass(frozen=True)
class Step:
    """One search step. Block texts include their tags; ``refine`` is always closed (or None)."""

    index: int
    search: str | None
    documents: str
    refine: str | None
    refine_was_closed: bool = True

    @property
    def query(self) -> str | None:
        """The query text inside ``<search>...</search>``, stripped."""
        if self.search is None:
            return None
        return self.search[len(SEARCH_OPEN) : -len(SEARCH_CLOSE)].strip()

    @property
    def documents_content(self) -> str:
        """The documents with their tags stripped, whitespace-stripped."""
        return self.documents[len(DOCS_OPEN) : -len(DOCS_CLOSE)].strip()

    @property
    def has_ig(self) -> bool:
        """Whether the step gets an IG (and enters the pool): at least MIN_DOC_CHARS of documents."""
        return len(self.documents_content) >= MIN_DOC_CHARS

    @property
    def pair(self) -> tuple[str, str]:
        """The (documents, refine) pair as text; a missing refine is ``""``."""
        return (self.documents, self.refine or "")


@dataclass(frozen=True)
class ParsedRollout:
    """A rollout's prefix and steps; ``response_start`` is where the assistant turn begins. ``ids``:
    the same prefix and blocks as token ids (``igsearch.ig.record.RolloutIds``) when the rollout comes
    with its token record (our agent's); None for a rollout parsed from text."""

    prefix: str
    steps: list[Step]
    response_start: int
    ids: Any = None


def response_start(text: str, prompt_text: str | None = None, marker: str = ASSISTANT_MARKER, where: str = "") -> int:
    """Character offset where the assistant turn of ``text`` begins; ValueError if there is none."""
    if prompt_text is not None:
        if not text.startswith(prompt_text):
            raise ValueError(f"{where}text does not start with its prompt text")
        return len(prompt_text)
    pos = text.rfind(marker) if marker else -1
    if pos < 0:
        raise ValueError(
            f"{where}no assistant turn: marker {marker!r} not found; "
            "pass prompt_texts= (the prompt of each rollout) for a template without that marker"
        )
    return pos + len(marker)


def _refine_after(region: str) -> tuple[str | None, bool]:
    """The refine block of a step, given the text between its documents and the next documents."""
    start = region.find(REFINE_OPEN)
    if start < 0:
        return None, True
    close = region.find(REFINE_CLOSE, start + len(REFINE_OPEN))
    if close >= 0:
        return region[start : close + len(REFINE_CLOSE)], True
    ends = [p for p in (region.find(s, start) for s in _REFINE_STOPS) if p >= 0]
    end = min(ends) if ends else len(region)
    return region[start:end].rstrip() + REFINE_CLOSE, False


def parse_rollout(text: str, prompt_text: str | None = None, marker: str = ASSISTANT_MARKER, where: str = "") -> ParsedRollout:
    """Split ``text`` (prompt + response) into the prefix and the steps of section 3."""
    r0 = response_start(text, prompt_text, marker, where)
    resp = text[r0:]
    docs = list(_DOCS_RE.finditer(resp))
    inside = [(m.start(), m.end()) for m in docs]
    searches = [
        m for m in _SEARCH_RE.finditer(resp) if not any(a <= m.start() < b for a, b in inside)
    ]
    steps = []
    for t, m in enumerate(docs):
        region_end = docs[t + 1].start() if t + 1 < len(docs) else len(resp)
        refine, closed = _refine_after(resp[m.end() : region_end])
        search = searches[t].group(0) if t < len(searches) else None
        steps.append(Step(t, search, m.group(0), refine, closed))
    firsts = [p for p in (searches[0].start() if searches else -1, docs[0].start() if docs else -1) if p >= 0]
    cut = min(firsts) if firsts else len(resp)
    return ParsedRollout(prefix=text[: r0 + cut].rstrip(), steps=steps, response_start=r0)
