"""How a training run survives its dependencies (docs/DESIGN.md §9, "Faults").

- **Engine death.** ``RunFaults.with_engine(fn, *args)`` runs a phase that uses the rollout engine.
  When the vLLM engine has died (``EngineDeadError``: its process was killed or crashed), the old
  engine is closed, a new one is started from the policy's *current* weights (written to the run's
  own ``.engine/model`` folder) and the phase runs again from its start. A phase that uses the
  engine is a function of (weights, seed, step): the rollout phase redone on the new engine gives
  the same batch, with the same seeds, as it would have on the old one. Restarts and their seconds
  are counted per step (``engine/restarts``, ``time/engine_restart``). Two failed starts in a row
  raise :class:`EngineUnavailable`.
- **Fatal faults** (:data:`FATAL`: the engine cannot be restarted, the retrieval server stayed
  away past ``retrieval.retriever_patience_s``): ``stop_run`` checkpoints the step before the
  interrupted one when the weights are still that step's (the fault came before the update), and
  returns the one-line ``TrainingError`` that names the fault and how to resume.
- **Resume.** ``resume_checkpoint`` is the checkpoint a ``--resume`` continues from, or None for a
  run killed before its first checkpoint (it starts again from step 0). ``engine_folder`` gives the
  engine a copy of the resumed checkpoint's model in the run's own folder: pruning may delete the
  checkpoint while the engine still runs from it.

Nothing here changes what a step computes: RNG states are snapshot at the start of each step (the
checkpoint of a stopped run stores those) and restored around an engine start.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

from igsearch.io import atomic_write_dir
from igsearch.retrieval.client import RetrievalError
from igsearch.train.checkpoint import list_checkpoints, resolve_checkpoint, rng_states, set_rng_states

#: the run's own folder for the engine's weights (a resumed checkpoint's copy, or a restart's weights)
ENGINE_DIR = ".engine"
#: failed engine starts in a row after which the run stops
MAX_FAILED_STARTS = 2
#: engine restarts within one call of a phase after which the run stops (an engine that dies at once)
MAX_RESTARTS_PER_CALL = 3
#: phases after which a step's weights are still those of the step before (the update comes later)
BEFORE_UPDATE = ("rollout", "reward", "score_steps")


class EngineUnavailable(RuntimeError):
    """The rollout engine died and could not be started again."""


#: faults that stop the run (after a checkpoint when one is safe): an engine that cannot be restarted, a
#: retrieval server gone for longer than the patience (``RetrievalUnavailable``) or refusing the request (4xx)
FATAL = (EngineUnavailable, RetrievalError)


def engine_died(exc: BaseException) -> bool:
    """True when ``exc`` says the vLLM engine process is gone (vLLM's ``EngineDeadError``)."""
    module = sys.modules.get("vllm.v1.engine.exceptions")
    return module is not None and isinstance(exc, getattr(module, "EngineDeadError", ()))


def resume_checkpoint(resume, log: Callable[[str], None] | None = None) -> Path | None:
    """The verified checkpoint ``--resume resume`` continues from; None when ``resume`` is a run folder
    that holds no checkpoint yet (killed before its first one, or inside its write): it starts again
    from step 0, which gives the same run."""
    p = Path(resume)
    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    is_run = (p / "config.yaml").is_file() and not (p / "trainer_state.pt").exists()
    if is_run and not list_checkpoints(p):
        say(f"{p}: no checkpoint yet (the run stopped before its first one was complete); starting it again "
            "from step 0")
        return None
    return resolve_checkpoint(p, verify=True)


def engine_folder(run_dir: Path, model_dir: Path, kind: str) -> Path:
    """The folder the vLLM engine of a resumed run starts from: a copy of ``model_dir`` (a checkpoint's
    model, which pruning may delete) in the run's own ``.engine/model``. Other engines read no folder
    after start-up: ``model_dir`` itself."""
    if kind != "vllm":
        return Path(model_dir)
    folder = Path(run_dir) / ENGINE_DIR / "model"
    clear_debris(folder)
    return atomic_write_dir(folder, lambda tmp: shutil.copytree(model_dir, tmp, dirs_exist_ok=True))


def clear_debris(folder: Path) -> None:
    """Remove the temporary and old copies of ``folder`` that a process killed while replacing it left."""
    for stale in list(folder.parent.glob(f".{folder.name}.tmp-*")) + list(folder.parent.glob(f".{folder.name}.old-*")):
        shutil.rmtree(stale, ignore_errors=True)


class RunFaults:
    """The fault handling of one ``Trainer`` (restarts its engine, tracks where a step is)."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.step = 0
        self.step_rng: dict[str, Any] | None = None
        self.last_phase: tuple[int, str] | None = None
        self.restarts = 0
        self.restart_seconds = 0.0
        self._waited_at_start = 0.0
        trainer.add_hook(self._phase_done)

    # ---------------------------------------------------------------- per step
    def step_started(self, step: int) -> None:
        """Call before step ``step``: snapshots the RNG states (what a checkpoint of step - 1 stores) and
        resets the step's counters."""
        self.step, self.step_rng = step, rng_states()
        self.restarts, self.restart_seconds = 0, 0.0
        self._waited_at_start = getattr(self.trainer.retriever, "waited_s", 0.0)

    def step_metrics(self) -> dict[str, float]:
        """The step's fault counters: engine restarts and their seconds, seconds waited on retrieval."""
        out = {"engine/restarts": float(self.restarts), "time/engine_restart": self.restart_seconds}
        if hasattr(self.trainer.retriever, "waited_s"):
            out["retrieval/outage_s"] = self.trainer.retriever.waited_s - self._waited_at_start
        return out

    def _phase_done(self, phase: str, batch, trainer) -> None:
        self.last_phase = (batch.step, phase)

    def weights_are_previous_step(self, step: int) -> bool:
        """True while step ``step`` has not started its update: the weights are step - 1's."""
        return self.last_phase is None or self.last_phase[0] < step or self.last_phase[1] in BEFORE_UPDATE

    # ---------------------------------------------------------------- the engine
    def with_engine(self, fn: Callable, *args):
        """``fn(*args)``; when the engine dies during it, restart the engine and run ``fn`` again."""
        for _ in range(MAX_RESTARTS_PER_CALL + 1):
            try:
                return fn(*args)
            except Exception as exc:
                if not engine_died(exc):
                    raise
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                self._say(f"step {self.step}: the rollout engine died ({type(exc).__name__}: {first}); starting a "
                          "new one from the current weights")
                self.restart_engine()
        raise EngineUnavailable(f"the rollout engine died {MAX_RESTARTS_PER_CALL + 1} times in a row during "
                                f"{getattr(fn, '__name__', 'a phase')}")

    def restart_engine(self) -> None:
        """Close the dead engine and start a new one from the current weights; after
        ``MAX_FAILED_STARTS`` failed starts in a row, :class:`EngineUnavailable`."""
        from igsearch.train import trainer as trainer_module  # the engine factory the trainer uses

        tr = self.trainer
        t0 = time.perf_counter()
        try:
            if hasattr(tr.engine, "close"):
                tr.engine.close()
        except Exception:  # a dead engine may fail to close; it is gone either way
            pass
        folder = Path(tr.out) / ENGINE_DIR / "model"

        def write(tmp: Path) -> None:
            tr.model.save_pretrained(tmp, safe_serialization=True)
            tr.tokenizer.save_pretrained(tmp)

        why = ""
        for attempt in range(MAX_FAILED_STARTS):
            rng = rng_states()  # an engine start may seed the process's generators
            try:
                clear_debris(folder)
                atomic_write_dir(folder, write)
                engine = trainer_module.engine_from_config(tr.cfg, folder, tr.model, tr.tokenizer, tr.precision)
            except Exception as exc:
                why = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
                self._say(f"step {self.step}: starting a new rollout engine failed ({why})")
                continue
            finally:
                set_rng_states(rng)
            tr.engine = engine
            tr.agent.engine = engine
            self.restarts += 1
            self.restart_seconds += time.perf_counter() - t0
            self._say(f"step {self.step}: new rollout engine started in {time.perf_counter() - t0:.0f} s")
            return
        raise EngineUnavailable(f"the rollout engine died and {MAX_FAILED_STARTS} starts of a new one failed "
                                f"(last: {why})")

    # ---------------------------------------------------------------- stopping
    def stop_run(self, step: int, exc: BaseException, last_saved: int) -> Exception:
        """A fatal fault during step ``step``: checkpoint step - 1 when that is what the weights hold and it
        is not saved yet, and return the one-line error to raise (what failed, what is saved, how to
        resume)."""
        from igsearch.train.checkpoint import latest_checkpoint
        from igsearch.train.trainer import TrainingError

        tr = self.trainer
        what = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if step - 1 > last_saved and self.weights_are_previous_step(step):
            tr.checkpoint(step - 1, rng=self.step_rng)
        ckpt = latest_checkpoint(tr.out)
        saved = f"checkpoint {ckpt.name} saved" if ckpt is not None else "no checkpoint yet (resuming starts at step 0)"
        return TrainingError(f"step {step}: {what}; {saved}; when it is fixed, continue with: igsearch train "
                             f"--resume {tr.out}")

    def _say(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)
