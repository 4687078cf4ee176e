"""Names of older versions of the run config, read from files they wrote (presets, checkpoints'
config.json), in one place: :func:`migrate_legacy`.

A file that igsearch writes today carries ``config_version`` (:data:`CONFIG_VERSION`) and is read as it
is. A file without it may use the names of earlier versions, which are mapped to today's with one
warning per file that names each new spelling:

- section fields typed flat (``method: grpo``, ``rollouts_per_question: 4``) -> ``advantage.method``, ...;
- IG-Search's knobs lost their stutter (``ig.ig_beta`` -> ``ig.beta``) and the continuation scorer and
  the gold's tokenization moved to the run-level ``scoring`` section (``ig.ig_scorer`` -> ``scoring.scorer``);
- the methods' knobs left ``advantage`` (``advantage.gigpo_omega``, ``gigpo_omega`` -> ``gigpo.omega``);
- method sections held under ``methods:`` (``methods: {gigpo: {omega: 0.8}}``) -> ``gigpo.omega``.

Overrides never pass through here: they take today's spelling, and an old name gets an error naming it.
"""

from __future__ import annotations

import sys

from igsearch.config_fields import ConfigError, settable_fields

#: written into every config igsearch saves; a file without it is read through migrate_legacy
CONFIG_VERSION = 2
#: fields older versions wrote, no longer used (the tokenizer is always the model directory's)
REMOVED_FIELDS = frozenset({"tokenizer_path"})

#: IG-Search's ``ig`` section of version 1 -> today's spelling
_IG_V1 = {
    "ig_beta": "ig.beta", "ig_norm": "ig.norm", "ig_clip": "ig.clip", "span_weight": "ig.span_weight",
    "ig_n_random": "ig.n_random", "ig_head_tokens": "ig.head_tokens", "ig_head_weight": "ig.head_weight",
    "ig_max_gold_variants": "ig.max_gold_variants", "ig_max_context_tokens": "scoring.max_context_tokens",
    "ig_answer_tokens": "scoring.answer_tokens", "ig_scorer": "scoring.scorer",
}
_METHOD_KNOBS_V0 = {"gigpo_omega": "gigpo.omega", "gigpo_gamma": "gigpo.gamma", "igpo_gamma": "igpo.gamma"}
#: sections whose fields older versions also accepted flat
_FLAT_SECTIONS = ("retrieval", "generation", "rollout", "advantage", "loss")

_warned: set[str] = set()


def _renames() -> dict[str, str]:
    """Old spelling -> today's, for every name an older version wrote."""
    from igsearch.train.config import TrainConfig  # the schema; this module only knows its history

    sections = {f.name: f.default_factory for f in settable_fields(TrainConfig) if f.metadata.get("section")}
    out = {f.name: f"{s}.{f.name}" for s in _FLAT_SECTIONS for f in settable_fields(sections[s])}
    out.update(_IG_V1)
    out.update({f"ig.{old}": new for old, new in _IG_V1.items() if f"ig.{old}" != new})
    out.update(_METHOD_KNOBS_V0)
    out.update({f"advantage.{old}": new for old, new in _METHOD_KNOBS_V0.items()})
    out.update({f"advantage.{old}": _IG_V1[old] for old in ("ig_beta", "ig_norm", "ig_clip", "span_weight")})
    return out


def _warn_once(source: str, moved: list[str]) -> None:
    """One line on stderr per ``source`` naming what was read under a new name."""
    if moved and source not in _warned:
        _warned.add(source)
        print(f"{source}: written by an older igsearch; read {', '.join(moved)}", file=sys.stderr)


def legacy_name(name: str) -> str | None:
    """Today's spelling of ``name`` if an older version used it, else None."""
    return _renames().get(name)


def _flatten(data: dict) -> dict:
    """Nested sections (and the ``methods:`` holder of method sections) as dotted names."""
    flat: dict = {}
    for key, value in data.items():
        key = str(key)
        if key == "methods" and isinstance(value, dict):
            for method, options in value.items():
                flat.update({f"{method}.{k}": v for k, v in (options or {}).items()})
        elif isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def migrate_legacy(data: dict, source: str) -> dict:
    """``data`` (a file's mapping) with the names of older versions replaced by today's, dotted; warns once
    per file on stderr, naming the new spellings. A mapping with today's ``config_version`` is returned as is
    (without the version key)."""
    data = dict(data)
    version = data.pop("config_version", None)
    if version == CONFIG_VERSION:
        return data
    if version is not None and (not isinstance(version, int) or version > CONFIG_VERSION):
        raise ConfigError(f"{source}: field 'config_version': {version!r} is not a version this igsearch reads "
                          f"(it writes {CONFIG_VERSION}); upgrade igsearch")
    renames = _renames()
    out: dict = {}
    moved: list[str] = []
    for key, value in _flatten(data).items():
        if key in REMOVED_FIELDS:
            moved.append(f"{key} (no longer used, ignored)")
            continue
        new = renames.get(key, key)
        if new != key:
            moved.append(f"{key} -> {new}")
        out[new] = value
    _warn_once(source, moved)
    return out


def migrate_overrides(overrides, source: str) -> list[str]:
    """``key=value`` overrides stored by an older version (e.g. a study's run records) with today's keys;
    warns once per ``source`` like :func:`migrate_legacy`."""
    renames = _renames()
    out, moved = [], []
    for text in overrides:
        key, sep, value = str(text).partition("=")
        new = renames.get(key.strip(), key.strip())
        if new != key.strip():
            moved.append(f"{key.strip()} -> {new}")
        out.append(f"{new}{sep}{value}")
    _warn_once(source, moved)
    return out
