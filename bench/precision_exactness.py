"""How far bf16 moves step IG and the advantages from fp32, on agent rollouts from the demo's warm start.

The demo's world and shipped warm start (``igsearch demo``'s defaults), the agent rolling out train questions
at the training temperature (``configs/demo.yaml``'s settings: G rollouts each, top-2 passages), then, on the
same rollouts, the trainer's own step-IG phase (``run_step_scorers``: the trunk scorer on the keys/values of
the policy's forward of the rollouts) and the IG-Search advantages, once in fp32 and once under bf16
autocast (``igsearch.precision``). Reported per step (``igsearch.stats.precision_agreement``): the distribution
of |dIG|, Spearman's and Pearson's correlation, the share of steps whose IG keeps its sign; per token, the
correlation of the advantages. A scatter plot of bf16 against fp32 step IG goes beside the JSON.

    python bench/precision_exactness.py --questions 48      # about 3 minutes on a 2-core CPU

The last line is ``bf16_ig_spearman=... bf16_ig_sign_agreement=... bf16_ig_max_abs_diff=...
bf16_adv_pearson=...``. The issue's bar: Spearman >= 0.99, the sign kept on >= 99% of steps.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import torch

from igsearch.measure import add_threads_argument, apply_threads

RESULTS = Path(__file__).resolve().parent / "results"
DEMO_PRESET = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def demo_setup(root: Path):
    """(config, trainer-less parts): the demo's world and shipped warm start under ``root`` and the demo's
    run config pointing at them."""
    from igsearch.train.config import load_config
    from igsearch.warmstart import DEMONSTRATORS, WarmStartConfig, build_warm_start

    ws_cfg = replace(WarmStartConfig(), distractor=DEMONSTRATORS["lookalike"])
    ws = build_warm_start(root, seed=0, config=ws_cfg, log=lambda *a, **k: None, shipped=True)
    if not ws["shipped"]:
        raise RuntimeError("the demo's shipped warm start was not found (this would train one for 10 minutes)")
    return load_config(DEMO_PRESET, [f"model_path={ws['sft']}", f"world_dir={ws['world']}", "precision=fp32"])


def agent_rollouts(cfg, questions: int, engine_kind: str, seed: int = 0):
    """(model fp32, tokenizer, trajectories, rewards): ``questions`` train questions x G rollouts of the warm
    start on ``engine_kind`` ("vllm" | "hf") at the training temperature, seeded."""
    from igsearch.algo.rewards import trajectory_rewards
    from igsearch.data.loaders import load_qa
    from igsearch.data.prompts import get_template
    from igsearch.data.prompts import question_prompt
    from igsearch.policy.load import load_policy
    from igsearch.rollout.agent import SearchAgent
    from igsearch.rollout.engine import build_engine
    from igsearch.train.assembly import make_retriever, resolve_paths

    paths = resolve_paths(cfg)
    model, tok = load_policy(paths["model"], dtype="float32")
    model.eval()
    engine = build_engine(engine_kind, paths["model"], model=model, tokenizer=tok, dtype="float32",
                          max_model_len=cfg.max_prompt_tokens + cfg.rollout.max_response_tokens + 64, seed=seed)
    template = get_template(cfg.template)
    rows = load_qa(paths["train"], limit=questions)
    try:
        agent = SearchAgent(engine, make_retriever(cfg, paths), tok, cfg.rollout, template=template)
        prompts = [question_prompt(tok, r, template) for r in rows]
        trajs, _ = agent.run(prompts, [r.golden_answers for r in rows], [r.data_source for r in rows], seed=seed)
    finally:
        if hasattr(engine, "close"):
            engine.close()
    return model, tok, trajs, trajectory_rewards(trajs, format_penalty=cfg.format_penalty)


def step_ig_and_advantages(cfg, model, tok, trajs, rewards, precision) -> tuple[list[list], torch.Tensor, float]:
    """(step IG per rollout, per-token advantages [B, T], seconds) under ``precision``, as the trainer computes
    them: the policy's forward of the rollouts (keys/values kept), the trunk scorer, the ig estimator."""
    from igsearch.algo.advantages import AdvantageInput, compute_advantages, per_token_advantages
    from igsearch.algo.step_scores import run_step_scorers
    from igsearch.policy.packing import packed_token_logprobs
    from igsearch.scoring import Scorer, TrunkKV

    t0 = time.perf_counter()
    seqs = [t.token_ids for t in trajs]
    rows: list = []
    with torch.inference_mode(), precision.autocast():
        packed_token_logprobs(model, seqs, compute_from=[len(t.prompt_ids) for t in trajs], kv_out=rows,
                              max_tokens_per_row=cfg.max_tokens_per_forward)
        scorer = Scorer("trunk", model, trunks=TrunkKV.from_rows(seqs, rows))
        scores, _ = run_step_scorers(["step_ig"], trajs, model, tok, cfg, 1, scorer)
    seconds = time.perf_counter() - t0
    adv = compute_advantages(AdvantageInput.from_trajectories(trajs, rewards, scores), cfg.advantage_config())
    T = max(len(t.response_ids) for t in trajs)
    return scores["step_ig"], per_token_advantages(adv, None, T), seconds


