"""Evaluate a search agent: roll out each question once (greedy), score EM and F1 of its answer.

Results are grouped per ``data_source`` (hop count on the world) plus ``overall``.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence

from igsearch.data.loaders import QARow
from igsearch.data.metrics import exact_match, f1_score
from igsearch.data.prompts import PromptTemplate, REFINE_TEMPLATE, question_prompt
from igsearch.rollout.agent import RolloutConfig, SearchAgent


@dataclass
class EvalResult:
    """EM/F1 per data_source and overall, with one record per question."""

    metrics: dict[str, dict[str, float]]
    records: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"metrics": self.metrics, "seconds": self.seconds, "records": self.records}


def summarize(records: Sequence[dict]) -> dict[str, dict[str, float]]:
    """Mean EM/F1, search count and count per data_source, plus ``overall``."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        groups[r["data_source"]].append(r)
        groups["overall"].append(r)
    out = {}
    for name in sorted(groups, key=lambda n: (n == "overall", n)):
        rs = groups[name]
        out[name] = {
            "n": len(rs),
            "em": sum(r["em"] for r in rs) / len(rs),
            "f1": sum(r["f1"] for r in rs) / len(rs),
            "searches": sum(r["searches"] for r in rs) / len(rs),
            "malformed": sum(r["finish_reason"].startswith("malformed") for r in rs) / len(rs),
        }
    return out


def evaluate(engine, retriever, tokenizer, rows: Sequence[QARow], *, template: PromptTemplate = REFINE_TEMPLATE,
             config: RolloutConfig | None = None, batch_size: int = 64, progress=None,
             samples: int = 1, temperature: float = 0.0, seed: int = 0) -> EvalResult:
    """Rollouts of every question and EM/F1 of their answers against the gold variants.

    Default: greedy (temperature 0), one rollout per question. A *probe* samples ``samples``
    rollouts per question at ``temperature`` with the fixed ``seed`` (the same draws for every
    checkpoint evaluated), one record per rollout (field ``sample``); ``summarize`` then gives the
    sampled EM. ``progress`` is an optional callable ``progress(done, total)`` called after every batch.
    """
    cfg = config or RolloutConfig()
    cfg = RolloutConfig(**{**cfg.__dict__, "rollouts_per_question": samples, "temperature": temperature})
    agent = SearchAgent(engine, retriever, tokenizer, cfg, template=template)
    records: list[dict] = []
    t0 = time.perf_counter()
    per_batch = max(1, batch_size // samples)
    for lo in range(0, len(rows), per_batch):
        batch = rows[lo:lo + per_batch]
        prompts = [question_prompt(tokenizer, r, template) for r in batch]
        trajs, _ = agent.run(prompts, [r.golden_answers for r in batch], [r.data_source for r in batch],
                             seed=seed + lo)
        for i, traj in enumerate(trajs):
            row = batch[i // samples]
            pred = traj.answer or ""
            records.append({
                "id": row.id, "sample": i % samples, "data_source": row.data_source, "question": row.question,
                "golden_answers": row.golden_answers, "prediction": traj.answer,
                "em": exact_match(pred, row.golden_answers) if traj.answer is not None else 0.0,
                "f1": f1_score(pred, row.golden_answers) if traj.answer is not None else 0.0,
                "searches": len(traj.steps), "finish_reason": traj.finish_reason,
                "response_tokens": len(traj.response_ids),
            })
        if progress is not None:
            progress(len(records) // samples, len(rows))
    return EvalResult(summarize(records), records, time.perf_counter() - t0)


def format_table(metrics: dict[str, dict[str, float]], title: str = "") -> str:
    """A markdown table of EM/F1 per data_source."""
    lines = [f"### {title}", ""] if title else []
    lines += ["| data_source | n | EM | F1 | searches | malformed |", "|---|---:|---:|---:|---:|---:|"]
    for name, m in metrics.items():
        lines.append(f"| {name} | {m['n']} | {m['em']:.3f} | {m['f1']:.3f} | {m['searches']:.2f} | {m['malformed']:.2f} |")
    return "\n".join(lines)
