"""Building and loading policies: the tiny default model, local HF models, chat prompts."""

from igsearch.policy.load import PolicyLoadError, chat_prompt, check_model_dir, load_policy, load_tokenizer

__all__ = ["PolicyLoadError", "chat_prompt", "check_model_dir", "load_policy", "load_tokenizer"]
