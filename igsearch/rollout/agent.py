"""The multi-turn search agent loop.

For each question, G rollouts. Every turn, all open rollouts are continued in one engine call that
stops at ``</search>`` or ``</answer>``; the queries of all rollouts that searched are retrieved in
one batch; ``\\n<documents>...</documents>\\n`` is appended at the token level (what the policy
wrote is never re-tokenised) with loss mask 0. After ``max_turns`` searches the policy gets one last
turn in which a search is not answered. Malformed output ends that rollout with a recorded reason.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

from igsearch.config_fields import check_range, config_field
from igsearch.data.prompts import (
    ANSWER_CLOSE, ANSWER_OPEN, REFINE_CLOSE, REFINE_OPEN, SEARCH_CLOSE, SEARCH_OPEN, PromptTemplate,
    REFINE_TEMPLATE, format_documents,
)
from igsearch.rollout.engine import GenerationEngine, GenRequest, SamplingConfig
from igsearch.rollout.trajectory import StepSpans, Trajectory


@dataclass
class RolloutConfig:
    """The ``rollout`` section of the run config: settings of the agent loop."""

    rollouts_per_question: int = config_field(4, "G: rollouts per question, forming one GRPO group.")
    max_turns: int = config_field(3, "Maximum search turns per rollout; the rollout is cut after that.")
    topk: int = config_field(3, "Passages returned per search.")
    max_new_tokens_per_turn: int = config_field(128, "Maximum tokens the policy generates in one turn.")
    max_response_tokens: int = config_field(512, "Maximum response length (generated + injected tokens) per "
                                                 "rollout.")
    max_doc_tokens: int = config_field(256, "Injected documents are cut to this many tokens per search (the "
                                            "closing tag is kept); 0 = no limit.")
    temperature: float = config_field(1.0, "Sampling temperature of the rollouts (also applied to the training "
                                           "log-probs).")
    top_p: float = config_field(1.0, "Nucleus sampling threshold of the rollouts. Below 1, vLLM's sampling "
                                     "log-probs are not pi_old's, so the trainer recomputes pi_old under the "
                                     "rollout weights.")

    def validate(self, where: str = "rollout") -> "RolloutConfig":
        for name in ("rollouts_per_question", "max_turns", "topk", "max_new_tokens_per_turn", "max_response_tokens"):
            check_range(where, name, getattr(self, name), low=1)
        check_range(where, "max_doc_tokens", self.max_doc_tokens, low=0)
        check_range(where, "temperature", self.temperature, low=0, low_open=True)
        check_range(where, "top_p", self.top_p, low=0, low_open=True, high=1)
        return self


@dataclass
class RolloutTimings:
    """Wall time spent in each phase of a batch of rollouts (seconds)."""

    generation: float = 0.0
    retrieval: float = 0.0
    turns: int = 0
    extra: dict = field(default_factory=dict)


def _single_token_id(tokenizer, text: str) -> int | None:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids[0] if len(ids) == 1 else None


def token_char_offsets(tokenizer, ids: Sequence[int]) -> list[int]:
    """``offsets[k]`` = number of characters of ``decode(ids[:k])``, for k in 0..len(ids)."""
    offsets = [0]
    for k in range(1, len(ids) + 1):
        offsets.append(len(tokenizer.decode(ids[:k], skip_special_tokens=False)))
    return offsets


def char_span_to_tokens(offsets: list[int], start: int, end: int) -> tuple[int, int]:
    """The smallest token span [a, b) whose characters cover [start, end) (offsets from token_char_offsets)."""
    a = max(k for k in range(len(offsets)) if offsets[k] <= start)
    a = min(a, len(offsets) - 1)
    b = next((k for k in range(len(offsets)) if offsets[k] >= end), len(offsets) - 1)
    return a, max(a, b)


@dataclass
class OpenRollout:
    """Book-keeping of one rollout while it runs (``SearchAgent.run`` keeps one per rollout; the verl
    agent loop drives one through ``absorb_turn`` and ``retrieve_and_inject``)."""

    traj: Trajectory
    index: int = 0
    searches: int = 0
    last_turn: bool = False
    pending_refine_step: int | None = None
    done: bool = False


class SearchAgent:
    """Runs batches of multi-turn search rollouts on an engine and a retriever."""

    def __init__(self, engine: GenerationEngine, retriever, tokenizer, config: RolloutConfig | None = None,
                 template: PromptTemplate = REFINE_TEMPLATE):
        self.engine = engine
        self.retriever = retriever
        self.tokenizer = tokenizer
        self.config = config or RolloutConfig()
        self.template = template
        stop_tags = [SEARCH_CLOSE, ANSWER_CLOSE]
        ids = [_single_token_id(tokenizer, t) for t in stop_tags]
        if all(i is not None for i in ids):
            self.stop_ids, self.stop_strings = ids, []
        else:
            self.stop_ids, self.stop_strings = [], stop_tags
        self.search_close_id = ids[0]
        self.answer_close_id = ids[1]
        self.eos_id = tokenizer.eos_token_id

    # -- public -----------------------------------------------------------------------------
    def run(self, prompts: Sequence[str], golds: Sequence[Sequence[str]] | None = None,
            data_sources: Sequence[str] | None = None, *, seed: int = 0,
            rollouts_per_question: int | None = None, first_index: int = 0) -> tuple[list[Trajectory], RolloutTimings]:
        """Roll out ``G`` trajectories per prompt text; returns them grouped (question-major). Sampling
        seeds derive from ``seed`` (per rollout and turn) and the rollout's index, which starts at
        ``first_index``: a process that rolls out rows ``first_index ...`` of a batch split over processes
        samples them as one process rolling out the whole batch would."""
        cfg = self.config
        G = rollouts_per_question or cfg.rollouts_per_question
        base_seed = seed
        opens: list[OpenRollout] = []
        for q, prompt in enumerate(prompts):
            prompt_ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            for _ in range(G):
                traj = Trajectory(prompt_ids=list(prompt_ids), prompt_text=prompt, question_index=q,
                                  golds=list(golds[q]) if golds is not None else [],
                                  data_source=data_sources[q] if data_sources is not None else "")
                opens.append(OpenRollout(traj, index=first_index + len(opens)))
        timings = RolloutTimings()
        turn = 0
        while True:
            active = [o for o in opens if not o.done]
            if not active:
                break
            self._generate_turn(active, base_seed, turn, timings)
            searching = [o for o in active if not o.done and o.traj.steps and o.traj.steps[-1].documents == (-1, -1)]
            self.retrieve_and_inject(searching, timings)
            turn += 1
            timings.turns = turn
        for o in opens:
            o.traj.response_text = self.tokenizer.decode(o.traj.response_ids, skip_special_tokens=False)
            o.traj.check()
        return [o.traj for o in opens], timings

    # -- one turn ---------------------------------------------------------------------------
    def _generate_turn(self, active: list[OpenRollout], base_seed: int, turn: int, timings: RolloutTimings) -> None:
        cfg = self.config
        requests = []
        for o in active:
            budget = cfg.max_response_tokens - len(o.traj.response_ids)
            requests.append(GenRequest(o.traj.prompt_ids + o.traj.response_ids,
                                       max_tokens=max(1, min(cfg.max_new_tokens_per_turn, budget)),
                                       seed=(base_seed * 1_000_003 + turn * 10_007 + o.index) % (2**31 - 1)))
        sampling = SamplingConfig(temperature=cfg.temperature, top_p=cfg.top_p,
                                  stop_token_ids=list(self.stop_ids), stop_strings=list(self.stop_strings))
        t0 = time.perf_counter()
        outputs = self.engine.generate(requests, sampling)
        timings.generation += time.perf_counter() - t0
        for o, out in zip(active, outputs):
            self.absorb_turn(o, out.token_ids, out.logprobs, out.finish_reason)

    def absorb_turn(self, o: OpenRollout, ids: list[int], logprobs: list[float], finish_reason: str) -> None:
        """Append one turn of policy output and decide what happens next to this rollout.

        ``finish_reason``: "stop" (a stop tag or EOS ended the turn) or "length" (the turn's token
        budget did). A turn that ends in ``</search>`` opens a step whose documents are still
        (-1, -1) until ``retrieve_and_inject``; ``</answer>`` finishes the rollout."""
        traj, cfg = o.traj, self.config
        start = len(traj.response_ids)
        traj.response_ids.extend(ids)
        traj.loss_mask.extend([1] * len(ids))
        traj.rollout_logprobs.extend(float(x) for x in logprobs)
        text = self.tokenizer.decode(ids, skip_special_tokens=False)
        offsets = None

        def tok_span(a: int, b: int) -> tuple[int, int]:
            nonlocal offsets
            if offsets is None:
                offsets = token_char_offsets(self.tokenizer, ids)
            s, e = char_span_to_tokens(offsets, a, b)
            return start + s, start + e

        # The refine that follows the previous step's documents (first <refine> in this turn).
        if o.pending_refine_step is not None:
            r0 = text.find(REFINE_OPEN)
            if r0 >= 0:
                r1 = text.find(REFINE_CLOSE, r0)
                if r1 >= 0:
                    r_end = r1 + len(REFINE_CLOSE)
                else:  # unclosed: ends at the next "\n<search>" / "\n<answer>" or the end of the turn
                    cands = [p for p in (text.find("\n" + SEARCH_OPEN, r0), text.find("\n" + ANSWER_OPEN, r0)) if p >= 0]
                    r_end = min(cands) if cands else len(text)
                traj.steps[o.pending_refine_step].refine = tok_span(r0, r_end)
            o.pending_refine_step = None

        stripped = text.rstrip()
        ended_by_eos = bool(ids) and ids[-1] == self.eos_id
        if stripped.endswith(ANSWER_CLOSE):
            a0 = text.rfind(ANSWER_OPEN)
            if a0 < 0:
                return self._finish(o, "malformed: </answer> without <answer>")
            traj.answer = text[a0 + len(ANSWER_OPEN):text.rfind(ANSWER_CLOSE)].strip()
            return self._finish(o, "answer")
        if stripped.endswith(SEARCH_CLOSE) and finish_reason == "stop":
            q0 = text.rfind(SEARCH_OPEN)
            if q0 < 0:
                return self._finish(o, "malformed: </search> without <search>")
            query = text[q0 + len(SEARCH_OPEN):text.rfind(SEARCH_CLOSE)].strip()
            if not query:
                return self._finish(o, "malformed: empty search query")
            if o.last_turn:
                return self._finish(o, "max_turns")
            traj.steps.append(StepSpans(query=tok_span(q0, len(stripped)), documents=(-1, -1), query_text=query))
            o.searches += 1
            return None
        if len(traj.response_ids) >= cfg.max_response_tokens:
            return self._finish(o, "max_tokens")
        if finish_reason == "length":
            return self._finish(o, "malformed: turn longer than max_new_tokens_per_turn without a closing tag")
        if ended_by_eos:
            return self._finish(o, "malformed: ended without an answer")
        return self._finish(o, "malformed: stopped without a closing tag")

    def _finish(self, o: OpenRollout, reason: str) -> None:
        o.traj.finish_reason = reason
        o.done = True

    def _document_ids(self, passages) -> list[int]:
        """Token ids of the injected documents block, cut to ``max_doc_tokens`` with its closing tag kept."""
        docs_text = format_documents(passages, self.template)
        ids = self.tokenizer(docs_text, add_special_tokens=False)["input_ids"]
        limit = self.config.max_doc_tokens
        if limit and len(ids) > limit:
            close = f"\n{self.template.docs_close}\n"
            body = docs_text[: len(docs_text) - len(close)]
            close_ids = self.tokenizer(close, add_special_tokens=False)["input_ids"]
            body_ids = self.tokenizer(body, add_special_tokens=False)["input_ids"]
            ids = body_ids[: max(0, limit - len(close_ids))] + close_ids
        return ids

    # -- retrieval --------------------------------------------------------------------------
    def retrieve_and_inject(self, searching: list[OpenRollout], timings: RolloutTimings) -> None:
        """Retrieve for the last query of every rollout in ``searching`` (one batched call) and append
        the documents (loss mask 0); a rollout whose documents do not fit is finished ("max_tokens")."""
        if not searching:
            return
        queries = [o.traj.steps[-1].query_text for o in searching]
        t0 = time.perf_counter()
        results = self.retriever.retrieve(queries, self.config.topk)
        timings.retrieval += time.perf_counter() - t0
        for o, passages in zip(searching, results):
            traj = o.traj
            doc_ids = self._document_ids(passages)
            room = self.config.max_response_tokens - len(traj.response_ids)
            if len(doc_ids) >= room:
                traj.steps.pop()
                self._finish(o, "max_tokens")
                continue
            start = len(traj.response_ids)
            traj.response_ids.extend(doc_ids)
            traj.loss_mask.extend([0] * len(doc_ids))
            traj.rollout_logprobs.extend([0.0] * len(doc_ids))
            traj.steps[-1].documents = (start, start + len(doc_ids))
            o.pending_refine_step = len(traj.steps) - 1 if self.template.uses_refine else None
            if o.searches >= self.config.max_turns:
                o.last_turn = True
