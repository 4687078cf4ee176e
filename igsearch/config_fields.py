"""Configuration dataclasses and their loader: documented fields, typed values, YAML presets and
``key=value`` overrides, errors of one line that name the file and the field.

Each module that owns settings declares them in its own dataclass with :func:`config_field` (default +
help text) and a ``validate(where)`` method. A root dataclass (``igsearch.train.config.TrainConfig``)
holds run-level fields and *sections*: fields marked ``metadata["section"]`` whose value is such a
dataclass, plus sections registered at run time (the methods' own, through a :class:`Schema`'s
``extra_sections``). :class:`Schema` reads them:

- a field has one spelling: ``name`` for a run-level field, ``section.field`` for a section's, in an
  override (``lr=1e-6``, ``ig.beta=0.3``) and in a file either dotted or nested (``ig: {beta: 0.3}``);
- values are typed by the field: int / float / bool / str / list / optional (``none``);
- a preset may start from another: ``base: tiny-cpu.yaml`` (relative to it) is read first;
- a file may be passed through the schema's ``migrate(data, source)`` first (names of older versions);
  overrides never are.

Why not OmegaConf's structured configs: the methods' sections are registered by plug-ins at import
time, names of older versions must be mapped before typing, and every error must be one line naming
file and field; OmegaConf's errors span several lines with their own key paths. This module is small
enough to own.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml


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


def settable_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of dataclass ``cls`` a file or override may set (not those marked ``settable: False``)."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("settable", True)]


# ------------------------------------------------------------------------------------------------
# Typed values

_TRUE = {"true", "yes", "on", "1", "y"}
_FALSE = {"false", "no", "off", "0", "n"}
_NONE = {"none", "null", "~", ""}


class Mismatch(Exception):
    """A value that cannot be read as the field's type (turned into a ConfigError by the caller)."""


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def type_name(tp: Any) -> str:
    """``int | None`` -> "an int or none" (for error messages and ``describe``)."""
    base, optional = _unwrap_optional(tp)
    if typing.get_origin(base) is list:
        (inner,) = typing.get_args(base) or (str,)
        name = f"a list of {type_name(inner)}s"
    else:
        name = {int: "an int", float: "a float", bool: "a bool (true/false)", str: "a string"}.get(
            base, getattr(base, "__name__", str(base)))
    return f"{name} or none" if optional else name


def _coerce_list(value: Any, inner: Any) -> list:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = yaml.safe_load(text)
            except yaml.YAMLError:
                raise Mismatch from None
        else:
            value = [p.strip() for p in text.split(",") if p.strip()]
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list):
        value = [value]
    return [coerce_value(v, inner) for v in value]


def _coerce_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise Mismatch


def _coerce_int(value: Any) -> int:
    if isinstance(value, bool):
        raise Mismatch
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip().replace("_", ""))
        except ValueError:
            try:
                f = float(value)
            except ValueError:
                raise Mismatch from None
            if f.is_integer():
                return int(f)
    raise Mismatch


def _coerce_float(value: Any) -> float:
    if isinstance(value, bool):
        raise Mismatch
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())  # PyYAML reads "1e-6" (no dot) as a string
        except ValueError:
            raise Mismatch from None
    raise Mismatch


def _coerce_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise Mismatch


_COERCE = {bool: _coerce_bool, int: _coerce_int, float: _coerce_float, str: _coerce_str}


def coerce_value(value: Any, tp: Any) -> Any:
    """``value`` (from YAML or an override string) converted to type ``tp``; raises Mismatch."""
    base, optional = _unwrap_optional(tp)
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in _NONE):
        if optional:
            return None
        raise Mismatch
    if typing.get_origin(base) is list:
        (inner,) = typing.get_args(base) or (str,)
        return _coerce_list(value, inner)
    return _COERCE[base](value) if base in _COERCE else value


# ------------------------------------------------------------------------------------------------
# Files and overrides


def parse_override(text: str) -> tuple[str, str]:
    """``"key=value"`` -> (key, value); the key may use dashes for underscores."""
    key, sep, value = text.partition("=")
    key = key.strip().lstrip("-").replace("-", "_")
    if not sep or not key:
        raise ConfigError(f"override {text!r}: expected key=value, e.g. lr=1e-6")
    return key, value.strip()


def read_yaml_mapping(path: Path) -> dict:
    """The mapping of the YAML file ``path`` (empty file: {}); ConfigError of one line otherwise."""
    source = str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {' '.join(str(e).split())}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{source}: not UTF-8 text (byte {e.start}: {e.reason})") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply to be a config (expected a mapping of field: value)") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of field: value, got {type(data).__name__}")
    return data


def preset_chain(path: Path, chain: tuple[Path, ...] = ()) -> list[tuple[str, dict]]:
    """(source, mapping) of the preset ``path`` and of the presets it names as ``base:`` (a path relative to
    it), base first, so a preset states only what it changes. ``base`` is removed from the mappings."""
    source = str(path)
    if not path.is_file():
        raise ConfigError(f"{source}: config file not found" + (f" (the base of {chain[-1]})" if chain else ""))
    if path.resolve() in chain or len(chain) > 8:
        raise ConfigError(f"{source}: presets name each other as base in a cycle: "
                          + " -> ".join(str(p) for p in [*chain, path]))
    data = read_yaml_mapping(path)
    base = data.pop("base", None)
    if base is None:
        return [(source, data)]
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"{source}: field 'base': expected the path of another preset, got {base!r}")
    return [*preset_chain(path.parent / base, (*chain, path.resolve())), (source, data)]


