"""igsearch: train LLM search agents with RL, rewarding every search step by its information gain."""

__version__ = "0.1.0"
