"""Multi-hop questions: chains of relations from a root entity, their wording and their hops.

A chain such as ``director -> birthplace -> country`` applied to a film asks "In which country is
the birthplace of the director of <film>?". Each hop records the subject, the relation, a natural
search query (``"<subject> <relation word>"``), the fact sentence that answers it and the passage
that holds it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .graph import KINDS, RELATIONS, Entity
from .passages import fact_sentence

#: How the last relation of a chain is asked; ``{x}`` is the noun phrase of everything before.
LAST_HOP_FORMS: dict[str, tuple[str, ...]] = {
    "director": ("Who directed {x}?", "Who is the director of {x}?"),
    "author": ("Who wrote {x}?", "Who is the author of {x}?"),
    "founder": ("Who founded {x}?", "Who is the founder of {x}?"),
    "headquarters": ("Where is {x} headquartered?", "In which city is the headquarters of {x}?"),
    "birthplace": ("Where was {x} born?", "What is the birthplace of {x}?"),
    "spouse": ("Who is the spouse of {x}?", "Who is married to {x}?"),
    "country": ("In which country is {x}?", "What is the country of {x}?"),
    "capital": ("What is the capital of {x}?",),
    "producer": ("Which company produced {x}?", "Who is the producer of {x}?"),
    "publisher": ("Which company published {x}?", "Who is the publisher of {x}?"),
    "setting": ("Where is {x} set?", "What is the setting of {x}?"),
    "chief": ("Who runs {x}?", "Who is the chief executive of {x}?"),
    "mentor": ("Who mentored {x}?", "Who is the mentor of {x}?"),
    "employer": ("Which company employs {x}?", "Who is the employer of {x}?"),
}


@dataclass(frozen=True)
class Question:
    """A chain of relations applied to a root entity; ``path`` lists every entity visited."""

    chain: tuple[str, ...]
    path: tuple[int, ...]

    @property
    def hops(self) -> int:
        return len(self.chain)


def chains_from(kind: str, max_hops: int = 3, relations=None) -> list[tuple[str, ...]]:
    """Every relation chain of 1..``max_hops`` relations whose first subject is of ``kind``, over ``relations``
    (keys of :data:`RELATIONS`; default all of them)."""
    out: list[tuple[str, ...]] = []
    allowed = set(RELATIONS if relations is None else relations)

    def extend(chain: tuple[str, ...], current_kind: str) -> None:
        for key, relation in RELATIONS.items():
            if key not in allowed or relation.subject_kind != current_kind:
                continue
            longer = chain + (key,)
            out.append(longer)
            if len(longer) < max_hops:
                extend(longer, relation.object_kind)

    extend((), kind)
    return out


def walk(entities: list[Entity], root: int, chain: tuple[str, ...]) -> tuple[int, ...] | None:
    """The entities visited by ``chain`` from ``root``; ``None`` if an edge is missing or the path
    revisits an entity (such questions are trivial, e.g. the spouse of the spouse)."""
    path = [root]
    for relation in chain:
        nxt = entities[path[-1]].relations.get(relation)
        if nxt is None or nxt in path:
            return None
        path.append(nxt)
    return tuple(path)


def all_questions(entities: list[Entity], max_hops: int = 3) -> dict[int, dict[tuple, list]]:
    """Every valid question, grouped by hop count, then by chain (entities in world order)."""
    grouped: dict[int, dict[tuple, list[Question]]] = {h: {} for h in range(1, max_hops + 1)}
    present = {key for entity in entities for key in entity.relations}
    chains = {kind: chains_from(kind, max_hops, present) for kind in KINDS}
    for entity in entities:
        for chain in chains[entity.kind]:
            path = walk(entities, entity.index, chain)
            if path is not None:
                grouped[len(chain)].setdefault(chain, []).append(Question(chain, path))
    return grouped


def pick_questions(grouped: dict[tuple, list[Question]], count: int,
                   rng: random.Random) -> list[Question]:
    """``count`` questions drawn round-robin over the chains, so every chain shape appears."""
    chains = sorted(grouped)
    rng.shuffle(chains)
    pools = {chain: rng.sample(grouped[chain], len(grouped[chain])) for chain in chains}
    picked: list[Question] = []
    while len(picked) < count and any(pools.values()):
        for chain in chains:
            if pools[chain] and len(picked) < count:
                picked.append(pools[chain].pop())
    return picked


def question_text(question: Question, entities: list[Entity], rng: random.Random) -> str:
    """The natural-language question, e.g. "Where was the director of Velmo Dawn born?"."""
    phrase = entities[question.path[0]].name
    for relation in question.chain[:-1]:
        phrase = f"the {RELATIONS[relation].word} of {phrase}"
    return rng.choice(LAST_HOP_FORMS[question.chain[-1]]).format(x=phrase)


def hop_records(question: Question, entities: list[Entity]) -> list[dict]:
    """One record per hop: subject, relation, search query, answering fact, object, passage id."""
    records = []
    for relation, subject, obj in zip(question.chain, question.path, question.path[1:]):
        subject_name, object_name = entities[subject].name, entities[obj].name
        records.append({
            "entity": subject_name,
            "relation": relation,
            "query": f"{subject_name} {RELATIONS[relation].word}",
            "fact": fact_sentence(relation, subject_name, object_name),
            "answer": object_name,
            "passage_id": str(subject),
        })
    return records
