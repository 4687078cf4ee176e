"""Building and loading policies: the tiny default model, local HF models, chat prompts."""

from igsearch.data.prompts import chat_prompt  # re-exported: the prompt text a policy is given
from igsearch.policy.load import PolicyLoadError, check_model_dir, load_policy, load_tokenizer

__all__ = ["PolicyLoadError", "chat_prompt", "check_model_dir", "load_policy", "load_tokenizer"]
