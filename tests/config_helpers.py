"""Tests build configs from keywords: ``config_overrides(steps=2, method="grpo", scorer="vllm")``.

A keyword is a run-level field, or the name of a section field that exactly one section has
(``method`` -> ``advantage.method``), or ``section__field`` for any (``ig__beta`` -> ``ig.beta``); the result is
a list of ``key=value`` overrides in today's spellings, the only ones ``load_config`` takes.
"""

from __future__ import annotations

from igsearch.train.config import config_fields


def spelling(keyword: str) -> str:
    """The dotted spelling of a keyword (module docstring); KeyError when none or several match."""
    if "__" in keyword:
        return keyword.replace("__", ".")
    fields = config_fields()
    if keyword in fields:
        return keyword
    matches = [name for name in fields if name.split(".", 1)[-1] == keyword]
    if len(matches) != 1:
        raise KeyError(f"config keyword {keyword!r} matches {matches or 'no field'}")
    return matches[0]


def config_overrides(**values) -> list[str]:
    return [f"{spelling(k)}={v}" for k, v in values.items()]
