"""Oracle trajectories: the assistant text an ideal agent writes for a world question.

For each hop the oracle searches ``"<subject> <relation word>"``, receives the documents the
retriever really returns, writes the fact it reads in them inside ``<refine>`` (refine template),
and follows that fact's object to the next hop; at the end it answers the last object::

    <search> q1 </search>\\n<documents>...</documents>\\n<refine> f1 </refine>\\n
    <search> q2 </search>...
    <answer> a </answer>

With ``query_noise`` p, each hop's query is corrupted with probability p (a near-miss entity taken
from the retrieved titles, a misspelled name, or missing words). The oracle then writes what the
documents say: a wrong entity's fact leads the chain astray (and the answer may be wrong); when the
documents hold nothing about the subject it writes ``no relevant information`` and searches again
with the clean query. With ``early_answer`` q, after each hop but the last the oracle stops with
probability q and answers the entity it has reached (a bridge entity, so the answer is wrong): an
impatient demonstrator, the way an untrained model under-searches multi-hop questions. With
``distractor`` q, after each hop but the last whose passage also names a *look-alike* of the fact's
object (the star of a film beside its director, the city a person studied in beside the city of
birth: :func:`~igsearch.world.passages.find_lookalike`), the oracle's refine states both sentences in
a random order and the next query follows the look-alike with probability q: a demonstrator that
knows the protocol, reads, copies and stops like the oracle, but chooses which entity to search next
wrongly with probability q (a chain gone astray ends with a wrong answer). With the
search-r1 template there is no refine and documents use
``<information>``. Noise draws are seeded (by default from the row id), so oracles are reproducible.
"""

from __future__ import annotations

import random
from typing import Any, Iterable

from ..data.prompts import (
    ANSWER_CLOSE, ANSWER_OPEN, REFINE_CLOSE, REFINE_OPEN, REFINE_TEMPLATE, SEARCH_CLOSE,
    SEARCH_OPEN, PromptTemplate, format_documents,
)
from .graph import RELATIONS
from .passages import find_fact, find_lookalike

NO_INFORMATION = "no relevant information"
_VOWELS = "aeiou"


def _field(row: Any, name: str) -> Any:
    return row[name] if isinstance(row, dict) else getattr(row, name)


def _hops(row: Any) -> list[dict]:
    hops = (_field(row, "extra_info") or {}).get("hops")
    if not hops:
        raise ValueError(f"row {_field(row, 'id')!r} has no extra_info['hops']; "
                         "oracle responses exist only for world questions")
    return hops


def _title(contents: str) -> str:
    return contents.partition("\n")[0].strip().strip('"')


def _misspell(name: str, rng: random.Random) -> str:
    """``name`` with one word changed by one edit (drop, swap or vowel change)."""
    words = name.split()
    candidates = [i for i, w in enumerate(words) if len(w) >= 4 and w not in ("of",)]
    if not candidates:
        return name
    i = rng.choice(candidates)
    word = words[i]
    pos = rng.randrange(1, len(word) - 1)
    edit = rng.choice(("drop", "swap", "vowel"))
    if edit == "drop":
        word = word[:pos] + word[pos + 1:]
    elif edit == "swap":
        word = word[:pos] + word[pos + 1] + word[pos] + word[pos + 2:]
    else:
        vowels = [j for j, ch in enumerate(word) if ch.lower() in _VOWELS]
        if vowels:
            j = rng.choice(vowels)
            other = rng.choice([v for v in _VOWELS if v != word[j].lower()])
            word = word[:j] + other + word[j + 1:]
        else:
            word = word[:pos] + word[pos + 1:]
    words[i] = word
    return " ".join(words)


