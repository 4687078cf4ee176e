"""Turn-level gain (IGPO-style) with the igsearch kernels: one packed forward for all turns.

For a multi-turn trajectory (prompt, turn 1, ..., turn K) and a gold answer, the gain of turn k is

    gain_k = log p(answer | prompt, turns 1..k) - log p(answer | prompt, turns 1..k-1)

All K + 1 contexts are prefixes of one another, so they are packed once as a trie: a chain
prompt -> turn 1 -> ... -> turn K with an answer leaf hanging off every context node. One forward of
a toy transformer with `tree_attention` (position ids = depth) scores every answer, and
`gather_logprobs` turns the hidden states at the answer positions into log p(answer token)
without [tokens x vocab] logits. The script checks the result against scoring each context on its
own with plain causal attention.

    python examples/turn_level_gain.py            # torch paths (CPU)
    python examples/turn_level_gain.py --triton   # Triton kernels (interpreter on the CPU)
"""

from __future__ import annotations

import argparse
import os
import sys

if "--triton" in sys.argv:  # the example runs on CPU tensors: Triton through its interpreter,
    os.environ["TRITON_INTERPRET"] = "1"  # which must be switched on before triton is imported
    os.environ["IGSEARCH_KERNEL_BACKEND"] = "triton"

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from igsearch_kernels import (  # noqa: E402
    build_tree_ancestry,
    build_tree_block_mask,
    gather_logprobs,
    tree_attention,
    tree_position_ids,
)


class ToyLM(torch.nn.Module):
    """A tiny pre-norm transformer (GQA attention, learned positions); attention is pluggable."""

    def __init__(self, vocab=101, dim=64, heads=4, kv_heads=2, layers=2, max_pos=256):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.embed = torch.nn.Embedding(vocab, dim)
        self.pos = torch.nn.Embedding(max_pos, dim)
        self.blocks = torch.nn.ModuleList(
            torch.nn.ModuleDict(dict(
                norm1=torch.nn.RMSNorm(dim), qkv=torch.nn.Linear(dim, (heads + 2 * kv_heads) * self.head_dim),
                out=torch.nn.Linear(dim, dim), norm2=torch.nn.RMSNorm(dim),
                mlp=torch.nn.Sequential(torch.nn.Linear(dim, 4 * dim), torch.nn.GELU(), torch.nn.Linear(4 * dim, dim)),
            ))
            for _ in range(layers)
        )
        self.norm = torch.nn.RMSNorm(dim)
        self.lm_head = torch.nn.Linear(dim, vocab, bias=False)

    def hidden(self, ids, positions, attend):
        """ids, positions: [T]; attend(q [T, H, Dh], k, v [T, Hkv, Dh]) -> [T, H, Dh]. Returns [T, dim]."""
        x = self.embed(ids) + self.pos(positions)
        for blk in self.blocks:
            q, k, v = blk["qkv"](blk["norm1"](x)).split(
                [self.heads * self.head_dim, self.kv_heads * self.head_dim, self.kv_heads * self.head_dim], -1)
            att = attend(q.view(-1, self.heads, self.head_dim), k.view(-1, self.kv_heads, self.head_dim),
                         v.view(-1, self.kv_heads, self.head_dim))
            x = x + blk["out"](att.reshape(x.shape))
            x = x + blk["mlp"](blk["norm2"](x))
        return self.norm(x)


def pack_turns(prompt, turns, answer):
    """Trie of the K + 1 contexts with an answer leaf each.

    Returns ids [T], node_of_token [T], parent [N], and for every context k the packed row of its
    last token and the packed rows of its answer leaf.
    """
    pieces, parent = [], []
    ctx_last, answer_rows = [], []

    def add(tokens, par):
        start = sum(len(p) for p in pieces)
        pieces.append(tokens)
        parent.append(par)
        return len(parent) - 1, list(range(start, start + len(tokens)))

    ctx_node, rows = add(prompt, -1)
    for k in range(len(turns) + 1):
        ctx_last.append(rows[-1])
        _, ans_rows = add(answer, ctx_node)
        answer_rows.append(ans_rows)
        if k < len(turns):
            ctx_node, rows = add(turns[k], ctx_node)
    ids = torch.tensor([t for p in pieces for t in p])
    node_of_token = torch.repeat_interleave(torch.arange(len(pieces)), torch.tensor([len(p) for p in pieces]))
    return ids, node_of_token, torch.tensor(parent), ctx_last, answer_rows