# ------------------------------------------------------------------------------------------------
# The schema


@functools.lru_cache(maxsize=32)
def _types(root: type, run_fields: tuple[str, ...], sections: tuple[tuple[str, type], ...]) -> dict[str, Any]:
    """:meth:`Schema.types`, cached: ``typing.get_type_hints`` of every section is what loading a file costs."""
    hints = typing.get_type_hints(root)
    out = {name: hints[name] for name in run_fields}
    for section, cls in sections:
        hints = typing.get_type_hints(cls)
        out.update({f"{section}.{g.name}": hints[g.name] for g in settable_fields(cls)})
    return out


class Schema:
    """Reads values for the root dataclass ``root`` (module docstring).

    ``extra_sections()``: name -> dataclass of the sections registered at run time, held in the root's
    field ``holder`` as a dict name -> instance. ``hint(name)``: the name of today's field an unknown name
    stood for in older versions, or None (for the unknown-field error). ``migrate(data, source)``: a file's
    mapping with the names of older versions replaced (never applied to overrides).
    """

    def __init__(self, root: type, *, holder: str | None = None,
                 extra_sections: Callable[[], dict[str, type]] = dict,
                 hint: Callable[[str], str | None] = lambda name: None,
                 migrate: Callable[[dict, str], dict] = lambda data, source: data):
        self.root, self.holder = root, holder
        self.extra_sections, self.hint, self.migrate = extra_sections, hint, migrate
        self.fixed = {f.name: f.default_factory for f in dataclasses.fields(root) if f.metadata.get("section")}
        self.run_fields = [f for f in settable_fields(root) if f.name not in self.fixed and f.name != holder]

    def sections(self) -> dict[str, type]:
        """Section name -> dataclass, fixed and registered."""
        return {**self.fixed, **self.extra_sections()}

    def fields(self) -> dict[str, dataclasses.Field]:
        """Spelling -> Field of every settable field: run-level by name, section fields as ``section.field``."""
        out = {f.name: f for f in self.run_fields}
        for section, cls in self.sections().items():
            out.update({f"{section}.{g.name}": g for g in settable_fields(cls)})
        return out

    def types(self) -> dict[str, Any]:
        """Spelling -> type of every settable field (resolved once per set of sections: a plug-in may add one)."""
        return _types(self.root, tuple(f.name for f in self.run_fields), tuple(self.sections().items()))

    def unknown(self, source: str, name: str) -> ConfigError:
        """The error for a field nobody declares, with today's spelling or the closest names."""
        new = self.hint(name)
        if new is not None:
            return ConfigError(f"{source}: unknown field {name!r}; it is {new!r} now")
        close = difflib.get_close_matches(name, list(self.fields()), n=3, cutoff=0.6)
        hint = (f"; did you mean {', '.join(repr(c) for c in close)}?" if close
                else "; see `igsearch train --help` for the known fields")
        return ConfigError(f"{source}: unknown field {name!r}{hint}")

    def set_value(self, values: dict[str, Any], source: str, name: str, raw: Any) -> None:
        """Type ``raw`` for the field spelt ``name`` into ``values``."""
        types_ = self.types()
        if name not in types_:
            raise self.unknown(source, name)
        try:
            values[name] = coerce_value(raw, types_[name])
        except Mismatch:
            raise ConfigError(f"{source}: field {name!r}: expected {type_name(types_[name])}, got {raw!r}") from None

    def read(self, values: dict[str, Any], source: str, data: dict) -> None:
        """Every field of a mapping (a file's, after ``migrate``), dotted or nested under its section."""
        sections = self.sections()
        for name, raw in data.items():
            name = str(name)
            if name in sections and isinstance(raw, dict):
                for sub, sub_raw in raw.items():
                    self.set_value(values, source, f"{name}.{sub}", sub_raw)
            else:
                self.set_value(values, source, name, raw)

    def build(self, values: dict[str, Any]) -> Any:
        """The root instance from ``set_value``'s values (fields not given keep their defaults)."""
        top = {k: v for k, v in values.items() if "." not in k}

        def section(name: str, cls: type) -> Any:
            prefix = name + "."
            return cls(**{k[len(prefix):]: v for k, v in values.items() if k.startswith(prefix)})

        top.update({name: section(name, cls) for name, cls in self.fixed.items()})
        if self.holder:
            top[self.holder] = {name: section(name, cls) for name, cls in self.extra_sections().items()}
        return self.root(**top)

    def load(self, path: str | Path | None, overrides: Iterable[str] = ()) -> Any:
        """The root from the preset ``path`` (with its ``base:`` chain; None = the defaults), then the
        ``key=value`` overrides."""
        values: dict[str, Any] = {}
        if path is not None:
            for source, data in preset_chain(Path(path)):
                self.read(values, source, self.migrate(data, source))
        for text in overrides:
            key, raw = parse_override(text)
            self.set_value(values, f"override {text!r}", key, raw)
        return self.build(values)

    def describe(self) -> str:
        """One line per field: spelling, type, default and help."""
        types_ = self.types()
        lines = []
        for name, f in self.fields().items():
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            lines.append(f"{name} ({type_name(types_[name])}, default {default!r}): {f.metadata['help']}")
        return "\n".join(lines)
