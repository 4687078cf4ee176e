"""Saved retrieval indexes: where they live, whether they still match the corpus, atomic writes.

An index folder holds the index files plus ``meta.json``. The meta records everything the index
depends on (the corpus fingerprint, the retriever settings) and the size and SHA-256 of every index
file; an index whose meta differs from what is wanted, or whose files do not match it (truncated,
corrupted), is stale and gets rebuilt. The files are fsynced and ``meta.json`` is written last, so
a half-written folder is never taken for a finished index.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

from igsearch.integrity import check_manifest, file_manifest, fsync_tree

META_FILE = "meta.json"
_FULL_HASH_LIMIT = 1 << 30  # hash whole corpora up to 1 GiB; fingerprint bigger ones cheaply
_CHUNK = 1 << 20


def corpus_fingerprint(path) -> str:
    """A digest that changes when the corpus file changes.

    Files up to 1 GiB are hashed whole (sha256); bigger ones (e.g. Wikipedia) by size, mtime and
    their first and last MiB, so that checking a 14 GB corpus stays instant.
    """
    path = Path(path)
    stat = path.stat()
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        if stat.st_size <= _FULL_HASH_LIMIT:
            for block in iter(lambda: handle.read(_CHUNK), b""):
                digest.update(block)
            return f"sha256:{digest.hexdigest()}"
        digest.update(handle.read(_CHUNK))
        handle.seek(stat.st_size - _CHUNK)
        digest.update(handle.read(_CHUNK))
    return f"sample-sha256:{stat.st_size}:{stat.st_mtime_ns}:{digest.hexdigest()}"


def read_meta(index_dir) -> dict | None:
    """The meta of the finished index in ``index_dir``; ``None`` if there is none (or it is bad)."""
    try:
        return json.loads((Path(index_dir) / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_fresh(index_dir, wanted_meta: dict) -> bool:
    """Whether ``index_dir`` holds a finished, intact index built with exactly ``wanted_meta``."""
    meta = read_meta(index_dir)
    if not isinstance(meta, dict):
        return False
    files = meta.pop("files", None)
    if meta != json.loads(json.dumps(wanted_meta)) or not isinstance(files, dict):
        return False
    return check_manifest(index_dir, files) is None


def write_index_atomically(index_dir, meta: dict, write: Callable[[Path], None]) -> None:
    """Build into a temporary sibling with ``write(folder)``, add the meta, then swap it in."""
    from igsearch.io import atomic_write_dir

    def build(tmp: Path) -> None:
        write(tmp)
        full = {**meta, "files": file_manifest(tmp, skip=(META_FILE,))}
        (tmp / META_FILE).write_text(json.dumps(full, indent=2) + "\n", encoding="utf-8")
        fsync_tree(tmp)

    atomic_write_dir(index_dir, build)
