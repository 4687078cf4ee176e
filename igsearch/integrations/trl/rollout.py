"""Our multi-turn search agent as TRL's ``rollout_func``.

TRL's ``GRPOTrainer._generate`` calls ``rollout_func(prompts, trainer)`` in every process with that
process's rows of the generation batch: its ``RepeatSampler`` repeats every question ``num_generations``
(G) times in a row, so the whole batch holds Q blocks of G identical prompts, process p holding rows
``p * len(prompts) ...`` (a block may straddle two processes), and TRL expects exactly one completion per
entry. :class:`SearchRollout` runs :meth:`igsearch.rollout.agent.SearchAgent.run` on the rows, each
rollout seeded by its row of the whole batch (so one process or several sample the same rollouts) and
numbered with its question in the whole batch (``question_index`` = row // G, the groups TRL and the
estimator use), and returns, per rollout (one list entry each):

- ``prompt_ids`` (len P_i), ``completion_ids`` = the response tokens (len C_i: what the policy wrote
  and the injected document tokens), ``logprobs`` = their sampling log-probs (0.0 on documents);
- ``env_mask`` = our loss mask (1 on policy tokens, 0 on injected documents; TRL multiplies it into
  its loss mask, ``tool_mask``);
- extra fields TRL hands to the reward functions: ``igsearch_answer``, ``igsearch_malformed``,
  ``igsearch_finish_reason`` and ``igsearch_golds`` (:class:`igsearch.integrations.trl.reward.ExactMatchReward`
  reads them).

The trajectories of the last call stay in :attr:`SearchRollout.last` so that
:class:`igsearch.integrations.trl.trainer.IGSearchGRPOTrainer` can score their steps and compute the
advantages. Gold answers come from the dataset rows of the batch (column ``golden_answers``), which
the trainer exposes as ``trainer.igsearch_batch_rows`` while it generates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from igsearch.data.prompts import REFINE_TEMPLATE, PromptTemplate
from igsearch.data.prompts import chat_prompt
from igsearch.rollout.agent import RolloutConfig, RolloutTimings, SearchAgent
from igsearch.rollout.engine import HFEngine
from igsearch.rollout.trajectory import Trajectory
from igsearch.train.trainer import rollout_seed


@dataclass
class RolloutRecord:
    """What one ``rollout_func`` call produced: the trajectories (B = Q * G, question-major, in the order
    of TRL's rows), the agent's timings, the TRL ``global_step`` it ran at and the rollout seed."""

    trajectories: list[Trajectory]
    timings: RolloutTimings
    global_step: int
    seed: int


class SearchRollout:
    """``rollout_func`` for ``trl.GRPOTrainer`` (see the module docstring).

    ``retriever``: anything with ``retrieve(queries, topk)``; ``tokenizer``: the policy's;
    ``config``: the agent loop's settings (``RolloutConfig``; its ``rollouts_per_question`` is
    ignored: G is TRL's ``num_generations``). ``engine``: a generation engine
    (``igsearch.rollout.engine.VLLMEngine`` ...) built on the same weights as the trained model, synced
    from it whenever TRL's ``global_step`` moved; None = transformers ``generate`` on the trained model
    itself (``HFEngine``, nothing to sync). ``seed``: the run seed (see :func:`igsearch.train.trainer.rollout_seed`).
    """

    def __init__(self, retriever, tokenizer, config: RolloutConfig, *, template: PromptTemplate = REFINE_TEMPLATE,
                 engine=None, seed: int = 0):
        self.retriever = retriever
        self.tokenizer = tokenizer
        self.config = config
        self.template = template
        self.external_engine = engine
        self.seed = seed
        self.last: RolloutRecord | None = None
        self._hf_engine: HFEngine | None = None
        self._synced_step = 0  # an external engine starts on the weights the model starts from
        self._calls_at: tuple[int, int] = (-1, 0)  # (global step, calls made at it)

    # ------------------------------------------------------------------ engine
    def engine_for(self, model):
        """The engine that samples from ``model``'s current weights."""
        if self.external_engine is None:
            if self._hf_engine is None or self._hf_engine.model is not model:
                self._hf_engine = HFEngine(model, self.tokenizer)
            return self._hf_engine
        return self.external_engine

    @property
    def engine(self):
        """The engine in use (None before the first call when none was given)."""
        return self.external_engine if self.external_engine is not None else self._hf_engine

    # ------------------------------------------------------------------ TRL's rollout_func
    def __call__(self, prompts: Sequence[Any], trainer) -> dict[str, list]:
        model = trainer.accelerator.unwrap_model(trainer.model)
        G = trainer.num_generations if model.training else trainer.num_generations_eval
        first = trainer.accelerator.process_index * len(prompts)  # this process's first row of the whole batch
        check_groups(prompts, G, first)
        rows = getattr(trainer, "igsearch_batch_rows", None)
        if rows is not None and len(rows) != len(prompts):
            raise ValueError(f"SearchRollout: {len(prompts)} prompts but {len(rows)} dataset rows in the batch")
        golds = [gold_list(r) for r in rows] if rows is not None else None
        sources = [str(r.get("data_source", "")) for r in rows] if rows is not None else None
        texts = [p if isinstance(p, str) else chat_prompt(self.tokenizer, p) for p in prompts]

        step = int(trainer.state.global_step)
        engine = self.engine_for(model)
        if self.external_engine is not None and step != self._synced_step:
            engine.sync_weights(model)
            self._synced_step = step
        call = self._calls_at[1] if self._calls_at[0] == step else 0
        self._calls_at = (step, call + 1)
        seed = rollout_seed(self.seed, step + 1, call)

        agent = SearchAgent(engine, self.retriever, self.tokenizer, self.config, template=self.template)
        trajs, timings = agent.run(texts, golds, sources, seed=seed, rollouts_per_question=1, first_index=first)
        for i, t in enumerate(trajs):
            t.question_index = (first + i) // G
            if not t.response_ids:
                raise RuntimeError(f"SearchRollout: a rollout of question {t.question_index} has no response token "
                                   "(the engine returned nothing)")
        self.last = RolloutRecord(trajs, timings, step, seed)
        return trl_fields(trajs)


def check_groups(prompts: Sequence[Any], G: int, first: int = 0) -> None:
    """ValueError unless the rows ``first ...`` of the whole batch (``prompts``) repeat each question in blocks
    of G, as TRL's RepeatSampler lays them out (the first and last block may be cut by a process boundary)."""
    if G < 1:
        raise ValueError(f"SearchRollout: {G} generations per question")
    for i in range(1, len(prompts)):
        if (first + i) % G and prompts[i] != prompts[i - 1]:
            q = (first + i) // G
            raise ValueError(f"SearchRollout: rows {q * G}..{q * G + G - 1} of the batch are not one question "
                             f"repeated {G} times (TRL's sampler lays groups out this way)")


def gold_list(row: dict) -> list[str]:
    """The gold answers of a dataset row (``golden_answers``: a string or a list)."""
    golds = row.get("golden_answers", [])
    if isinstance(golds, str):
        return [golds]
    return [str(g) for g in golds]


def trl_fields(trajs: Sequence[Trajectory]) -> dict[str, list]:
    """The dict TRL's ``rollout_func`` returns (see the module docstring), one entry per trajectory."""
    return {
        "prompt_ids": [list(t.prompt_ids) for t in trajs],
        "completion_ids": [list(t.response_ids) for t in trajs],
        "logprobs": [list(t.rollout_logprobs) for t in trajs],
        "env_mask": [list(t.loss_mask) for t in trajs],
        "igsearch_answer": [t.answer for t in trajs],
        "igsearch_malformed": [t.malformed for t in trajs],
        "igsearch_finish_reason": [t.finish_reason for t in trajs],
        "igsearch_golds": [list(t.golds) for t in trajs],
    }
