// Schemas of the native ops: one place that declares torch.ops.igsearch.*.
// The CPU implementations live beside this file (TORCH_LIBRARY_IMPL(igsearch, CPU, m) each);
// abstract ("fake") implementations for torch.compile and autograd are registered in Python
// (igsearch_kernels/_native.py).
#include <torch/library.h>

TORCH_LIBRARY(igsearch, m) {
  // Tree attention of one packed run of trie tokens (see kernels/tree_attention.py):
  //   q [T, Hq, D], k/v [T, Hkv, D], node [T] int64 (non-decreasing), ancestry [N, N] bool,
  //   past_k/past_v [P, Hkv, D], past_node [P]: keys/values of tokens outside the run (cached or from
  //   earlier runs) that come before every run token of their node; visible iff ancestry allows.
  //   Returns [T, Hq, D] in q's dtype.
  m.def("tree_attention(Tensor q, Tensor k, Tensor v, Tensor node, Tensor ancestry, Tensor? past_k, "
        "Tensor? past_v, Tensor? past_node, float scale, int block_m) -> Tensor");
  // Fused LM head + log-softmax + gather over vocab tiles (see kernels/gather_logprobs.py):
  //   hidden [M, d], weight [V, d], bias [V] or None, targets [M] int64 (ignore_index rows give 0),
  //   logits = (hidden @ weight^T + bias) / temperature ->
  //   (logp [M] fp32, lse [M] fp32). Memory: one [min(M, 1024), tile] fp32 logits tile (tile 0: 1024).
  m.def("gather_logprobs(Tensor hidden, Tensor weight, Tensor? bias, Tensor targets, float temperature, "
        "int ignore_index, int tile) -> (Tensor, Tensor)");
  //   grad [M] -> (grad_hidden [M, d], grad_weight [V, d], grad_bias [V]), logits recomputed per tile;
  //   output_mask = which of the three to compute (None for the others; grad_bias also None without bias).
  m.def("gather_logprobs_backward(Tensor grad, Tensor hidden, Tensor weight, Tensor? bias, Tensor targets, "
        "Tensor lse, float temperature, int ignore_index, int tile, bool[3] output_mask) -> (Tensor?, Tensor?, Tensor?)");
}
