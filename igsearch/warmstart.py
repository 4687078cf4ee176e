"""The embedded default's warm start: SFT on *another* world, so the policy learns the skill, not the answers.

RL and evaluation run on the world of ``seed`` (its train/dev/test splits). The warm start never sees
that world: the tokenizer and the SFT examples come from a separate warm-start world, built from
seed ``seed + WARM_START_WORLD_OFFSET`` with its own invented entities (no name word in common with
the RL world), so every name the policy meets in RL is new to it and it can only answer by searching, reading and copying. (SFT on the RL
world's own train split let the tiny policy memorise 1,500 answers: train EM 0.405 against dev EM
0.13, with RL reward then mostly measuring memorisation.)

The demonstrations come from :func:`igsearch.world.oracle_response` with ``early_answer``: after a
hop that is not the last, the demonstrator sometimes answers the bridge entity instead of searching
on. The warm-started policy therefore under-searches multi-hop questions, as untrained language
models do, and has a behaviour for RL to fix; the figures in the README say how much it does.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

#: The warm-start world is built from ``seed + WARM_START_WORLD_OFFSET``.
WARM_START_WORLD_OFFSET = 1000


@dataclass(frozen=True)
class WarmStartConfig:
    """How the warm start is built (the defaults are the demo's, chosen by measurement)."""

    entities: int = 2000          # warm-start world size; its train split has 1.875x as many questions
    steps: int = 700              # SFT optimizer steps
    batch_size: int = 16
    lr: float = 3e-3
    warmup_steps: int = 20
    early_answer: float = 0.6     # probability of stopping after each non-final hop
    query_noise: float = 0.0
    topk: int = 2
    max_len: int = 1024
    vocab_size: int = 3072


def build_warm_start(out_dir, *, seed: int = 0, config: WarmStartConfig | None = None,
                     progress: bool = True, log=print) -> dict:
    """Build the RL world, the warm-start world, the tiny policy and its SFT warm start under ``out_dir``.

    Returns ``{"world", "warm_start_world", "policy_init", "sft", "seconds", "config"}`` (paths as
    ``Path``): ``world`` is where RL trains and evaluates; ``sft`` is the warm-started policy.
    """
    from igsearch.policy.tiny import build_tiny_policy
    from igsearch.train.sft import run_sft
    from igsearch.world import build_world

    cfg = config or WarmStartConfig()
    out = Path(out_dir)
    t0 = time.perf_counter()
    world = out / "world"
    manifest = build_world(world, seed=seed)
    log(f"world (RL and evaluation): {manifest['n_entities']} entities, splits {manifest['splits']}")
    ws_world = out / "warm-start-world"
    ws_manifest = build_world(ws_world, seed=seed + WARM_START_WORLD_OFFSET, n_entities=cfg.entities, parquet=False,
                              disjoint_from=[world])
    log(f"warm-start world (SFT only, other entities): {ws_manifest['n_entities']} entities, "
        f"{ws_manifest['splits']['train']} train questions")
    init = build_tiny_policy(ws_world, out / "policy-init", seed=seed, vocab_size=cfg.vocab_size)
    sft = run_sft(init, ws_world, out / "sft", steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
                  warmup_steps=cfg.warmup_steps, query_noise=cfg.query_noise, early_answer=cfg.early_answer,
                  topk=cfg.topk, max_len=cfg.max_len, seed=seed, progress=progress)
    return {"world": world, "warm_start_world": ws_world, "policy_init": init, "sft": sft,
            "seconds": time.perf_counter() - t0, "config": asdict(cfg)}
