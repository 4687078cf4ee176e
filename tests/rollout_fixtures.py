"""A scripted engine and an echo retriever: drive the real agent loop without a model; ``agent_rollouts``:
random agent rollouts of every shape the loop produces (successful ones included)."""

from __future__ import annotations

import random

from igsearch.retrieval.base import Passage
from igsearch.rollout.agent import RolloutConfig, SearchAgent
from igsearch.rollout.engine import GenOutput


class ScriptedEngine:
    """Plays back one scripted text per turn for each rollout (in request order per turn)."""

    def __init__(self, tokenizer, scripts):
        self.tok = tokenizer
        self.scripts = [list(s) for s in scripts]
        self.calls = 0

    def generate(self, requests, sampling):
        outs = []
        live = [s for s in self.scripts if s]
        if len(live) < len(requests):  # the agent loop would wait forever on the missing outputs
            raise AssertionError(f"scripted engine: {len(requests)} requests, {len(live)} scripts left")
        for req, script in zip(requests, live):
            text = script.pop(0)
            ids = self.tok(text, add_special_tokens=False)["input_ids"][: req.max_tokens]
            stop = ids[-1] if ids and ids[-1] in sampling.stop_token_ids else None
            reason = "stop" if stop is not None or (ids and ids[-1] == self.tok.eos_token_id) else "length"
            outs.append(GenOutput(ids, [-0.5] * len(ids), reason, stop))
        self.calls += 1
        return outs

    def sync_weights(self, model):
        pass


class EchoRetriever:
    def __init__(self):
        self.batches = []

    def retrieve(self, queries, topk):
        self.batches.append(list(queries))
        return [[Passage(f"{q}-{i}", f'"{q}"\nAbout {q}, fact {i}.', 1.0 / (i + 1)) for i in range(topk)] for q in queries]


GOLD = "Arno Tesk"
PROMPT = "<|im_start|>user\nWho directed Velmora Quist?<|im_end|>\n<|im_start|>assistant\n"
QUERIES = ["Velmora director", "Arno Tesk", "Dulmar", "Velmora Quist", "Brenna Fell founded"]


def random_script(rng: random.Random, max_turns: int) -> list[str]:
    """One rollout's turns: 0..max_turns searches (some with a refine), then an answer (the gold or
    a wrong one), or, after max_turns searches, none (the rollout runs into the turn limit)."""
    turns = []
    for k in range(rng.randrange(0, max_turns + 1)):
        refine = f"<refine> about {rng.choice(QUERIES)} </refine>\n" if k and rng.random() < 0.5 else ""
        if rng.random() < 0.25:  # an unclosed answer before the search, as a barely trained policy writes
            refine += f"<answer> {GOLD} "
        turns.append(refine + f"<search> {rng.choice(QUERIES)} </search>")
    if len(turns) == max_turns:  # the agent asks once more and ends the rollout at the turn limit
        turns.append(f"<search> {rng.choice(QUERIES)} </search>")
    else:
        answer = GOLD if rng.random() < 0.6 else rng.choice(["Dulmar", "Mira Ost"])
        refine = "<refine> found it </refine>\n" if turns and rng.random() < 0.5 else ""
        turns.append(refine + f"<answer> {answer} </answer>")
    return turns


def agent_rollouts(tok, seed: int, groups: int = 3, group_size: int = 4, max_turns: int = 3):
    """Trajectories of ``groups`` questions x ``group_size`` rollouts from the real agent loop; the
    first rollout of every group is a copy of another one (identical trunks happen at G > 1)."""
    rng = random.Random(seed)
    trajs = []
    for g in range(groups):
        scripts = [random_script(rng, max_turns) for _ in range(group_size)]
        scripts[0] = list(scripts[-1])
        agent = SearchAgent(ScriptedEngine(tok, scripts), EchoRetriever(), tok,
                            RolloutConfig(rollouts_per_question=group_size, max_turns=max_turns, topk=2))
        out, _ = agent.run([PROMPT], [[GOLD]])
        for t in out:
            t.question_index = g
        trajs.extend(out)
    assert any(t.answer == GOLD for t in trajs) and any(t.answer != GOLD for t in trajs)
    return trajs
