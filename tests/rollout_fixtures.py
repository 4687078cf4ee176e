"""A scripted engine and an echo retriever: drive the real agent loop without a model."""

from __future__ import annotations

from igsearch.retrieval.base import Passage
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
