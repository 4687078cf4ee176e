"""A vLLM worker extension for weight sync (loaded inside vLLM's worker processes by name).

vLLM's in-place ``reload_weights`` processes every reloaded layer again, but an output layer whose
weight is tied to the input embedding receives no weights of its own and is skipped. On the CPU
backend each linear layer computes from a pre-packed copy of its weight made after loading, so
the tied LM head keeps computing with the old weights (docs/DESIGN.md §6). ``igsearch_reload_weights``
reloads and then re-ties and re-packs the LM head.
"""

from __future__ import annotations


class WeightSyncExtension:
    """Mixed into vLLM's worker class via ``LLM(worker_extension_cls=...)``."""

    def igsearch_reload_weights(self, weights_path: str) -> bool:
        """Reload every weight from ``weights_path``; returns whether a tied LM head was refreshed."""
        runner = self.model_runner
        runner.reload_weights(weights_path=weights_path)
        model = runner.get_model()
        tied = bool(getattr(getattr(model, "config", None), "tie_word_embeddings", False))
        lm_head = getattr(model, "lm_head", None)
        embed = getattr(getattr(model, "model", None), "embed_tokens", None)
        if not (tied and lm_head is not None and embed is not None):
            return False
        lm_head.weight = embed.weight
        method = getattr(lm_head, "quant_method", None)
        if method is not None and hasattr(method, "process_weights_after_loading"):
            method.process_weights_after_loading(lm_head)
        return True
