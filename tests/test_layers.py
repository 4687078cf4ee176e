"""Imports point downstream only (docs/DESIGN.md section 2): parsed from the source, lazy imports included.

Each top-level part of ``igsearch`` sits in one layer of :data:`LAYERS`; a module may import its own part
and the parts of lower layers, never a part of its own layer or above. ``kernels/`` (``igsearch_kernels``)
never imports ``igsearch``.

Above the package sit the scripts: ``bench/`` (benchmarks) and ``studies/`` (measurements of learning).
The package imports neither; a study may import the package and other studies; a benchmark the package
and other benchmarks, never a study. They import the installed package and each other as scripts
(a script's own folder is on ``sys.path``), so none of them touches ``sys.path`` or ``PYTHONPATH``.
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


#: the script folders, and the script folders each may import besides the package (``igsearch`` and
#: ``igsearch_kernels``) and third-party modules
SCRIPT_FOLDERS = ("bench", "studies")
MAY_IMPORT: dict[str, tuple[str, ...]] = {"igsearch": (), "bench": ("bench",), "studies": ("studies",)}


def script_owners() -> dict[str, str]:
    """Import name -> the script folder it belongs to: each script's name (a script imports another as
    ``from step_overhead import ...``) and the folder's own name (``import bench.x``)."""
    owners = {folder: folder for folder in SCRIPT_FOLDERS}
    for folder in SCRIPT_FOLDERS:
        for path in (ROOT / folder).glob("*.py"):
            owners[path.stem] = folder
    return owners


def python_files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def script_import_violations() -> list[str]:
    """Imports of a script folder from where :data:`MAY_IMPORT` does not allow them."""
    owners = script_owners()
    bad = []
    for mine in ("igsearch", *SCRIPT_FOLDERS):
        for path in python_files(mine):
            rel = path.relative_to(ROOT).with_suffix("")
            module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
            for line, name in imports_of(path, module):
                theirs = owners.get(name.split(".")[0])
                if theirs is not None and theirs not in MAY_IMPORT[mine]:
                    bad.append(f"{rel}.py:{line}: {mine} imports {name} (from {theirs}/)")
    return bad


def path_edits() -> list[str]:
    """Every use of ``sys.path`` (also through ``from sys import path`` or an alias of ``sys``),
    ``site.addsitedir`` or ``PYTHONPATH`` in bench/ and studies/."""
    bad = []
    for folder in SCRIPT_FOLDERS:
        for path in python_files(folder):
            tree = ast.parse(path.read_text())
            sys_names = {"sys"} | {a.asname for n in ast.walk(tree) if isinstance(n, ast.Import)
                                   for a in n.names if a.name == "sys" and a.asname}
            for node in ast.walk(tree):
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and (
                        (node.value.id in sys_names and node.attr == "path")
                        or (node.value.id == "site" and node.attr == "addsitedir")):
                    what = f"{node.value.id}.{node.attr}"
                elif isinstance(node, ast.ImportFrom) and node.module in ("sys", "site") and any(
                        a.name in ("path", "addsitedir") for a in node.names):
                    what = f"from {node.module} import " + ", ".join(a.name for a in node.names)
                elif isinstance(node, ast.Constant) and node.value == "PYTHONPATH":
                    what = "PYTHONPATH"
                else:
                    continue
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: {what}")
    return bad


def test_scripts_import_only_downstream():
    assert script_import_violations() == []


def test_scripts_leave_the_import_path_alone():
    assert path_edits() == []


def test_the_script_checks_find_violations(tmp_path, monkeypatch):
    """The two tests above can fail: the package importing a benchmark, a benchmark importing a study, a
    study inserting into sys.path are each reported."""
    for folder in ("igsearch", *SCRIPT_FOLDERS):
        (tmp_path / folder).mkdir()
    (tmp_path / "bench" / "step_overhead.py").write_text("from replicate import prepare\n")
    (tmp_path / "studies" / "replicate.py").write_text(
        "import sys as s\nfrom pathlib import Path\n\ns.path.insert(0, str(Path(__file__).parent))\n"
        "from step_overhead import main\n")
    (tmp_path / "studies" / "rl_probe.py").write_text("import os\nfrom replicate import prepare\n"
                                                      "os.environ['PYTHONPATH'] = '.'\n")
    (tmp_path / "igsearch" / "demo.py").write_text("def f():\n    import bench.step_overhead\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    assert script_import_violations() == [
        "igsearch/demo.py:2: igsearch imports bench.step_overhead (from bench/)",
        "bench/step_overhead.py:1: bench imports replicate (from studies/)",
        "studies/replicate.py:5: studies imports step_overhead (from bench/)",
    ]
    assert path_edits() == ["studies/replicate.py:4: s.path", "studies/rl_probe.py:3: PYTHONPATH"]

