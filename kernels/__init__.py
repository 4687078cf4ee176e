"""igsearch_kernels: kernels for step-reward RL (tree attention, fused log-prob gather,
span-weighted GRPO loss), each with a torch reference and one dispatching public function.

Dispatch: Triton for CUDA tensors; on the CPU the native ops (``csrc/``, built by the top-level
CMakeLists.txt: tree attention and the log-prob gather) when built, else the torch path.
`IGSEARCH_KERNEL_BACKEND=triton|native|torch|auto` (or the `backend=` argument) overrides; the
Triton path on CPU tensors needs `TRITON_INTERPRET=1` set before this package is imported.
`python -m igsearch_kernels` prints which backend each function runs on, and why.

Tree layout conventions (see `tree_attention`): packed q [T, Hq, D], k/v [T, Hkv, D]; the tokens of
one trie node are contiguous and nodes are numbered in packing order, parents before children,
so `node_of_token` (int [T]) is non-decreasing; node n holds tokens
`offsets[n]:offsets[n + 1]` with `offsets = cumsum([0] + bincount(node_of_token))`;
`ancestry` bool [N, N] (`build_tree_ancestry(parent)`) has ancestry[i, j] iff j is i or an
ancestor of i; position ids = depth in the path (`tree_position_ids`).
"""

from .gather_logprobs import gather_logprobs, gather_logprobs_reference
from .span_advantage_loss import (
    AGGREGATIONS,
    sort_and_check_spans,
    span_advantage_loss,
    span_advantage_loss_reference,
    token_advantages,
)
from .tree_attention import (
    TreeBlockMask,
    build_tree_ancestry,
    build_tree_block_mask,
    check_tree_layout,
    default_blocks,
    tree_attention,
    tree_attention_reference,
    tree_position_ids,
    tree_token_mask,
)

__all__ = [
    "AGGREGATIONS",
    "TreeBlockMask",
    "build_tree_ancestry",
    "build_tree_block_mask",
    "check_tree_layout",
    "default_blocks",
    "gather_logprobs",
    "gather_logprobs_reference",
    "sort_and_check_spans",
    "span_advantage_loss",
    "span_advantage_loss_reference",
    "token_advantages",
    "tree_attention",
    "tree_attention_reference",
    "tree_position_ids",
    "tree_token_mask",
]
