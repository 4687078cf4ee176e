"""igsearch_kernels: Triton kernels for step-reward RL (tree attention, fused log-prob gather, span-weighted GRPO loss)."""
