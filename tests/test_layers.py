"""Imports point downstream only (docs/DESIGN.md section 2): parsed from the source, lazy imports included.

Each top-level part of ``igsearch`` sits in one layer of :data:`LAYERS`; a module may import its own part
and the parts of lower layers, never a part of its own layer or above. ``kernels/`` (``igsearch_kernels``)
never imports ``igsearch``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: lowest first; parts in one tuple are independent of each other
LAYERS: list[tuple[str, ...]] = [
    ("config_fields", "io", "threads"),
    ("integrity", "machine"),
    ("precision", "measure"),
    ("data",),
    ("retrieval",),
    ("world",),
    ("policy",),
    ("scoring",),
    ("rollout",),
    ("ig",),
    ("algo",),
    ("methods", "evaluation", "stats"),
    ("train",),
    ("warmstart",),
    ("demo",),
    ("cli", "integrations"),
]
LEVEL = {part: i for i, layer in enumerate(LAYERS) for part in layer}


def part_of(module: str) -> str | None:
    """``igsearch.train.sft`` -> ``train``; ``igsearch`` itself and other packages -> None."""
    parts = module.split(".")
    return parts[1] if parts[0] == "igsearch" and len(parts) > 1 else None


def imports_of(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, imported module) of every import in ``path``, relative ones resolved."""
    out = []
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            names = [name] + ([f"{name}.{a.name}" for a in node.names] if name == "igsearch" else [])
            out.extend((node.lineno, n) for n in names)
        elif isinstance(node, ast.Import):
            out.extend((node.lineno, a.name) for a in node.names)
    return out


def upward_imports() -> list[str]:
    bad = []
    for path in sorted((ROOT / "igsearch").rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        mine = part_of(module)
        if mine is None:
            continue
        assert mine in LEVEL, f"{rel}: part {mine!r} is in no layer of tests/test_layers.py"
        for line, name in imports_of(path, module):
            theirs = part_of(name)
            if theirs is None or theirs == mine:
                continue
            assert theirs in LEVEL, f"{rel}:{line}: imports {name}, whose part is in no layer"
            if LEVEL[theirs] >= LEVEL[mine]:
                bad.append(f"{rel}.py:{line}: {mine} imports {name} ({theirs} is not below it)")
    return bad


def test_no_import_runs_back_up():
    assert upward_imports() == []


def test_kernels_never_import_igsearch():
    for path in sorted((ROOT / "kernels").rglob("*.py")):
        for line, name in imports_of(path, "igsearch_kernels." + path.stem):
            assert name.split(".")[0] != "igsearch", f"{path.relative_to(ROOT)}:{line}: imports {name}"


def test_the_check_finds_an_upward_import(tmp_path, monkeypatch):
    """The test above can fail: an import of train from scoring is reported."""
    fake = tmp_path / "igsearch" / "scoring"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("def f():\n    from igsearch.train.trainer import Trainer\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    assert upward_imports() == ["igsearch/scoring/bad.py:2: scoring imports igsearch.train.trainer "
                                "(train is not below it)"]
