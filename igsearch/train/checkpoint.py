"""Atomic training checkpoints: a crash at any moment leaves the previous checkpoint loadable.

Layout under ``run_dir/checkpoints/``::

    step_000010/
        model/              save_pretrained (safetensors) + tokenizer when given
        optimizer.pt        optimizer state_dict (and scheduler state_dict when given)
        trainer_state.pt    step, RNG states (python, numpy, torch, cuda), extra
        config.json         the run configuration
        manifest.json       size and SHA-256 of every other file of the checkpoint
    latest                  text file with the name of the newest complete checkpoint

A checkpoint is written into a hidden temporary folder next to its final place, every file is
fsynced, then the folder is renamed into place (``os.replace``, atomic on one file system) and only
then is ``latest`` rewritten (atomically). A crash before the rename leaves a ``.tmp-*`` folder that
``latest_checkpoint`` ignores (and the next save removes); a crash after it leaves a complete
checkpoint. Only the last ``keep`` checkpoints are kept.

Loading never runs code: the ``.pt`` files hold only tensors and plain Python values (the RNG
states are stored as tensors and lists, not pickled numpy objects) and are read with
``torch.load(weights_only=True)``; a file that needs pickle is refused with ``CheckpointError``.
Resuming verifies the manifest and falls back to the newest checkpoint that verifies, saying which
ones were skipped and why (``resolve_checkpoint(..., verify=True)``).
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from igsearch.integrity import check_manifest, file_manifest, fsync_tree
from igsearch.io import atomic_write_json, atomic_write_text, fsync_dir

CHECKPOINTS = "checkpoints"
LATEST = "latest"
STATE_FILE = "trainer_state.pt"
OPTIMIZER_FILE = "optimizer.pt"
CONFIG_FILE = "config.json"
MANIFEST_FILE = "manifest.json"
MODEL_DIR = "model"
_STEP_DIR = re.compile(r"^step_(\d+)$")
_TMP_PREFIX = ".tmp-"


class CheckpointError(RuntimeError):
    """No usable checkpoint where one was expected."""


def checkpoint_name(step: int) -> str:
    return f"step_{step:06d}"


def rng_states() -> dict[str, Any]:
    """The states of every random generator a run draws from, as tensors and plain lists (so that
    ``torch.load(weights_only=True)`` reads them back)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "python": [int(version), torch.tensor(internal, dtype=torch.int64), gauss],
        "numpy": [str(kind), torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore the generators captured by ``rng_states``."""
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(int(x) for x in internal.tolist()), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def write_manifest(folder: Path) -> Path:
    """``manifest.json``: relative path -> {"bytes", "sha256"} of every other file under ``folder``."""
    return atomic_write_json(folder / MANIFEST_FILE, {"files": file_manifest(folder, skip=(MANIFEST_FILE,))})


def verify_checkpoint(path: Path) -> str | None:
    """None when every file of the manifest is there with its size and SHA-256; else why not.
    A checkpoint without a manifest (written before manifests existed) is checked for its files only."""
    if not _complete(path):
        return f"incomplete (no {STATE_FILE} or {MODEL_DIR}/)"
    manifest = path / MANIFEST_FILE
    if not manifest.is_file():
        return None
    try:
        files = json.loads(manifest.read_text(encoding="utf-8"))["files"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        return f"unreadable {MANIFEST_FILE} ({type(e).__name__})"
    return check_manifest(path, files)


def _safe_load(path: Path) -> Any:
    """``torch.load`` that never executes code: tensors and plain values only."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: refused: the file needs pickle to load, which could run code "
                              f"(only tensors and plain values are accepted): {first}") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


def _config_dict(config: Any) -> Any:
    if config is None:
        return None
    if hasattr(config, "to_dict"):
        return config.to_dict()
    if isinstance(config, dict):
        return config
    import dataclasses

    if dataclasses.is_dataclass(config):
        return dataclasses.asdict(config)
    raise TypeError(f"cannot serialise a config of type {type(config).__name__}")


def save_checkpoint(
    run_dir: str | os.PathLike,
    step: int,
    model,
    optimizer: torch.optim.Optimizer | None,
    config: Any = None,
    extra: dict[str, Any] | None = None,
    *,
    tokenizer=None,
    scheduler=None,
    keep: int | None = 3,
    rollout_settings: dict | None = None,
    rng: dict[str, Any] | None = None,
) -> Path:
    """Write the checkpoint of ``step`` atomically and point ``latest`` at it; returns its folder.

    ``model`` is saved with ``save_pretrained`` (safetensors), ``tokenizer`` with its own
    ``save_pretrained`` into the same folder, ``config`` as JSON (``to_dict()`` / dataclass / dict),
    ``extra`` (any torch-serialisable dict: data cursor, running stats) with the RNG states.
    Keeps the ``keep`` most recent checkpoints (None keeps all). ``rollout_settings``: the settings the
    model was trained under, kept beside it (``igsearch.rollout.trained``). ``rng``: the RNG states to
    store (``rng_states()`` taken earlier, e.g. at the start of the step that follows); default: now.
    """
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    name = checkpoint_name(step)
    final = root / name
    for stale in root.glob(f"{_TMP_PREFIX}*"):  # left by an earlier crash
        shutil.rmtree(stale, ignore_errors=True)
    tmp = root / f"{_TMP_PREFIX}{name}-{os.getpid()}"
    tmp.mkdir()
    try:
        model.save_pretrained(tmp / MODEL_DIR, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp / MODEL_DIR)
        if rollout_settings is not None:
            from igsearch.rollout.trained import write_rollout_settings

            write_rollout_settings(tmp / MODEL_DIR, rollout_settings, source=f"rl step {step}")
        if optimizer is not None or scheduler is not None:
            torch.save(
                {
                    "optimizer": None if optimizer is None else optimizer.state_dict(),
                    "scheduler": None if scheduler is None else scheduler.state_dict(),
                },
                tmp / OPTIMIZER_FILE,
            )
        atomic_write_json(tmp / CONFIG_FILE, _config_dict(config))
        torch.save({"step": int(step), "rng": rng if rng is not None else rng_states(), "extra": extra or {}},
                   tmp / STATE_FILE)
        write_manifest(tmp)
        fsync_tree(tmp)
        if final.exists():  # re-saving a step: move the old one aside, never delete it first
            old = root / f"{_TMP_PREFIX}old-{name}-{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(root / LATEST, name + "\n")
    if keep is not None:
        _prune(root, keep, protect=name)
    return final


