"""Invented names built from a small syllable inventory.

Every name word is unique within a world, so a name's words point at exactly one passage and no
real-world knowledge helps. The inventory is small on purpose: a tiny BPE tokenizer trained on the
world text learns the syllables and spells every name with a few tokens.
"""

from __future__ import annotations

import random
from typing import Iterable

#: The syllables every invented word is made of (none is an English stopword on its own,
#: and no concatenation of two or three of them is a common English word we care about).
SYLLABLES = (
    "bal", "bren", "cor", "dal", "dor", "dra", "el", "fen", "gar", "hal",
    "ith", "kal", "kor", "lan", "lor", "mar", "mir", "nor", "nes", "or",
    "pel", "quin", "ral", "ren", "sar", "sel", "tor", "tha", "ul", "val",
    "ven", "vor", "wyn", "zar", "zel", "mo", "ka", "ri", "sa", "to",
)

#: Words that must never be produced (they would read as English and confuse the questions).
_FORBIDDEN = frozenset({"moral", "coral", "tomor", "sator", "karma", "salor", "sardor", "mortor"})


class NameMaker:
    """Draws fresh capitalised words (2 or 3 syllables) that were never handed out before."""

    def __init__(self, rng: random.Random, max_tries: int = 10_000, reserved: Iterable[str] = ()):
        self._rng = rng
        self._used: set[str] = {w.lower() for w in reserved}  # reserved words are never handed out
        self._max_tries = max_tries

    def word(self) -> str:
        """A new invented word of five or more letters, e.g. ``"Velmora"``; never given twice."""
        for _ in range(self._max_tries):
            n_syllables = 2 if self._rng.random() < 0.6 else 3
            word = "".join(self._rng.choice(SYLLABLES) for _ in range(n_syllables))
            if len(word) < 5 or word in self._used or word in _FORBIDDEN:
                continue
            self._used.add(word)
            return word.capitalize()
        raise RuntimeError(
            f"the syllable inventory is exhausted after {len(self._used)} words; "
            "build a smaller world"
        )

    def person(self) -> tuple[str, str]:
        """``(first, last)`` name words of a new person."""
        return self.word(), self.word()