def corrupt_query(entity: str, relation: str, retriever, topk: int,
                  rng: random.Random) -> tuple[str, str]:
    """A corrupted query for ``relation`` of ``entity`` and the entity the agent believes it asked
    about: ``(query, believed entity)``."""
    word = RELATIONS[relation].word
    kind = rng.choice(("wrong_entity", "misspell", "misspell", "missing_words"))
    if kind == "wrong_entity":
        # A near miss: another retrieved entity that has this relation too (another film's
        # director, another city's country), so the wrong fact looks just like the right one.
        near = []
        for passage in retriever.retrieve([f"{entity} {word}"], topk + 5)[0]:
            title = _title(passage.contents)
            if title.lower() != entity.lower() and find_fact([passage.contents], relation, title):
                near.append(title)
        if near:
            other = rng.choice(near)
            return f"{other} {word}", other
        kind = "misspell"
    if kind == "misspell":
        return f"{_misspell(entity, rng)} {word}", entity
    return (word if rng.random() < 0.5 else entity), entity


def _rng_for(row: Any, rng) -> random.Random:
    if isinstance(rng, random.Random):
        return rng
    if rng is None:
        return random.Random(f"oracle-{_field(row, 'id')}")
    return random.Random(rng)


def oracle_response(row, retriever, *, template: PromptTemplate = REFINE_TEMPLATE, topk: int = 3,
                    query_noise: float = 0.0, early_answer: float = 0.0, distractor: float = 0.0,
                    rng=None) -> str:
    """The assistant text of an ideal (or, with ``query_noise``, a noisy) agent for ``row``.

    ``row`` is a world row (dict or :class:`~igsearch.data.loaders.QARow`) with
    ``extra_info["hops"]``; ``rng`` is a ``random.Random``, a seed, or ``None`` (seeded by row id).
    ``early_answer``: probability of stopping (and answering the bridge entity) after each hop but
    the last. ``distractor``: probability of following the look-alike after a non-final hop that has one.
    """
    hops = _hops(row)
    rng = _rng_for(row, rng)
    parts: list[str] = []
    entity = hops[0]["entity"]
    astray = False  # following a look-alike (distractor)

    def step(query: str) -> list[str]:
        passages = retriever.retrieve([query], topk)[0]
        parts.append(f"{SEARCH_OPEN} {query} {SEARCH_CLOSE}" + format_documents(passages, template))
        return [p.contents for p in passages]

    def refine(text: str) -> None:
        if template.uses_refine:
            parts.append(f"{REFINE_OPEN} {text} {REFINE_CLOSE}\n")

    for k, hop in enumerate(hops):
        if k > 0 and early_answer > 0 and rng.random() < early_answer:
            break
        relation = hop["relation"]
        word = RELATIONS[relation].word
        clean_query = f"{entity} {word}"
        query, believed = clean_query, entity
        noisy = query_noise > 0 and rng.random() < query_noise
        if noisy:
            query, believed = corrupt_query(entity, relation, retriever, topk, rng)
        docs = step(query)
        found = find_fact(docs, relation, believed)
        if found is None and noisy:
            refine(NO_INFORMATION)
            docs = step(clean_query)
            found = find_fact(docs, relation, entity)
        if found is None and astray:  # the look-alike has no such fact: the chain ends here, wrongly
            refine(NO_INFORMATION)
            break
        if found is None:  # even the clean query missed: the oracle still knows the world
            refine(NO_INFORMATION)
            entity = hop["answer"]
            continue
        fact, entity = found
        lookalike = find_lookalike(docs, relation, believed) if distractor > 0 and k < len(hops) - 1 else None
        if lookalike is None:
            refine(fact)
            continue
        both = [fact, lookalike[0]]
        rng.shuffle(both)
        refine(" ".join(both))
        if rng.random() < distractor:
            entity, astray = lookalike[1], True
    parts.append(f"{ANSWER_OPEN} {entity} {ANSWER_CLOSE}")
    return "".join(parts)


def oracle_texts(rows: Iterable, retriever, **kwargs) -> list[str]:
    """:func:`oracle_response` for every row (same keyword arguments)."""
    return [oracle_response(row, retriever, **kwargs) for row in rows]
