"""PPO-ptx (InstructGPT) for the trainer: a supervised loss on the warm start's own demonstrations, added
to the policy loss (``sft_replay_coef``)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from igsearch.data.loaders import DataError, load_qa
from igsearch.train.config import TrainConfig
from igsearch.train.sft import WARM_START_DOCUMENT_WEIGHT, WARM_START_MAX_LEN


class SFTReplay:
    """PPO-ptx (InstructGPT): a supervised loss on oracle trajectories added to the policy loss.

    The examples are built once from ``cfg.sft_replay_data`` (default: the world's warm-up split, the
    warm start's own data) with the run's retriever and template, documents weighted like the warm
    start, by the warm start's own demonstrator (:func:`replay_settings`: replaying a perfect
    oracle to a warm start that imitated a flawed one would teach the flaw's fix by supervision); each update draws ``sft_replay_batch`` of them with a generator seeded by (seed, step,
    update), so a resumed run draws the same ones.
    """

    def __init__(self, cfg: TrainConfig, paths: dict, tokenizer, retriever):
        from igsearch.train.sft import build_sft_examples

        path = Path(cfg.sft_replay_data) if cfg.sft_replay_data else Path(cfg.world_dir or "") / "warmup.jsonl"
        if not path.is_file():
            raise DataError(f"config: field 'sft_replay_data': {path} not found (a world split with oracle hops)")
        warm = replay_settings(cfg.model_path)
        self.cfg, self.document_weight = cfg, warm.pop("document_weight")
        self.demonstrator = warm
        self.examples = build_sft_examples(load_qa(path), tokenizer, retriever, template=cfg.template, topk=cfg.rollout.topk,
                                           seed=cfg.seed, **warm)
        if not self.examples:
            raise DataError(f"{path}: no oracle trajectories could be built for sft_replay_coef")

    def loss(self, model, step: int, update: int) -> torch.Tensor:
        from igsearch.train.sft import sft_loss

        rng = random.Random(f"replay-{self.cfg.seed}-{step}-{update}")
        batch = rng.sample(self.examples, min(self.cfg.sft_replay_batch, len(self.examples)))
        return sft_loss(model, batch, max_tokens_per_row=self.cfg.max_tokens_per_forward,
                        document_weight=self.document_weight)


#: How the replay weighs documents and cuts examples when the model folder does not say how it was warm-started:
#: as the embedded default's warm start does (``igsearch.warmstart.WarmStartConfig`` takes the same constants).
REPLAY_DEFAULTS = {"document_weight": WARM_START_DOCUMENT_WEIGHT, "max_len": WARM_START_MAX_LEN}


def replay_settings(model_path) -> dict:
    """How the warm start at ``model_path`` was trained, from its ``sft_summary.json``: ``document_weight``,
    ``max_len`` and its demonstrator (``distractor``, only when > 0); :data:`REPLAY_DEFAULTS` and the oracle
    for a folder without one. ``early_answer`` is left out: the replay of the early-answer warm starts
    measured in studies/results/rl_recipe.md used the oracle."""
    out = dict(REPLAY_DEFAULTS)
    path = Path(model_path or "") / "sft_summary.json"
    try:
        summary = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        summary = {}
    for key, kind in (("document_weight", float), ("max_len", int)):
        if isinstance(summary.get(key), (int, float)):
            out[key] = kind(summary[key])
    q = summary.get("distractor", 0.0)
    if isinstance(q, (int, float)) and q > 0:
        out["distractor"] = float(q)
    return out
