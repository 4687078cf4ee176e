"""Load a policy (model + tokenizer) from a local Hugging Face directory, and build chat prompts."""

from __future__ import annotations

import os
from pathlib import Path


class PolicyLoadError(RuntimeError):
    """A model directory is missing or unusable; the message names the path and what is wrong."""


def check_model_dir(path: str | os.PathLike) -> Path:
    """Return ``path`` as a Path if it looks like an HF model directory, else raise PolicyLoadError."""
    p = Path(path)
    if not p.exists():
        raise PolicyLoadError(f"model directory {p} does not exist (build the tiny policy with "
                              f"`igsearch policy build` or pass a local Hugging Face model directory)")
    if not p.is_dir():
        raise PolicyLoadError(f"model path {p} is a file; expected a Hugging Face model directory")
    if not (p / "config.json").exists():
        raise PolicyLoadError(f"model directory {p} has no config.json; is it a Hugging Face model?")
    has_weights = any(p.glob("*.safetensors")) or any(p.glob("*.bin"))
    if not has_weights:
        raise PolicyLoadError(f"model directory {p} has no weights (*.safetensors or *.bin)")
    return p


def load_tokenizer(path: str | os.PathLike):
    """The tokenizer of a local model directory, with a pad token (falls back to eos)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(check_model_dir(path)))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def resolve_attn_implementation(name: str, device: str) -> str:
    """``auto`` -> flash_attention_2 on CUDA when flash-attn is installed, else sdpa."""
    if name != "auto":
        return name
    if str(device).startswith("cuda"):
        import importlib.util

        if importlib.util.find_spec("flash_attn") is not None:
            return "flash_attention_2"
    return "sdpa"


def load_policy(path: str | os.PathLike, *, dtype: str = "float32", device: str = "cpu",
                attn_implementation: str = "sdpa"):
    """Load ``(model, tokenizer)`` from a local HF directory.

    ``dtype`` is a torch dtype name ("float32", "bfloat16", "float16"); ``attn_implementation`` is
    "sdpa", "flash_attention_2", "eager" or "auto" (see ``resolve_attn_implementation``).
    """
    import torch
    from transformers import AutoModelForCausalLM

    p = check_model_dir(path)
    try:
        torch_dtype = getattr(torch, dtype)
    except AttributeError:
        raise PolicyLoadError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16") from None
    attn = resolve_attn_implementation(attn_implementation, device)
    model = AutoModelForCausalLM.from_pretrained(str(p), dtype=torch_dtype, attn_implementation=attn)
    model.to(device)
    return model, load_tokenizer(p)


