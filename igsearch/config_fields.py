"""Pieces every configuration dataclass of the package uses: documented fields and the error type.

Each module that owns settings declares them in its own dataclass with ``config_field`` (default +
help text) and a ``validate(where)`` method; ``igsearch.train.config.TrainConfig`` nests those
sections and loads them from YAML and ``key=value`` overrides.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any


class ConfigError(ValueError):
    """A configuration value that is missing, of the wrong type or out of range."""


def config_field(default: Any, help: str, **metadata: Any) -> Any:
    """A dataclass field with its documentation attached (``metadata["help"]``)."""
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **metadata})
    return field(default=default, metadata={"help": help, **metadata})


def check_choice(where: str, name: str, value: Any, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{where}: field {name!r}: expected one of {list(allowed)}, got {value!r}")


def check_range(where: str, name: str, value: float, *, low: float | None = None, high: float | None = None,
                low_open: bool = False) -> None:
    """``low <= value <= high`` (``low < value`` with ``low_open``), else ConfigError naming the field."""
    bad = (low is not None and (value <= low if low_open else value < low)) or (high is not None and value > high)
    if bad:
        lo = "" if low is None else (f"> {low}" if low_open else f">= {low}")
        hi = "" if high is None else f"<= {high}"
        raise ConfigError(f"{where}: field {name!r}: must be {' and '.join(x for x in (lo, hi) if x)}, got {value}")