@torch.no_grad()
def turn_gains_tree(model, prompt, turns, answer):
    """log p(answer | context_k) for k = 0..K from one packed forward, and the tokens forwarded."""
    ids, node_of_token, parent, ctx_last, answer_rows = pack_turns(prompt, turns, answer)
    ancestry = build_tree_ancestry(parent)
    positions = tree_position_ids(node_of_token, ancestry)
    block_mask = None
    if os.environ.get("IGSEARCH_KERNEL_BACKEND") == "triton":
        block_mask = build_tree_block_mask(node_of_token, ancestry, 16, 16)  # built once, reused by every layer

    def attend(q, k, v):
        return tree_attention(q, k, v, node_of_token, ancestry, block_mask=block_mask)

    hidden = model.hidden(ids, positions, attend)
    # answer token i is predicted at the row before it: the context's last token, then answer[:-1]
    rows = torch.tensor([[last] + ans[:-1] for last, ans in zip(ctx_last, answer_rows)])
    targets = torch.tensor(answer).repeat(len(ctx_last))
    logp = gather_logprobs(hidden[rows.flatten()], model.lm_head.weight, targets)
    return logp.view(len(ctx_last), len(answer)).sum(-1), ids.numel()


@torch.no_grad()
def turn_gains_naive(model, prompt, turns, answer):
    """The same scores with every context + answer encoded on its own (causal attention)."""
    scores, forwarded = [], 0
    for k in range(len(turns) + 1):
        seq = prompt + [t for turn in turns[:k] for t in turn] + answer
        ids = torch.tensor(seq)

        def attend(q, kk, v):
            out = F.scaled_dot_product_attention(q.transpose(0, 1), kk.transpose(0, 1), v.transpose(0, 1),
                                                 is_causal=True, enable_gqa=True)
            return out.transpose(0, 1)

        hidden = model.hidden(ids, torch.arange(len(seq)), attend)
        logits = model.lm_head(hidden[len(seq) - len(answer) - 1:-1])
        scores.append(torch.log_softmax(logits, -1).gather(1, torch.tensor(answer)[:, None]).sum())
        forwarded += len(seq)
    return torch.stack(scores), forwarded


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--turns", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--triton", action="store_true", help="use the Triton kernels (interpreter on the CPU)")
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    model = ToyLM().eval()
    vocab = model.lm_head.weight.shape[0]
    prompt = torch.randint(0, vocab, (24,)).tolist()
    turns = [torch.randint(0, vocab, (int(torch.randint(5, 15, (1,))),)).tolist() for _ in range(args.turns)]
    answer = torch.randint(0, vocab, (4,)).tolist()

    tree_scores, tree_tokens = turn_gains_tree(model, prompt, turns, answer)
    naive_scores, naive_tokens = turn_gains_naive(model, prompt, turns, answer)
    gains = tree_scores[1:] - tree_scores[:-1]
    diff = (tree_scores - naive_scores).abs().max().item()

    backend = os.environ.get("IGSEARCH_KERNEL_BACKEND", "auto")
    print(f"backend={backend}  tokens forwarded: tree {tree_tokens} vs naive {naive_tokens}")
    for k, gain in enumerate(gains.tolist(), start=1):
        print(f"turn {k}: log p(answer) {tree_scores[k].item():8.4f}  gain {gain:+.4f}")
    print(f"max |tree - naive| over the {len(tree_scores)} context scores: {diff:.2e}")
    if diff > 1e-4:
        raise SystemExit("tree and naive scores disagree")


if __name__ == "__main__":
    main()
