"""The tiny default policy: a byte-level BPE tokenizer trained on the world's text and a
randomly initialised Qwen2-architecture model of a few million parameters (untied embeddings).

Both are saved as a normal Hugging Face directory, so everything downstream (vLLM, transformers,
the scorers) loads it exactly like a real Qwen2.5 checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from igsearch.data.prompts import ALL_TAGS

IM_START, IM_END, ENDOFTEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"

#: Qwen-style chat template: the assistant turn starts after "<|im_start|>assistant\n".
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

#: Model shape of the ``base`` policy (about 2.8M parameters with a 3k vocabulary), which the named
#: sizes of :data:`POLICY_SIZES` override. On a 2-core CPU cost is dominated by forward/backward FLOPs.
TINY_MODEL_SHAPE = dict(
    hidden_size=192,
    intermediate_size=512,
    num_hidden_layers=4,
    num_attention_heads=3,
    num_key_value_heads=1,
    head_dim=64,
    max_position_embeddings=4096,
)

#: Named policy sizes: overrides of :data:`TINY_MODEL_SHAPE` (parameters with the demo's 3k vocabulary).
#: The warm start's default is :data:`DEFAULT_POLICY_SIZE` (``WarmStartConfig.policy_size``), chosen by
#: building each size with SFT steps scaled to the same wall-clock (studies/results/policy_size.md).
POLICY_SIZES = {
    "small": dict(hidden_size=128, intermediate_size=384, num_hidden_layers=3, num_attention_heads=2),  # ~1.4M
    "base": {},                                                                                           # ~2.8M
    "large": dict(hidden_size=256, intermediate_size=768, num_hidden_layers=6, num_attention_heads=4),  # ~6.1M
}


DEFAULT_POLICY_SIZE = "small"


def policy_shape(size: str) -> dict:
    """The model shape of the named policy size (:data:`POLICY_SIZES`); ValueError names the choices."""
    if size not in POLICY_SIZES:
        raise ValueError(f"policy size {size!r} is not one of {', '.join(POLICY_SIZES)}")
    return {**TINY_MODEL_SHAPE, **POLICY_SIZES[size]}


def build_tokenizer(texts: Iterable[str], vocab_size: int = 3072):
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it as a ``PreTrainedTokenizerFast``.

    The chat markers are special tokens; every protocol tag (``<search>``, ``</documents>``, ...)
    is a single ordinary added token, so it survives decoding with ``skip_special_tokens`` and can
    serve as a stop token. ``eos`` and ``pad`` are ``<|im_end|>`` / ``<|endoftext|>`` as in Qwen2.5.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    specials = [ENDOFTEXT, IM_START, IM_END]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    core.add_tokens([AddedToken(tag, normalized=False, special=False) for tag in ALL_TAGS])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        bos_token=None,
        unk_token=None,
        clean_up_tokenization_spaces=False,
        model_max_length=TINY_MODEL_SHAPE["max_position_embeddings"],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_model(tokenizer, *, seed: int = 0, **shape):
    """A randomly initialised ``Qwen2ForCausalLM`` sized for ``tokenizer`` (fp32, untied embeddings)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    dims = {"tie_word_embeddings": False, **TINY_MODEL_SHAPE, **shape}
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        rope_theta=10000.0,
        rms_norm_eps=1e-6,
        bos_token_id=tokenizer.convert_tokens_to_ids(ENDOFTEXT),
        eos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
        pad_token_id=tokenizer.convert_tokens_to_ids(ENDOFTEXT),
        torch_dtype="float32",
        **dims,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    return model


def save_policy(model, tokenizer, out_dir: str | os.PathLike) -> Path:
    """Save model + tokenizer as an HF directory, atomically (temp dir, then rename)."""
    from igsearch.io import atomic_write_dir

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)

    return atomic_write_dir(out_dir, write)


def build_tiny_policy(world_dir: str | os.PathLike, out_dir: str | os.PathLike, *, seed: int = 0,
                      vocab_size: int = 3072, **shape) -> Path:
    """Build the default policy for a world: tokenizer from the world's text, random tiny model
    (``shape`` overrides entries of :data:`TINY_MODEL_SHAPE`, e.g. ``tie_word_embeddings=True``)."""
    from igsearch.world import world_texts

    tokenizer = build_tokenizer(world_texts(world_dir), vocab_size=vocab_size)
    model = build_tiny_model(tokenizer, seed=seed, **shape)
    return save_policy(model, tokenizer, out_dir)
