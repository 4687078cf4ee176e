"""``igsearch_agent``: our token-level search protocol as a verl agent loop.

Selected with ``actor_rollout_ref.rollout.agent.default_agent_loop=igsearch_agent`` (or a dataset
column ``agent_name``). Per prompt it runs the loop of :class:`igsearch.rollout.agent.SearchAgent`,
one rollout at a time, against verl's rollout servers:

1. the prompt's messages go through verl's own tokenization (``ct_build_initial_tokens``);
2. each turn is one ``server_manager.generate`` call on prompt + response so far, stopping at
   ``</search>`` or ``</answer>`` (stop tags kept in the output), at most ``max_new_tokens_per_turn``
   tokens and never past the response budget;
3. ``SearchAgent.absorb_turn`` records the turn (query span, refine span, answer) and
   ``SearchAgent.retrieve_and_inject`` calls the retriever (Search-R1's ``/retrieve`` API through
   :class:`igsearch.retrieval.client.RetrievalClient`) and appends the documents with
   ``response_mask`` 0.

The output carries, in ``extra_fields`` (so in ``non_tensor_batch``): ``igsearch_steps`` (per step
[query start, end, documents start, end, refine start, end], response coordinates, refine -1 when
absent), ``igsearch_golds`` and ``igsearch_finish_reason``; IG and the estimator read them. It also
carries ``min_global_steps`` / ``max_global_steps``, the weight versions of the first and last turn as
the rollout server reported them, which verl's v1 trainer reads for its staleness metrics.

Settings: the ``igsearch`` config group (``+igsearch.retrieval_url=http://host:8000/retrieve``,
``+igsearch.topk=3``, ``+igsearch.max_turns=4``, ``+igsearch.max_new_tokens_per_turn=512``,
``+igsearch.max_doc_tokens=512``, ``+igsearch.template=refine``), defaulting to
``RolloutConfig``'s values; the response budget is ``actor_rollout_ref.rollout.response_length``.
"""

from __future__ import annotations

import asyncio
from dataclasses import fields
from typing import Any
from uuid import uuid4

from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopMetrics, AgentLoopOutput, register

from igsearch.data.prompts import TEMPLATES
from igsearch.retrieval.client import RetrievalClient
from igsearch.rollout.agent import OpenRollout, RolloutConfig, RolloutTimings, SearchAgent
from igsearch.rollout.trajectory import Trajectory

from .ig_batch import GOLDS_KEY, STEPS_KEY, steps_to_record
from .reward import gold_variants

_ROLLOUT_KEYS = ("topk", "max_turns", "max_new_tokens_per_turn", "max_doc_tokens")


def agent_settings(config: Any, response_length: int) -> tuple[RolloutConfig, str, str | None]:
    """(RolloutConfig, template name, retrieval url) from the ``igsearch`` group of verl's config."""
    group = config.get("igsearch") if hasattr(config, "get") else None
    given = dict(group.items()) if group is not None else {}
    known = set(_ROLLOUT_KEYS) | {"template", "retrieval_url", "retrieval_timeout"}
    unknown = sorted(set(given) - known)
    if unknown:
        raise ValueError(f"igsearch.{unknown[0]}: unknown agent-loop setting (known: {', '.join(sorted(known))})")
    defaults = {f.name: f.default for f in fields(RolloutConfig)}
    cfg = RolloutConfig(**{k: given.get(k, defaults[k]) for k in _ROLLOUT_KEYS},
                        max_response_tokens=int(response_length), rollouts_per_question=1).validate("igsearch")
    template = str(given.get("template", "refine"))
    if template not in TEMPLATES:
        raise ValueError(f"igsearch.template={template!r}: expected one of {', '.join(TEMPLATES)}")
    return cfg, template, given.get("retrieval_url")