def _complete(path: Path) -> bool:
    return (path / STATE_FILE).is_file() and (path / MODEL_DIR).is_dir()


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first (temporary folders excluded)."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir() and _complete(p):
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def _prune(root: Path, keep: int, protect: str) -> None:
    ckpts = list_checkpoints(root.parent)
    for p in ckpts[: max(len(ckpts) - max(keep, 1), 0)]:
        if p.name != protect:
            shutil.rmtree(p, ignore_errors=True)


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint of ``run_dir``: the one ``latest`` names when it is complete,
    else the highest complete ``step_*`` folder; None when there is none."""
    root = Path(run_dir) / CHECKPOINTS
    pointer = root / LATEST
    if pointer.is_file():
        name = pointer.read_text(encoding="utf-8").strip()
        if _STEP_DIR.match(name) and _complete(root / name):
            return root / name
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def resolve_checkpoint(path_or_run_dir: str | os.PathLike, *, verify: bool = False, log=None) -> Path:
    """A checkpoint folder from either itself or a run folder (its latest checkpoint).

    With ``verify``, checkpoints are checked against their manifest: a given checkpoint folder that
    fails is an error; for a run folder, checkpoints that fail are skipped, newest first, each
    reported through ``log`` (default: a line on stderr) with the reason, until one verifies."""
    p = Path(path_or_run_dir)
    say = log or (lambda msg: print(msg, file=sys.stderr))
    if _complete(p):
        why = verify_checkpoint(p) if verify else None
        if why:
            raise CheckpointError(f"{p}: checkpoint does not verify: {why}")
        return p
    if not verify:
        found = latest_checkpoint(p)
        if found is None:
            raise CheckpointError(f"{p}: no complete checkpoint found (expected {p}/{CHECKPOINTS}/step_*/)")
        return found
    latest = latest_checkpoint(p)
    candidates = list_checkpoints(p)
    if latest is not None:  # the one `latest` names first, then the others from the newest
        candidates = [latest] + [c for c in reversed(candidates) if c != latest]
    for c in candidates:
        why = verify_checkpoint(c)
        if why is None:
            return c
        say(f"skipping checkpoint {c}: {why}")
    raise CheckpointError(f"{p}: no checkpoint that verifies (expected {p}/{CHECKPOINTS}/step_*/ with a valid "
                          f"{MANIFEST_FILE})")


def _load_model_weights(model, model_dir: Path) -> None:
    from safetensors.torch import load_file

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{model_dir}: no *.safetensors weights")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            state.update(load_file(str(f)))
        except Exception as e:  # safetensors raises its own error type for a truncated or garbled header
            raise CheckpointError(f"{f}: unreadable weights ({type(e).__name__}: {e})") from None
    result = model.load_state_dict(state, strict=False)
    # save_pretrained drops parameters tied to another one (e.g. lm_head.weight = embed_tokens.weight);
    # those are restored through the tie, anything else missing is an error.
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded_ptrs = {params[k].data_ptr() for k in state if k in params}
    missing = [k for k in result.missing_keys if k not in params or params[k].data_ptr() not in loaded_ptrs]
    missing = [k for k in missing if k in params]  # buffers (rotary tables) are rebuilt by the model
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"{model_dir}: weights do not match the model (missing {missing[:5]}, "
            f"unexpected {result.unexpected_keys[:5]})"
        )


def load_checkpoint(
    path_or_run_dir: str | os.PathLike,
    model=None,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    scheduler=None,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Restore weights into ``model``, state into ``optimizer`` / ``scheduler`` and the RNG states.

    ``path_or_run_dir`` is a checkpoint folder or a run folder (its latest checkpoint). Returns
    ``{"step", "config", "extra", "path", "model_dir"}`` (``config`` as the saved dict).
    """
    path = resolve_checkpoint(path_or_run_dir)
    state = _safe_load(path / STATE_FILE)
    if model is not None:
        _load_model_weights(model, path / MODEL_DIR)
    if optimizer is not None or scheduler is not None:
        opt_file = path / OPTIMIZER_FILE
        if not opt_file.is_file():
            raise CheckpointError(f"{path}: no optimizer state ({OPTIMIZER_FILE}) to resume from")
        opt_state = _safe_load(opt_file)
        if optimizer is not None:
            if opt_state["optimizer"] is None:
                raise CheckpointError(f"{path}: the checkpoint has no optimizer state")
            optimizer.load_state_dict(opt_state["optimizer"])
        if scheduler is not None and opt_state.get("scheduler") is not None:
            scheduler.load_state_dict(opt_state["scheduler"])
    if restore_rng:
        set_rng_states(state["rng"])
    config_file = path / CONFIG_FILE
    config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else None
    return {
        "step": int(state["step"]),
        "config": config,
        "extra": state.get("extra", {}),
        "path": path,
        "model_dir": path / MODEL_DIR,
    }
