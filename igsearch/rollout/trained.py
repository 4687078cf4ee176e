"""The rollout settings a model folder was trained under, kept in the folder, and read back as defaults.

Every model folder igsearch writes (the SFT warm start, each RL checkpoint's model, the demo's) holds
``rollout_settings.json`` with the fields of :data:`TRAINED_FIELDS`: the prompt template, passages per
search, turns, tokens per turn and per response, and the cut of injected documents. A policy trained
with 2 passages per search and evaluated with 3 is a different agent (measured: dev EM 0.817 at the
trained settings, 0.033 at ``igsearch eval``'s old defaults), so ``igsearch eval``, ``igsearch train``
and the studies take these as their defaults; a value given explicitly that differs from the trained
one is announced in one line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Mapping

SETTINGS_FILE = "rollout_settings.json"
#: field -> type; ``template`` is a template name, the rest are RolloutConfig fields
TRAINED_FIELDS: dict[str, type] = {"template": str, "topk": int, "max_turns": int, "max_new_tokens_per_turn": int,
                                   "max_response_tokens": int, "max_doc_tokens": int}


class TrainedSettingsError(ValueError):
    """A model folder's rollout_settings.json that cannot be read (the message names file and field)."""


def write_rollout_settings(model_dir, settings: Mapping, source: str) -> Path:
    """Write ``model_dir/rollout_settings.json`` with the :data:`TRAINED_FIELDS` of ``settings`` and
    ``source`` (what trained the folder: "sft", "rl step 20", ...)."""
    from igsearch.io import atomic_write_json

    missing = [k for k in TRAINED_FIELDS if k not in settings]
    if missing:
        raise ValueError(f"rollout settings lack {missing}")
    body = {k: TRAINED_FIELDS[k](settings[k]) for k in TRAINED_FIELDS}
    return atomic_write_json(Path(model_dir) / SETTINGS_FILE, {**body, "source": source})


def read_rollout_settings(model_dir) -> dict:
    """The trained settings of ``model_dir`` ({} when the folder has none, e.g. a model from elsewhere)."""
    path = Path(model_dir) / SETTINGS_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise TrainedSettingsError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(data, dict):
        raise TrainedSettingsError(f"{path}: expected an object of settings")
    out = {}
    for key, kind in TRAINED_FIELDS.items():
        if key not in data:
            continue
        value = data[key]
        if kind is int and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise TrainedSettingsError(f"{path}: field {key!r}: expected a non-negative integer, got {value!r}")
        if kind is str and not isinstance(value, str):
            raise TrainedSettingsError(f"{path}: field {key!r}: expected a string, got {value!r}")
        out[key] = value
    return out


def resolve_settings(trained: Mapping, given: Mapping, defaults: Mapping,
                     announce: Callable[[str], None] = print) -> dict:
    """Per field: the value ``given`` explicitly (announced when it differs from the trained one), else the
    trained one, else the default. Fields outside :data:`TRAINED_FIELDS` pass through from ``given``/``defaults``."""
    out = {**defaults}
    for key in TRAINED_FIELDS:
        if key in given and given[key] is not None:
            out[key] = given[key]
            if key in trained and trained[key] != given[key]:
                announce(f"{key}={given[key]} overrides the value the model was trained with ({trained[key]})")
        elif key in trained:
            out[key] = trained[key]
    for key, value in given.items():
        if key not in TRAINED_FIELDS and value is not None:
            out[key] = value
    return out
