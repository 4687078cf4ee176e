"""One encyclopedic passage per entity, and the fact sentences questions are answered from.

Every relation fact is written as ``The <relation word> of <subject> is <object>.`` inside the
subject's passage, so the hop query ``"<subject> <relation word>"`` finds it with BM25 and the fact
can be read back with :func:`find_fact`. The other sentences are distractors: attributes no question
asks about, and mentions of other entities (hard negatives for retrieval).
"""

from __future__ import annotations

import random
import re
from typing import Iterable

from .graph import RELATIONS, Entity


def fact_sentence(relation: str, subject: str, obj: str) -> str:
    """The sentence stating ``relation(subject) = obj``, exactly as it appears in passages."""
    return f"The {RELATIONS[relation].word} of {subject} is {obj}."


def _fact_pattern(relation: str) -> re.Pattern:
    word = re.escape(RELATIONS[relation].word)
    return re.compile(rf"The {word} of (?P<subject>[^.]+?) is (?P<object>[^.]+)\.")


_FACT_PATTERNS = {key: _fact_pattern(key) for key in RELATIONS}


def find_fact(texts: Iterable[str], relation: str, subject: str) -> tuple[str, str] | None:
    """The first ``(fact sentence, object)`` for ``relation`` of ``subject`` in ``texts``, in order.

    ``subject`` is compared case-insensitively. ``None`` when no text states it.
    """
    wanted = subject.strip().lower()
    for text in texts:
        for match in _FACT_PATTERNS[relation].finditer(text):
            if match.group("subject").strip().lower() == wanted:
                return match.group(0), match.group("object").strip()
    return None


#: For a relation, the distractor sentence of the subject's passage that names an entity of the same
#: kind as the relation's object (a look-alike: the star of a film looks like its director). ``S`` is
#: the subject, ``O`` the look-alike. ``founder`` and ``capital`` have none.
_LOOKALIKE_PATTERNS: dict[str, str] = {
    "director": r"(?P<O>[^.]+?) plays the lead role in (?P<S>[^.]+?)\.",
    "author": r"(?P<S>[^.]+?) is dedicated to (?P<O>[^.]+?)\.",
    "headquarters": r"(?P<S>[^.]+?) also runs an office in (?P<O>[^.]+?)\.",
    "birthplace": r"(?P<S>[^.]+?) studied in (?P<O>[^.]+?)\.",
    "spouse": r"(?P<S>[^.]+?) is a close friend of (?P<O>[^.]+?)\.",
    "country": r"(?P<S>[^.]+?) lies near the border with (?P<O>[^.]+?)\.",
    # the relations of a dense world
    "producer": r"(?P<S>[^.]+?) was distributed by (?P<O>[^.]+?)\.",
    "publisher": r"(?P<S>[^.]+?) was printed by (?P<O>[^.]+?)\.",
    "setting": r"(?P<S>[^.]+?) was written in (?P<O>[^.]+?)\.",
    "chief": r"(?P<O>[^.]+?) sits on the board of (?P<S>[^.]+?)\.",
    "mentor": r"(?P<S>[^.]+?) once worked with (?P<O>[^.]+?)\.",
    "employer": r"(?P<S>[^.]+?) once consulted for (?P<O>[^.]+?)\.",
}
_LOOKALIKES = {key: re.compile(pattern) for key, pattern in _LOOKALIKE_PATTERNS.items()}


def find_lookalike(texts: Iterable[str], relation: str, subject: str) -> tuple[str, str] | None:
    """The first ``(sentence, entity)`` in ``texts`` that names a look-alike of ``relation`` of
    ``subject``: another entity of the object's kind that the subject's passage mentions (see
    ``_LOOKALIKE_PATTERNS``). ``None`` when the relation has none or no text states one."""
    pattern = _LOOKALIKES.get(relation)
    if pattern is None:
        return None
    wanted = subject.strip().lower()
    for text in texts:
        for match in pattern.finditer(text):  # a match starts after the sentence before it
            if match.group("S").strip().lower() == wanted:
                return match.group(0).strip(), match.group("O").strip()
    return None


