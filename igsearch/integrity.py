"""File manifests: the size and SHA-256 of every file of a folder, to tell a complete, intact folder
(a checkpoint, a saved index) from a truncated or corrupted one before loading it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def file_manifest(folder: str | os.PathLike, *, skip: tuple[str, ...] = ()) -> dict[str, dict]:
    """Relative path -> ``{"bytes", "sha256"}`` of every file under ``folder`` (names in ``skip`` left out)."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name not in skip}


def check_manifest(folder: str | os.PathLike, files: dict[str, dict]) -> str | None:
    """None when every file of ``files`` is in ``folder`` with its size and SHA-256; else what is wrong."""
    folder = Path(folder)
    try:
        for rel, want in files.items():
            f = folder / rel
            if not f.is_file():
                return f"{rel} is missing"
            size = f.stat().st_size
            if size != want["bytes"]:
                return f"{rel} has {size} bytes, the manifest says {want['bytes']} (truncated?)"
            if sha256_file(f) != want["sha256"]:
                return f"{rel} does not match its SHA-256 in the manifest (corrupted)"
    except (AttributeError, KeyError, TypeError) as e:
        return f"malformed manifest ({type(e).__name__}: {e})"
    return None


def fsync_tree(root: str | os.PathLike) -> None:
    """fsync every file and folder under ``root`` (so that a rename publishes durable contents)."""
    from igsearch.io import fsync_dir

    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(dirpath)
