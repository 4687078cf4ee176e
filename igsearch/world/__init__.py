"""The synthetic multi-hop world: invented entities, one passage each, 1-3 hop questions.

- :func:`build_world` writes ``corpus.jsonl``, ``train/dev/test.jsonl`` (+ parquet) and
  ``manifest.json`` for a seed (same seed, same bytes);
- :func:`oracle_response` writes the trajectory an ideal search agent would produce;
- :func:`world_texts` yields the world's text to train a tokenizer on.
"""

from .build import DEFAULT_ENTITIES, DEFAULT_SPLITS, WORLD_VERSION, build_world
from .oracle import NO_INFORMATION, oracle_response, oracle_texts
from .texts import world_texts

__all__ = [
    "DEFAULT_ENTITIES", "DEFAULT_SPLITS", "NO_INFORMATION", "WORLD_VERSION", "build_world",
    "oracle_response", "oracle_texts", "world_texts",
]
