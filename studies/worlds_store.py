"""The worlds study's results kept in the repository, so a new checkout reports and resumes without retraining.

``runs/`` (warm starts, run folders) is not committed and a new checkout starts without it; the study takes
about 13 core-hours (4 warm starts, 36 runs). So every finished run's record, cut to what the reports read,
and every world's warm-start evaluation are also kept beside the study's page (``studies/results/worlds`` keeps
them in ``studies/results/worlds_records/``, a power try's page ``<out>`` in ``<out>_records/``)::

    world<w>/setup.json                 the warm start's settings key, paths, world manifest, dev/test metrics
    world<w>/<method>-seed<s>.json.gz   one run: its config, evaluations, step metrics and probes (cut)

Paths inside are stored relative to the world's work folder (``{work}``) and put back for the checkout that
reads them. A record is reused only when its config matches the run's (studies/replicate.py's identity check),
and a warm start rebuilt on another machine must score what the stored one scored on every split and hop
count before its runs are pooled with the stored ones (:meth:`WorldRecords.check_rebuilt`).
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

from igsearch.io import atomic_write_bytes, atomic_write_text

WORK = "{work}"
#: the per-step metrics and probe fields the reports read (studies/worlds_report.py, replication_report.py)
STEP_KEYS = ("step", "wall_s", "time/step", "time/train_elapsed", "reward/mean", "groups/all_fail_frac",
             "ig/mean", "ig/std", "ig/positive_frac", "ig/scored_frac")
PROBE_KEYS = ("step", "n_all_fail", "n_groups", "grad_norm", "seconds", "search_credit")


def records_dir(out: Path) -> Path:
    """Where the records of the study whose page is ``out`` (a path prefix, e.g. studies/results/worlds) live."""
    return Path(f"{out}_records")


def _swap(obj, old: str | tuple[str, ...], new: str):
    """``obj`` (JSON-like) with the path ``old`` (or each of several, tried in order) replaced by ``new`` in
    every string, only as a whole path: not inside a longer name (``/a/world2`` in ``/a/world20``) nor at the end
    of a longer path (``runs/w`` in ``/elsewhere/runs/w``)."""
    alternatives = "|".join(re.escape(o) for o in ((old,) if isinstance(old, str) else old))
    pattern = re.compile(rf"(?<![\w.\-/])(?:{alternatives})(?![\w.\-])")

    def swap(v):
        if isinstance(v, str):
            return pattern.sub(lambda _: new, v)
        if isinstance(v, list):
            return [swap(x) for x in v]
        if isinstance(v, dict):
            return {k: swap(x) for k, x in v.items()}
        return v

    return swap(obj)


def cut_record(rec: dict) -> dict:
    """The parts of a studies/replicate.py record the reports read: config, overrides, evaluations, the CPU it
    was trained on, and of the step metrics and probes only :data:`STEP_KEYS` and :data:`PROBE_KEYS`."""
    return {"config": rec["config"], "overrides": rec["overrides"], "evals": rec["evals"], "cpu": rec.get("cpu"),
            "steps": [{k: m[k] for k in STEP_KEYS if k in m} for m in rec["steps"]],
            "probes": [{k: p[k] for k in PROBE_KEYS if k in p} for p in rec["probes"]]}


class WorldRecords:
    """The stored results of one world of the study, whose work folder in this checkout is ``root``."""

    def __init__(self, store: Path, world_seed: int, root: Path):
        self.dir = Path(store) / f"world{world_seed}"
        self.world_seed, self.root = world_seed, Path(root)

    def _to_store(self, obj):
        # the runs may have written the work folder as given or resolved (absolute): both become {work};
        # the longer first, so a relative form inside the absolute one is not swapped half-way
        forms = sorted({str(self.root), str(self.root.resolve())}, key=len, reverse=True)
        return _swap(obj, tuple(forms), WORK)

    def _from_store(self, obj):
        return _swap(obj, WORK, str(self.root))

    # ------------------------------------------------------------------ the warm start

    def setup(self, key: dict) -> dict | None:
        """The stored warm start of settings ``key``: ``{"sft", "world"}`` (paths in this checkout, which may
        not exist), ``"manifest"`` and ``"warm_start"`` (``{split: metrics}``); None when none is stored or its
        settings differ."""
        path = self.dir / "setup.json"
        if not path.exists():
            return None
        stored = self._from_store(json.loads(path.read_text()))
        if stored.get("key") != key:
            return None
        return {**stored, "sft": Path(stored["sft"]), "world": Path(stored["world"])}

    def save_setup(self, key: dict, sft: Path, world: Path, manifest: dict, warm_start: dict,
                   cpu: str | None = None) -> None:
        """Store the warm start of settings ``key``; refused when one of other settings is stored with runs
        (they would be orphaned)."""
        path = self.dir / "setup.json"
        if path.exists() and self.setup(key) is None and self.stored_runs():
            raise SystemExit(f"worlds: {path} holds a warm start of other settings than this run's; pass another "
                             f"--records-dir (or --out), or move {self.dir} aside to start this world over")
        doc = {"key": key, "sft": str(sft), "world": str(world), "manifest": manifest, "warm_start": warm_start,
               "cpu": cpu}
        atomic_write_text(self.dir / "setup.json", json.dumps(self._to_store(doc), indent=1, sort_keys=True))

    def check_rebuilt(self, key: dict, warm_start: dict) -> None:
        """Refuse to pool runs of a warm start built here with the stored runs of another build of the same
        settings unless both score the same on every split and hop count (with no stored runs the new build
        simply replaces the stored one). fp32 builds were the same on the
        AVX-512 CPUs measured (Xeon, EPYC Zen 4 and Zen 5) but not on an AVX2-only EPYC Zen 3 (world 0: test EM
        0.533 there, 0.505 on Zen 4): a world's runs must all start from one build."""
        stored = self.setup(key)
        if stored is None or not self.stored_runs():  # nothing to pool with: the new build replaces it
            return
        old, new = stored["warm_start"], warm_start
        for split in sorted(set(old) | set(new)):
            for source in sorted(set(old.get(split, {})) | set(new.get(split, {}))):
                a = old.get(split, {}).get(source, {}).get("em")
                b = new.get(split, {}).get(source, {}).get("em")
                if a != b:
                    raise SystemExit(
                        f"worlds: the warm start of world {self.world_seed} rebuilt here scores {split} {source} EM "
                        f"{b} where the stored one ({self.dir / 'setup.json'}) scored {a}: its runs cannot be "
                        f"pooled with the stored ones; move {self.dir} aside to start this world over")

    # ------------------------------------------------------------------ the runs

    def stored_runs(self) -> list[Path]:
        """The stored run records of this world."""
        return sorted(self.dir.glob("*-seed*.json.gz"))

    def _run_path(self, method: str, seed: int) -> Path:
        return self.dir / f"{method}-seed{seed}.json.gz"

    def restore_runs(self) -> list[Path]:
        """Write every stored run's record into this checkout's run folder
        (``root/<method>-seed<seed>/replicate_record.json``) where none is there yet, for
        studies/replicate.py's ``record_runs`` to reuse (or retrain, when its config differs). Returns the
        files written."""
        written = []
        for path in self.stored_runs():
            run = path.name[: -len(".json.gz")]
            target = self.root / run / "replicate_record.json"
            if target.exists():
                continue
            try:
                rec = json.loads(gzip.decompress(path.read_bytes()))
            except (OSError, ValueError) as exc:
                raise SystemExit(f"worlds: {path} is not a gzip-compressed JSON record ({exc})") from None
            atomic_write_text(target, json.dumps(self._from_store(rec), indent=1))
            written.append(target)
        return written

    def save_run(self, method: str, seed: int, rec: dict) -> None:
        """Store one run's record (cut, paths relative), unless the same is stored already."""
        data = json.dumps(self._to_store(cut_record(rec)), sort_keys=True, separators=(",", ":"), default=str)
        blob = gzip.compress(data.encode(), compresslevel=9, mtime=0)
        path = self._run_path(method, seed)
        if not (path.exists() and path.read_bytes() == blob):
            atomic_write_bytes(path, blob)