@register("igsearch_agent")
class IGSearchAgentLoop(AgentLoopBase):
    """See the module docstring. ``retriever``: any object with ``retrieve(queries, topk)`` (tests);
    by default a ``RetrievalClient`` on ``igsearch.retrieval_url``."""

    def __init__(self, *args, retriever=None, **kwargs):
        super().__init__(*args, **kwargs)
        cfg, template, url = agent_settings(self.config, self.rollout_config.response_length)
        if retriever is None:
            if not url:
                raise ValueError("igsearch_agent needs +igsearch.retrieval_url=http://HOST:PORT/retrieve "
                                 "(a Search-R1 retrieval server, e.g. `igsearch retrieval serve`)")
            retriever = RetrievalClient(url)
        self.agent = SearchAgent(engine=None, retriever=retriever, tokenizer=self.tokenizer, config=cfg,
                                 template=TEMPLATES[template])

    async def run(self, sampling_params: dict[str, Any], **kwargs) -> AgentLoopOutput:
        agent, cfg = self.agent, self.agent.config
        golds = gold_variants((kwargs.get("reward_model") or {}).get("ground_truth", []))
        prompt_ids = await self.ct_build_initial_tokens(list(kwargs["raw_prompt"]))
        o = OpenRollout(Trajectory(prompt_ids=list(prompt_ids), golds=golds))
        timings, request_id, turns = RolloutTimings(), uuid4().hex, 0
        versions: dict[str, Any] = {}  # the weight versions (verl's global steps) the turns were sampled under
        metrics: dict[str, float] = {"generate_sequences": 0.0, "tool_calls": 0.0}
        loop = asyncio.get_running_loop()
        while not o.done:
            traj = o.traj
            max_tokens = max(1, min(cfg.max_new_tokens_per_turn, cfg.max_response_tokens - len(traj.response_ids)))
            params = {**sampling_params, "max_tokens": max_tokens, "logprobs": True,
                      "stop": list(agent.stop_strings), "stop_token_ids": list(agent.stop_ids),
                      "include_stop_str_in_output": True}
            t0 = loop.time()
            out = await self.server_manager.generate(request_id, prompt_ids=traj.prompt_ids + traj.response_ids,
                                                     sampling_params=params)
            metrics["generate_sequences"] += loop.time() - t0
            extra = getattr(out, "extra_fields", None) or {}
            versions.setdefault("min_global_steps", extra.get("min_global_steps"))
            if extra.get("max_global_steps") is not None or "max_global_steps" not in versions:
                versions["max_global_steps"] = extra.get("max_global_steps")
            ids = [int(t) for t in out.token_ids][:max_tokens]
            logprobs = list(out.log_probs or [0.0] * len(ids))[:len(ids)]
            agent.absorb_turn(o, ids, logprobs, self._finish_reason(ids, max_tokens))
            turns += 1
            if not o.done and traj.steps and traj.steps[-1].documents == (-1, -1):
                t0 = loop.time()
                await asyncio.to_thread(agent.retrieve_and_inject, [o], timings)
                metrics["tool_calls"] += loop.time() - t0
        traj = o.traj
        traj.check()
        return AgentLoopOutput(
            prompt_ids=traj.prompt_ids, response_ids=traj.response_ids, response_mask=traj.loss_mask,
            response_logprobs=traj.rollout_logprobs, num_turns=turns + len(traj.steps) + 1,
            metrics=AgentLoopMetrics(**metrics),
            extra_fields={STEPS_KEY: steps_to_record(traj.steps), GOLDS_KEY: golds,
                          "igsearch_finish_reason": traj.finish_reason, **versions})

    def _finish_reason(self, ids: list[int], max_tokens: int) -> str:
        """"stop" when a stop tag or EOS ended the turn, "length" when the token budget did."""
        agent = self.agent
        if ids and (ids[-1] in agent.stop_ids or ids[-1] == agent.eos_id):
            return "stop"
        text = self.tokenizer.decode(ids, skip_special_tokens=False).rstrip()
        if any(text.endswith(s) for s in agent.stop_strings):
            return "stop"
        return "length" if len(ids) >= max_tokens else "stop"