def compare(cfg, model, tok, trajs, rewards) -> dict:
    """fp32 against bf16 on the same rollouts: step IG agreement, advantage correlation, scoring seconds."""
    from igsearch.precision import resolve_precision
    from igsearch.stats import precision_agreement

    cfg = replace(cfg, advantage=replace(cfg.advantage, method="ig"))
    out = {}
    for name in ("fp32", "bf16"):
        out[name] = step_ig_and_advantages(cfg, model, tok, trajs, rewards, resolve_precision(name))
    (ig32, adv32, s32), (ig16, adv16, s16) = out["fp32"], out["bf16"]
    pairs = [(a, b) for ra, rb in zip(ig32, ig16) for a, b in zip(ra, rb) if a is not None and b is not None]
    mask = torch.zeros_like(adv32, dtype=torch.bool)
    for i, t in enumerate(trajs):
        mask[i, : len(t.response_ids)] = torch.tensor(t.loss_mask, dtype=torch.bool)
    return {
        "rollouts": len(trajs), "steps": len(pairs),
        "step_ig": precision_agreement([a for a, _ in pairs], [b for _, b in pairs]),
        "advantages": precision_agreement(adv32[mask].tolist(), adv16[mask].tolist()),
        "seconds": {"fp32": s32, "bf16": s16},
        "ig_pairs": pairs,
    }


def plot(pairs, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    a, b = [p[0] for p in pairs], [p[1] for p in pairs]
    ax.scatter(a, b, s=8, alpha=0.6)
    lo, hi = min(a + b), max(a + b)
    ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8)
    ax.set_xlabel("step IG, fp32")
    ax.set_ylabel("step IG, bf16 autocast")
    ax.set_title("step IG, rollouts of the demo warm start", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--questions", type=int, default=48, help="train questions (G rollouts each; default 48)")
    ap.add_argument("--quick", action="store_true", help="8 questions on the transformers engine")
    ap.add_argument("--engine", default="vllm", choices=["vllm", "hf"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(RESULTS / "precision_exactness.json"))
    add_threads_argument(ap)
    args = ap.parse_args(argv)
    apply_threads(args.threads)
    if args.quick:
        args.questions, args.engine = 8, "hf"
    from igsearch.machine import describe_cpu

    with tempfile.TemporaryDirectory(prefix="precision-exactness-") as tmp:
        cfg = demo_setup(Path(tmp))
        model, tok, trajs, rewards = agent_rollouts(cfg, args.questions, args.engine, args.seed)
        result = compare(cfg, model, tok, trajs, rewards)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    png = plot(result.pop("ig_pairs"), out.with_suffix(".png"))
    result.update(benchmark="precision_exactness", time=datetime.now(timezone.utc).isoformat(), cpu=describe_cpu(),
                  threads=torch.get_num_threads(), torch=torch.__version__, questions=args.questions,
                  engine=args.engine, seed=args.seed, plot=png.name)
    out.write_text(json.dumps(result, indent=2) + "\n")
    ig, adv = result["step_ig"], result["advantages"]
    print(f"{result['rollouts']} rollouts, {result['steps']} scored steps; {result['cpu']}; JSON {out}, plot {png}")
    print("| quantity | n | max abs diff | p99 abs diff | median abs diff | Pearson | Spearman | sign agreement |")
    print("|---|---|---|---|---|---|---|---|")
    for name, a in (("step IG", ig), ("token advantage", adv)):
        print(f"| {name} | {a['n']} | {a['max_abs_diff']:.2e} | {a['p99_abs_diff']:.2e} | {a['median_abs_diff']:.2e} | "
              f"{a['pearson']:.4f} | {a['spearman']:.4f} | {a['sign_agreement']:.3f} |")
    print(f"bf16_ig_spearman={ig['spearman']:.4f} bf16_ig_sign_agreement={ig['sign_agreement']:.4f} "
          f"bf16_ig_max_abs_diff={ig['max_abs_diff']:.3e} bf16_adv_pearson={adv['pearson']:.4f}")
    return result


if __name__ == "__main__":
    main()
