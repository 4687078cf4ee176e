"""The entity graph of the synthetic world: six entity kinds linked by eight relations (fourteen in a
``dense`` world).

Every relation maps a subject to exactly one object, so a chain of relations from a root entity has
exactly one answer. Besides the relations, entities carry distractor attributes (years, genres,
places they merely visited, people they merely know) that the passages mention but no question
asks about.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .names import NameMaker

KINDS = ("person", "film", "book", "company", "city", "country")


@dataclass(frozen=True)
class Relation:
    """A functional relation ``subject kind -> object kind``; ``word`` names it in facts/queries."""

    key: str
    subject_kind: str
    object_kind: str
    word: str


#: The demo's eight relations (a ``base`` world).
_BASE = (
    Relation("director", "film", "person", "director"),
    Relation("author", "book", "person", "author"),
    Relation("founder", "company", "person", "founder"),
    Relation("headquarters", "company", "city", "headquarters"),
    Relation("birthplace", "person", "city", "birthplace"),
    Relation("spouse", "person", "person", "spouse"),
    Relation("country", "city", "country", "country"),
    Relation("capital", "country", "city", "capital"),
)
#: What a ``dense`` world adds: six more relations (each with its own look-alike distractor), so that the same
#: passages hold more facts and the world more questions (at 800 entities 14,500 against 2,941; 1-hop 1,874
#: against 1,056).
_DENSE = (
    Relation("producer", "film", "company", "producer"),
    Relation("publisher", "book", "company", "publisher"),
    Relation("setting", "book", "city", "setting"),
    Relation("chief", "company", "person", "chief executive"),
    Relation("mentor", "person", "person", "mentor"),
    Relation("employer", "person", "company", "employer"),
)
#: Every relation a world can have, by key.
RELATIONS: dict[str, Relation] = {r.key: r for r in (*_BASE, *_DENSE)}
#: The relations of each kind of world (``build_world(relations=...)``); ``base`` is the demo's.
RELATION_SETS: dict[str, tuple[str, ...]] = {
    "base": tuple(r.key for r in _BASE),
    "dense": tuple(r.key for r in (*_BASE, *_DENSE)),
}

#: Share of each kind in a world of N entities (persons are the hub of most chains).
KIND_SHARES = {
    "person": 0.40, "film": 0.12, "book": 0.10, "company": 0.08, "city": 0.22, "country": 0.08,
}

FILM_NOUNS = ("Dawn", "River", "Crown", "Echo", "Harbor", "Lantern", "Winter", "Garden", "Storm",
              "Mirror", "Voyage", "Ember", "Orchard", "Tide", "Summit")
BOOK_NOUNS = ("Songs", "Letters", "Tales", "Maps", "Chronicles", "Verses", "Notes", "Legends")
COMPANY_SUFFIXES = ("Works", "Holdings", "Foundry", "Labs", "Traders", "Mills", "Shipping")
COUNTRY_FORMS = ("Republic", "Kingdom", "Federation", "Commonwealth")
OCCUPATIONS = ("painter", "engineer", "sailor", "teacher", "architect", "physician", "chemist",
               "farmer", "musician", "merchant", "translator", "surveyor")
FILM_GENRES = ("drama", "comedy", "thriller", "documentary", "romance", "western", "musical")
BOOK_GENRES = ("novel", "poetry collection", "memoir", "travel guide", "history", "cookbook")
INDUSTRIES = ("textiles", "shipbuilding", "glassware", "printing", "mining", "tea trading",
              "clockmaking", "brewing")
HOBBIES = ("sailing", "chess", "beekeeping", "pottery", "mountain walking", "birdwatching",
           "woodcarving", "rowing")
REGIONS = ("the Northern Reach", "the Amber Coast", "the Western Steppe", "the Inner Sea",
           "the Southern Isles", "the High Plateau")


@dataclass
class Entity:
    """One world entity; ``index`` is its position in the world and its passage id."""

    index: int
    kind: str
    name: str
    aliases: tuple[str, ...]
    relations: dict[str, int] = field(default_factory=dict)
    attrs: dict[str, object] = field(default_factory=dict)

    @property
    def answer_variants(self) -> list[str]:
        """Gold answer strings for this entity: the canonical name first, then the aliases."""
        return [self.name, *self.aliases]


def kind_counts(n_entities: int) -> dict[str, int]:
    """How many entities of each kind a world of ``n_entities`` has (persons take the remainder)."""
    counts = {
        kind: max(3, int(round(share * n_entities)))
        for kind, share in KIND_SHARES.items() if kind != "person"
    }
    return {"person": n_entities - sum(counts.values()), **counts}


def generate_entities(rng: random.Random, n_entities: int, reserved_words=(), relations: str = "base") -> list[Entity]:
    """Draw all entities, their relations and distractor attributes (deterministic in ``rng``);
    no invented word is one of ``reserved_words`` (case-insensitive). ``relations``: a name in
    :data:`RELATION_SETS` (a ``dense`` world draws its extra relations last, so its base part is a base world's)."""
    if n_entities < 30:
        raise ValueError(f"a world needs at least 30 entities, got {n_entities}")
    if relations not in RELATION_SETS:
        raise ValueError(f"relations {relations!r} is not one of {', '.join(RELATION_SETS)}")
    counts = kind_counts(n_entities)
    names = NameMaker(rng, reserved=reserved_words)
    by_kind: dict[str, list[Entity]] = {kind: [] for kind in KINDS}
    entities: list[Entity] = []

    def add(kind: str, name: str, aliases: tuple[str, ...]) -> Entity:
        entity = Entity(index=-1, kind=kind, name=name, aliases=aliases)
        entities.append(entity)
        by_kind[kind].append(entity)
        return entity

    for _ in range(counts["person"]):
        first, last = names.person()
        add("person", f"{first} {last}", (f"{first[0]}. {last}",))
    for _ in range(counts["film"]):
        add("film", f"{names.word()} {rng.choice(FILM_NOUNS)}", ())
    for _ in range(counts["book"]):
        add("book", f"{rng.choice(BOOK_NOUNS)} of {names.word()}", ())
    for _ in range(counts["company"]):
        add("company", f"{names.word()} {rng.choice(COMPANY_SUFFIXES)}", ())
    for _ in range(counts["city"]):
        add("city", names.word(), ())
    for _ in range(counts["country"]):
        short = names.word()
        add("country", short, (f"{rng.choice(COUNTRY_FORMS)} of {short}",))

    # Passage order interleaves the kinds; the index doubles as the passage id.
    rng.shuffle(entities)
    for index, entity in enumerate(entities):
        entity.index = index

    _link(rng, by_kind)
    _decorate(rng, by_kind)
    if relations == "dense":
        _link_dense(rng, by_kind)
    return entities


def _link(rng: random.Random, by_kind: dict[str, list[Entity]]) -> None:
    """Draw every relation edge."""
    persons, cities, countries = by_kind["person"], by_kind["city"], by_kind["country"]
    # Every city lies in one country; every country's capital is one of its own cities
    # (countries without a city of their own get one reassigned).
    for city in cities:
        city.relations["country"] = rng.choice(countries).index
    for i, country in enumerate(countries):
        own = [c for c in cities if c.relations["country"] == country.index]
        if not own:
            donor = cities[i % len(cities)]
            donor.relations["country"] = country.index
            own = [donor]
        country.relations["capital"] = rng.choice(own).index
    # A few prolific creators: works are drawn from a pool of about a third of the persons.
    creators = rng.sample(persons, max(3, len(persons) // 3))
    for kind, relation in (("film", "director"), ("book", "author"), ("company", "founder")):
        for work in by_kind[kind]:
            work.relations[relation] = rng.choice(creators).index
    for company in by_kind["company"]:
        company.relations["headquarters"] = rng.choice(cities).index
    for person in persons:
        person.relations["birthplace"] = rng.choice(cities).index
    # About 60% of persons are married, in pairs.
    married = rng.sample(persons, int(0.6 * len(persons)) // 2 * 2)
    for a, b in zip(married[0::2], married[1::2]):
        a.relations["spouse"] = b.index
        b.relations["spouse"] = a.index


def _decorate(rng: random.Random, by_kind: dict[str, list[Entity]]) -> None:
    """Draw the distractor attributes the passages mention."""
    persons, cities, countries = by_kind["person"], by_kind["city"], by_kind["country"]
    for person in persons:
        person.attrs.update(
            year=rng.randint(1900, 1995),
            occupation=rng.choice(OCCUPATIONS),
            studied_in=rng.choice(cities).index,
            friend=rng.choice(persons).index,
            hobby=rng.choice(HOBBIES),
        )
    for film in by_kind["film"]:
        film.attrs.update(
            year=rng.randint(1950, 2020),
            genre=rng.choice(FILM_GENRES),
            star=rng.choice(persons).index,
            filmed_in=rng.choice(cities).index,
        )
    for book in by_kind["book"]:
        book.attrs.update(
            year=rng.randint(1850, 2020),
            genre=rng.choice(BOOK_GENRES),
            dedicated_to=rng.choice(persons).index,
        )
    for company in by_kind["company"]:
        company.attrs.update(
            year=rng.randint(1850, 2015),
            industry=rng.choice(INDUSTRIES),
            office_in=rng.choice(cities).index,
        )
    for city in cities:
        city.attrs.update(
            population=rng.randint(8, 900) * 1000,
            river=rng.choice(cities).name,
            border=rng.choice(countries).index,
        )
    for country in countries:
        country.attrs.update(
            region=rng.choice(REGIONS),
            population=rng.randint(1, 60) * 100_000,
            neighbour=rng.choice(countries).index,
        )


def _other_than(rng: random.Random, pool: list[Entity], index: int) -> Entity:
    """A random entity of ``pool`` that is not entity ``index`` (pools hold at least 3 entities)."""
    while True:
        pick = rng.choice(pool)
        if pick.index != index:
            return pick


def _link_dense(rng: random.Random, by_kind: dict[str, list[Entity]]) -> None:
    """Draw the relations a ``dense`` world adds, each with a look-alike attribute naming another entity of the
    object's kind (the distributor looks like the producer, the board member like the chief executive, ...)."""
    persons, cities, companies = by_kind["person"], by_kind["city"], by_kind["company"]
    for film in by_kind["film"]:
        film.relations["producer"] = rng.choice(companies).index
        film.attrs["distributor"] = _other_than(rng, companies, film.relations["producer"]).index
    for book in by_kind["book"]:
        book.relations["publisher"] = rng.choice(companies).index
        book.relations["setting"] = rng.choice(cities).index
        book.attrs["printer"] = _other_than(rng, companies, book.relations["publisher"]).index
        book.attrs["written_in"] = _other_than(rng, cities, book.relations["setting"]).index
    for company in companies:
        company.relations["chief"] = rng.choice(persons).index
        company.attrs["board_member"] = _other_than(rng, persons, company.relations["chief"]).index
    # About 70% of persons have a mentor, drawn from a pool of about a third of the persons (never themselves).
    mentors = rng.sample(persons, max(3, len(persons) // 3))
    for person in persons:
        if rng.random() < 0.7:
            person.relations["mentor"] = _other_than(rng, mentors, person.index).index
        colleague = _other_than(rng, persons, person.index)
        if colleague.index != person.relations.get("mentor"):
            person.attrs["colleague"] = colleague.index
        if rng.random() < 0.8:
            person.relations["employer"] = rng.choice(companies).index
            person.attrs["client"] = _other_than(rng, companies, person.relations["employer"]).index