def build_passages(entities: list[Entity], rng: random.Random) -> list[str]:
    """The passage of every entity, in world order, in the Search-R1 corpus format
    ``"Title"\ntext``: an opening sentence, then the relation facts and distractors shuffled."""
    works: dict[int, list[str]] = {}
    for entity in entities:
        for relation in ("director", "author", "founder"):
            if relation in entity.relations:
                works.setdefault(entity.relations[relation], []).append(entity.name)
    passages = []
    for entity in entities:
        intro, others = _sentences(entity, entities, works.get(entity.index, []))
        facts = [
            fact_sentence(relation, entity.name, entities[obj].name)
            for relation, obj in entity.relations.items()
        ]
        body = facts + others
        rng.shuffle(body)
        passages.append(f'"{entity.name}"\n' + " ".join([intro, *body]))
    return passages


def _sentences(entity: Entity, entities: list[Entity],
               works: list[str]) -> tuple[str, list[str]]:
    """The opening sentence and the distractor sentences of an entity's passage (``works``: the
    names of the films, books and companies a person made)."""
    name, attrs = entity.name, entity.attrs

    def other(key: str) -> Entity | None:
        target = entities[attrs[key]]
        return None if target.index == entity.index else target

    others: list[str] = []
    if entity.kind == "person":
        first = name.split()[0]
        occupation = attrs["occupation"]
        article = "an" if occupation[0] in "aeiou" else "a"
        intro = (f"{name} (often credited as {entity.aliases[0]}) is {article} {occupation} "
                 f"born in {attrs['year']}.")
        others.append(f"{name} studied in {entities[attrs['studied_in']].name}.")
        if friend := other("friend"):
            others.append(f"{name} is a close friend of {friend.name}.")
        others.append(f"In spare time {first} enjoys {attrs['hobby']}.")
        if works:
            others.append(f"{name} is known for {' and '.join(works[:2])}.")
        if "colleague" in attrs:  # a dense world's look-alikes (below too): absent from a base world
            others.append(f"{name} once worked with {entities[attrs['colleague']].name}.")
        if "client" in attrs:
            others.append(f"{name} once consulted for {entities[attrs['client']].name}.")
    elif entity.kind == "film":
        intro = f"{name} is a {attrs['year']} {attrs['genre']} film."
        others.append(f"{entities[attrs['star']].name} plays the lead role in {name}.")
        others.append(f"{name} was filmed in {entities[attrs['filmed_in']].name}.")
        if "distributor" in attrs:
            others.append(f"{name} was distributed by {entities[attrs['distributor']].name}.")
    elif entity.kind == "book":
        intro = f"{name} is a {attrs['genre']} first published in {attrs['year']}."
        others.append(f"{name} is dedicated to {entities[attrs['dedicated_to']].name}.")
        if "printer" in attrs:
            others.append(f"{name} was printed by {entities[attrs['printer']].name}.")
            others.append(f"{name} was written in {entities[attrs['written_in']].name}.")
    elif entity.kind == "company":
        intro = f"{name} is a {attrs['industry']} company established in {attrs['year']}."
        others.append(f"{name} also runs an office in {entities[attrs['office_in']].name}.")
        if "board_member" in attrs:
            others.append(f"{entities[attrs['board_member']].name} sits on the board of {name}.")
    elif entity.kind == "city":
        intro = f"{name} is a city with about {attrs['population']:,} inhabitants."
        if attrs["river"] != name:
            others.append(f"The {attrs['river']} river flows through {name}.")
        border = entities[attrs["border"]]
        if border.index != entity.relations["country"]:
            others.append(f"{name} lies near the border with {border.name}.")
    elif entity.kind == "country":
        intro = f"{name}, officially the {entity.aliases[0]}, is a country in {attrs['region']}."
        others.append(f"{name} has about {attrs['population']:,} inhabitants.")
        if neighbour := other("neighbour"):
            others.append(f"{name} shares a long border with {neighbour.name}.")
    else:  # pragma: no cover - KINDS is closed
        raise ValueError(f"unknown entity kind {entity.kind!r}")
    return intro, others
