"""The igsearch_agent agent loop, built by verl's AgentLoopBase, on a scripted rollout server."""

import asyncio
import subprocess
import sys

import pytest

pytest.importorskip("verl")

from omegaconf import OmegaConf  # noqa: E402
from verl.experimental.agent_loop.agent_loop import DictConfigWrap, _agent_loop_registry  # noqa: E402
from verl.utils.dataset.rl_dataset import RLHFDataset  # noqa: E402
from verl.workers.rollout.replica import TokenOutput  # noqa: E402

from igsearch.integrations.verl import IGSearchAgentLoop  # noqa: E402
from igsearch.integrations.verl.ig_batch import GOLDS_KEY, STEPS_KEY, steps_from_record  # noqa: E402
from policy_fixtures import small_tokenizer  # noqa: E402
from test_rollout_agent import EchoRetriever  # noqa: E402

CHAT = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


class ScriptedServer:
    """Plays back one scripted text per generate call, as verl's LLMServerClient would return it."""

    def __init__(self, tokenizer, script):
        self.tok, self.script, self.requests = tokenizer, list(script), []

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        self.requests.append((list(prompt_ids), dict(sampling_params)))
        ids = self.tok(self.script.pop(0), add_special_tokens=False)["input_ids"][: sampling_params["max_tokens"]]
        return TokenOutput(token_ids=ids, log_probs=[-0.25] * len(ids), stop_reason="completed")


def make_loop(tok, server, retriever, response_length=400, **igsearch):
    cfg = OmegaConf.create({"actor_rollout_ref": {"rollout": {"response_length": response_length, "prompt_length": 256}},
                            "igsearch": {"topk": 2, "max_turns": 3, **igsearch}})
    return IGSearchAgentLoop(trainer_config=DictConfigWrap(cfg), server_manager=server, tokenizer=tok, processor=None,
                             dataset_cls=RLHFDataset, data_config=DictConfigWrap(OmegaConf.create({})),
                             retriever=retriever)


@pytest.fixture(scope="module")
def tok():
    t = small_tokenizer()
    t.chat_template = CHAT
    return t


def run(make, question="Where was Arno Tesk born?", golds=("Dulmar",)):
    """Build the agent loop inside a running event loop (AgentLoopBase binds to it, as in verl) and run it."""

    async def go():
        return await make().run({"temperature": 1.0}, raw_prompt=[{"role": "user", "content": question}],
                                reward_model={"ground_truth": {"target": list(golds)}})

    return asyncio.run(go())


def test_spans_masks_and_extra_fields(tok):
    server = ScriptedServer(tok, ["<search> Arno Tesk </search>",
                                  "<refine> born in Dulmar </refine>\n<search> Dulmar </search>",
                                  "<refine> a city </refine>\n<answer> Dulmar </answer>"])
    retriever = EchoRetriever()
    out = run(lambda: make_loop(tok, server, retriever), golds=("Dulmar",))
    assert retriever.batches == [["Arno Tesk"], ["Dulmar"]]
    resp, mask = out.response_ids, out.response_mask
    assert len(resp) == len(mask) == len(out.response_logprobs)
    steps = steps_from_record(out.extra_fields[STEPS_KEY])
    assert len(steps) == 2 and out.extra_fields[GOLDS_KEY] == ["Dulmar"]
    assert out.extra_fields["igsearch_finish_reason"] == "answer"
    text = lambda a, b: tok.decode(resp[a:b])  # noqa: E731
    for k, (q, r) in enumerate((("Arno Tesk", "born in Dulmar"), ("Dulmar", "a city"))):
        s = steps[k]
        assert text(*s.query) == f"<search> {q} </search>"
        assert text(*s.refine) == f"<refine> {r} </refine>"
        docs = text(*s.documents)
        assert docs.startswith("\n<documents>") and docs.rstrip().endswith("</documents>")
        assert set(mask[s.documents[0]:s.documents[1]]) == {0}  # injected: not trained on
        assert set(mask[s.query[0]:s.query[1]]) == {1}
    policy_tokens = sum(mask)
    assert policy_tokens == len(resp) - sum(s.documents[1] - s.documents[0] for s in steps)
    # every turn continued the same token sequence, stopping at the protocol's closing tags
    prompt_ids, params = server.requests[-1]
    assert prompt_ids[: len(out.prompt_ids)] == list(out.prompt_ids)
    assert params["include_stop_str_in_output"] and params["logprobs"]
    assert "</search>" in params["stop"] or params["stop_token_ids"]


class VersionedServer(ScriptedServer):
    """Reports the weight version of each turn, as verl's LLMServerClient does (min/max_global_steps)."""

    def __init__(self, tokenizer, script, versions):
        super().__init__(tokenizer, script)
        self.versions = list(versions)

    async def generate(self, request_id, **kwargs):
        out = await super().generate(request_id, **kwargs)
        v = self.versions.pop(0)
        out.extra_fields.update({"global_steps": v, "min_global_steps": v, "max_global_steps": v})
        return out


def test_weight_versions_reach_verl(tok):
    """verl's v1 trainer reads min/max_global_steps of every rollout (staleness metrics): the first and
    the last turn's weight versions."""
    server = VersionedServer(tok, ["<search> Arno Tesk </search>", "<answer> Dulmar </answer>"], [3, 4])
    out = run(lambda: make_loop(tok, server, EchoRetriever()))
    assert out.extra_fields["min_global_steps"] == 3 and out.extra_fields["max_global_steps"] == 4


def test_response_budget_and_max_turns(tok):
    server = ScriptedServer(tok, ["<search> a </search>", "<search> b </search>", "<search> c </search>", "x"])
    out = run(lambda: make_loop(tok, server, EchoRetriever(), max_turns=2))
    assert out.extra_fields["igsearch_finish_reason"] == "max_turns"
    assert len(steps_from_record(out.extra_fields[STEPS_KEY])) == 2
    server = ScriptedServer(tok, ["<search> a </search>"] * 5)
    out = run(lambda: make_loop(tok, server, EchoRetriever(), response_length=40))
    assert out.extra_fields["igsearch_finish_reason"] == "max_tokens" and len(out.response_ids) <= 40


def test_settings_are_checked(tok):
    with pytest.raises(ValueError, match="igsearch.topp"):
        make_loop(tok, ScriptedServer(tok, []), EchoRetriever(), topp=3)
    with pytest.raises(ValueError, match="retrieval_url"):
        make_loop(tok, ScriptedServer(tok, []), None)


def test_plugin_is_discovered_through_the_entry_point():
    """A fresh process that only imports verl finds the estimator, the agent loop and the v1 trainer
    (verl.plugins), as verl's TaskRunner does before it looks the trainer up by name."""
    code = ("import verl\n"
            "from verl.trainer.ppo.core_algos import get_adv_estimator_fn\n"
            "from verl.experimental.agent_loop.agent_loop import _agent_loop_registry\n"
            "from verl.trainer.ppo.v1 import get_trainer_cls\n"
            "from igsearch.scoring import list_scorers\n"
            "get_adv_estimator_fn('ig_search')\n"
            "print(_agent_loop_registry['igsearch_agent']['_target_'], 'verl_actor' in list_scorers(),\n"
            "      get_trainer_cls('igsearch_sync').__name__)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["igsearch.integrations.verl.agent_loop.IGSearchAgentLoop", "True", "IGSearchTrainer"]
    assert _agent_loop_registry["igsearch_agent"]["_target_"].endswith("IGSearchAgentLoop")
