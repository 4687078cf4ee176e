"""Token trie (radix tree) of a batch of sequences, packed for one tree-masked forward.

Each trie node holds a run of tokens shared by every sequence that passes through it. Packing lays
the nodes out in depth-first preorder (so every parent comes before its children) with each node's
tokens contiguous. A token at packed index ``p`` may attend to packed index ``q`` iff ``q``'s node is
its own node or an ancestor of it, and ``positions[q] <= positions[p]`` (causal inside the node).
Position ids are the depth of a token along its root-to-leaf path, so a sequence sees exactly the
tokens and positions it would see on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


class _Node:
    __slots__ = ("tokens", "parent", "children")

    def __init__(self, tokens: list[int], parent: "_Node | None"):
        self.tokens = tokens
        self.parent = parent
        self.children: dict[int, _Node] = {}


@dataclass
class PackedTrie:
    """A packed trie. T = packed tokens, N = nodes, S = sequences.

    - ``tokens`` long [T], ``positions`` long [T] (depth along the path, 0-based),
      ``node_of_token`` long [T].
    - ``node_start`` long [N + 1]: node n's tokens are ``node_start[n]:node_start[n+1]``;
      ``node_parent`` long [N] (-1 for a root node); ``node_depth`` long [N] (path length before it).
    - ``ancestry`` bool [N, N]: ``ancestry[i, j]`` iff j is i or an ancestor of i.
    - ``seq_index[s]`` long [len(sequence s)]: packed index of every token of sequence s, in order.
    """

    tokens: torch.Tensor
    positions: torch.Tensor
    node_of_token: torch.Tensor
    node_start: torch.Tensor
    node_parent: torch.Tensor
    node_depth: torch.Tensor
    ancestry: torch.Tensor
    seq_index: list[torch.Tensor]

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.numel())

    @property
    def n_nodes(self) -> int:
        return int(self.node_parent.numel())

    def attention_mask(self, device=None) -> torch.Tensor:
        """The tree mask as bool [T, T] (True = may attend)."""
        node = self.node_of_token
        allowed = self.ancestry[node][:, node]
        causal = self.positions[None, :] <= self.positions[:, None]
        return (allowed & causal).to(device) if device is not None else allowed & causal


def _common_prefix(a: list[int], b: Sequence[int], start: int) -> int:
    """Length of the common prefix of ``a`` and ``b[start:]``."""
    n = min(len(a), len(b) - start)
    i = 0
    while i < n and a[i] == b[start + i]:
        i += 1
    return i


def build_trie(sequences: Sequence[Sequence[int]]) -> PackedTrie:
    """Build and pack the radix trie of ``sequences`` (each non-empty; duplicates share a path)."""
    root = _Node([], None)
    terminals: list[_Node] = []
    for s, seq in enumerate(sequences):
        seq = [int(t) for t in seq]
        if not seq:
            raise ValueError(f"build_trie: sequence {s} is empty")
        cur, i = root, 0
        while i < len(seq):
            child = cur.children.get(seq[i])
            if child is None:
                child = _Node(seq[i:], cur)
                cur.children[seq[i]] = child
                cur, i = child, len(seq)
                break
            k = _common_prefix(child.tokens, seq, i)
            if k < len(child.tokens):  # split child: head keeps the shared run, child keeps the rest
                head = _Node(child.tokens[:k], cur)
                cur.children[seq[i]] = head
                child.tokens = child.tokens[k:]
                child.parent = head
                head.children[child.tokens[0]] = child
                child = head
            cur, i = child, i + k
        terminals.append(cur)

    # Depth-first preorder over the real nodes (root is an empty sentinel).
    order: list[_Node] = []
    stack = list(reversed(list(root.children.values())))
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(reversed(list(node.children.values())))
    index = {id(n): k for k, n in enumerate(order)}

    n_nodes = len(order)
    lengths = torch.tensor([len(n.tokens) for n in order], dtype=torch.long)
    node_start = torch.zeros(n_nodes + 1, dtype=torch.long)
    node_start[1:] = torch.cumsum(lengths, 0)
    parent = torch.tensor(
        [index[id(n.parent)] if n.parent is not root else -1 for n in order], dtype=torch.long
    )
    depth = torch.zeros(n_nodes, dtype=torch.long)
    ancestry = torch.zeros(n_nodes, n_nodes, dtype=torch.bool)
    for k in range(n_nodes):  # preorder: a parent's row is final before its children's
        p = int(parent[k])
        if p >= 0:
            depth[k] = depth[p] + lengths[p]
            ancestry[k] = ancestry[p]
        ancestry[k, k] = True

    tokens = torch.tensor([t for n in order for t in n.tokens], dtype=torch.long)
    node_of_token = torch.repeat_interleave(torch.arange(n_nodes), lengths)
    positions = depth[node_of_token] + (torch.arange(tokens.numel()) - node_start[node_of_token])

    seq_index = []
    for term in terminals:
        path = []
        node = term
        while node is not root:
            path.append(index[id(node)])
            node = node.parent
        seq_index.append(
            torch.cat([torch.arange(int(node_start[k]), int(node_start[k + 1])) for k in reversed(path)])
        )
    return PackedTrie(tokens, positions, node_of_token, node_start, parent, depth, ancestry, seq_index)
