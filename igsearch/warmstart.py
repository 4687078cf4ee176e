"""The embedded default's warm start: SFT on a warm-up split that RL and evaluation never see.

The demo's world has four question splits: ``train`` (RL), ``dev`` and ``test`` (evaluation) and
``warmup`` (SFT only). The warm start is trained on oracle trajectories of the warm-up questions
with a language-modelling loss on the retrieved documents as well (``document_weight``), so the
policy learns the search protocol and, like a pretrained LLM, much of the corpus; no RL or evaluation
question is ever shown to it, so train and dev EM of the warm start agree. (SFT on the RL split
itself let the tiny policy memorise 1,500 answers: train EM 0.405 against dev EM 0.13.)

Why not a separate world with other entities: measured on this 2-core CPU, the ~2.8M-parameter ``base`` policy
does not learn to copy names it has never seen within any SFT budget the demo can afford. Warm
starts on a disjoint 2,000-entity world (700 x 16 and 1,400 x 8 examples, with and without the
document loss, tied or untied embeddings) reached greedy EM 0.29-0.41 on 1-hop questions of their
own world but 0.000 on the RL world: they memorise facts; they do not read.

The demonstrations come from :func:`igsearch.world.oracle_response`. With ``early_answer`` p > 0
the demonstrator, after a hop that is not the last, answers the bridge entity with probability p
instead of searching on, so the warm-started policy under-searches multi-hop questions and has a
behaviour for RL to fix. The default is 0: measured on this world (studies/results/rl_recipe.md), RL
from warm starts with p = 0.3, 0.45 and 0.6 learned to search less or overshot, never to search as
the question needs.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from igsearch.policy.tiny import DEFAULT_POLICY_SIZE
from igsearch.train.sft import WARM_START_DOCUMENT_WEIGHT, WARM_START_MAX_LEN

#: Question splits of the demo's world of 800 entities (which has ~2,900 questions in all); other
#: world sizes scale them.
WORLD_SPLITS = {"train": 800, "dev": 200, "test": 300, "warmup": 1600}


#: Named demonstrators of the warm start (the ``distractor`` probability of
#: :func:`igsearch.world.oracle_response`): ``oracle``, the perfect one; ``lookalike``, one that knows the
#: protocol, reads, copies and stops like the oracle but, after a non-final hop, searches the look-alike
#: entity the passage names (a film's star for its director) with probability 0.6, so that which entity
#: to search next is what RL has to learn (studies/results/demonstrator_headroom.md).
DEMONSTRATORS: dict[str, float] = {"oracle": 0.0, "lookalike": 0.6}


def world_split_sizes(entities: int, eval_split_size: int = 0) -> dict[str, int]:
    """:data:`WORLD_SPLITS` scaled to a world of ``entities`` entities (at least 5 questions each).

    ``eval_split_size`` > 0: dev and test get that many questions each and train and warm-up keep
    :data:`WORLD_SPLITS`' sizes, unscaled: a larger world then buys evaluation power only."""
    if eval_split_size > 0:
        return {**WORLD_SPLITS, "dev": eval_split_size, "test": eval_split_size}
    return {name: max(5, round(size * entities / 800)) for name, size in WORLD_SPLITS.items()}


@dataclass(frozen=True)
class WarmStartConfig:
    """How the warm start is built (the defaults are the demo's, chosen by measurement)."""

    entities: int = 800           # world size (the splits scale with it)
    # the world's relations (igsearch.world.graph.RELATION_SETS): base, the demo's eight, or dense, fourteen: as many
    # passages (what the tiny policy must memorise) and five times the questions, for 1,000-question dev and test
    relations: str = "base"
    steps: int = 1482             # SFT optimizer steps: base's 700 steps of wall-clock at the small size (measured)
    batch_size: int = 16          # 8 left train EM at 0.04 against 0.15 (700 steps, measured)
    lr: float = 3e-3
    warmup_steps: int = 20
    early_answer: float = 0.0     # probability of stopping after each non-final hop (0.3-0.6 tried: RL did not fix it)
    # probability of following a look-alike entity after each non-final hop (igsearch.world.oracle_response)
    distractor: float = 0.0
    # dev and test questions each (0: WORLD_SPLITS scaled with the world). 1,000 resolves a 0.03 EM difference
    # (standard error ~0.015) and needs ~1,400 entities beside the 800 train and 1,600 warm-up questions
    eval_split_size: int = 0
    document_weight: float = WARM_START_DOCUMENT_WEIGHT  # language-modelling loss on the retrieved documents
    query_noise: float = 0.0
    topk: int = 2                 # passages per search of RL and evaluation (the model folder's rollout settings)
    # passages per search the demonstrations draw from (empty: topk only). Trained with topk 2 alone, the warm start
    # collapsed at any other count (dev EM 0.016 / 0.088 at 1 / 3); over 1-3 it held (0.534 / 0.492) and lost
    # nothing at 2, and RL on it gained as much (studies/results/sft_topk_range.md)
    sft_topks: tuple[int, ...] = (1, 2, 3)
    max_len: int = WARM_START_MAX_LEN
    vocab_size: int = 3072
    # a name in igsearch.policy.tiny.POLICY_SIZES. At the same SFT wall-clock, small (1,482 steps) reached dev EM
    # 0.86-0.89 where base (700 steps) reached 0.49-0.60 and large (285 steps) 0.02 (studies/results/policy_size.md)
    policy_size: str = DEFAULT_POLICY_SIZE
    # the SFT's compute precision (igsearch.precision). fp32, not auto: the shipped warm start was trained in fp32,
    # and fp32 keeps a build the same on every CPU kind that has the same float rounding; bf16 builds faster where
    # the CPU multiplies bf16 natively (bench/results/precision.md)
    precision: str = "fp32"

    def sft_kwargs(self) -> dict:
        """The keyword arguments of :func:`igsearch.train.sft.run_sft` that this config sets (the
        warm-up split and every SFT setting; the caller adds ``seed``, ``progress`` and, to override
        them, ``steps``)."""
        return dict(split="warmup", steps=self.steps, batch_size=self.batch_size, lr=self.lr,
                    warmup_steps=self.warmup_steps, query_noise=self.query_noise, early_answer=self.early_answer,
                    distractor=self.distractor,
                    document_weight=self.document_weight, topk=list(self.sft_topks) or self.topk, max_len=self.max_len,
                    precision=self.precision)

    def setup_key(self) -> dict:
        """The settings that identify a built warm start, for reuse checks. ``policy_size`` is left out
        when it is ``base``, the only size before the field existed, ``distractor`` and ``eval_split_size``
        when they are 0, so keys of those builds stay valid."""
        key = asdict(self)
        if key["policy_size"] == "base":
            del key["policy_size"]
        if key["distractor"] == 0.0:  # nor the demonstrator's look-alikes, added later still
            del key["distractor"]
        if key["eval_split_size"] == 0:  # nor the eval split size, added later again
            del key["eval_split_size"]
        if key["precision"] == "fp32":  # nor the precision, added later again
            del key["precision"]
        if key["relations"] == "base":  # nor the world's relations, added later still
            del key["relations"]
        if not key["sft_topks"]:  # nor the demonstrations' range of topk, added later still
            del key["sft_topks"]
        else:
            key["sft_topks"] = list(key["sft_topks"])  # as JSON reads it back
        return key


#: Warm starts that ship with the package (``igsearch/assets/warm_starts/<name>/``: a model folder and its
#: ``provenance.json``), each trained by :func:`build_warm_start` exactly as the demo would train it. The
#: default demo's SFT takes ~10 minutes on an AVX-512 Xeon and ~19 on an AMD Zen 3, and no step budget
#: below its 1,482 steps keeps the warm start (studies/results/sft_budget.md), so ``igsearch demo`` starts
#: from the shipped one, as RL on a real model starts from a downloaded checkpoint (``--build-warm-start``
#: trains it instead). Shipped weights are also the same on every CPU kind, where SFT's float rounding is not.
SHIPPED_WARM_STARTS = Path(__file__).resolve().parent / "assets" / "warm_starts"
#: the files of a world that define it (its questions, corpus and manifest; not the indexes built from them)
WORLD_DEFINING_SUFFIXES = (".jsonl", "manifest.json")


def world_digest(world_dir) -> dict[str, str]:
    """File name -> SHA-256 of the files that define the world in ``world_dir`` (:data:`WORLD_DEFINING_SUFFIXES`)."""
    from igsearch.integrity import file_manifest

    return {name: entry["sha256"] for name, entry in file_manifest(world_dir).items()
            if "/" not in name and name.endswith(WORLD_DEFINING_SUFFIXES)}


def find_shipped_warm_start(config: WarmStartConfig, seed: int, world_seed: int) -> Path | None:
    """The shipped warm start folder trained with exactly ``config`` (its :meth:`WarmStartConfig.setup_key`),
    ``seed`` and ``world_seed``, or None."""
    if not SHIPPED_WARM_STARTS.is_dir():
        return None
    for folder in sorted(SHIPPED_WARM_STARTS.iterdir()):
        try:
            prov = json.loads((folder / "provenance.json").read_text())
        except (OSError, ValueError):
            continue
        if prov.get("setup_key") == config.setup_key() and prov.get("seed") == seed and prov.get("world_seed") == world_seed:
            return folder
    return None


def install_shipped_warm_start(shipped: Path, world: Path, out: Path) -> dict | None:
    """Copy the shipped warm start ``shipped`` to ``out`` (atomically) when ``world`` is the world it was
    trained on and its files are intact; returns its provenance, or None (with nothing written) when not."""
    from igsearch.integrity import check_manifest
    from igsearch.io import atomic_write_dir

    prov = json.loads((shipped / "provenance.json").read_text())
    if any(Path(name).name != name for name in prov["files"]):  # plain file names only: nothing outside the folders
        return None
    if world_digest(world) != prov["world_digest"] or check_manifest(shipped, prov["files"]) is not None:
        return None
    atomic_write_dir(out, lambda tmp: [shutil.copyfile(shipped / name, tmp / name)
                                       for name in [*prov["files"], "provenance.json"]])
    return prov


def ship_warm_start(built_dir, name: str, *, config: WarmStartConfig, seed: int, world_seed: int,
                    note: str = "") -> Path:
    """Copy the warm start that :func:`build_warm_start` built under ``built_dir`` (``world/``, ``sft/``)
    into :data:`SHIPPED_WARM_STARTS` ``/name`` with its provenance: the config's setup key, the seeds, the
    world's digest, the size and SHA-256 of every file, the CPU it was trained on and ``note``."""
    from igsearch.integrity import file_manifest
    from igsearch.machine import describe_cpu

    built = Path(built_dir)
    sft = built / "sft"
    summary = json.loads((sft / "sft_summary.json").read_text())
    if summary["steps"] != config.steps or summary["seed"] != seed:
        raise ValueError(f"{sft}: trained with {summary['steps']} steps and seed {summary['seed']}, "
                         f"not the config's {config.steps} and seed {seed}")
    dest = SHIPPED_WARM_STARTS / name
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(sft, dest)
    prov = {"setup_key": config.setup_key(), "seed": seed, "world_seed": world_seed,
            "world_digest": world_digest(built / "world"), "files": file_manifest(dest),
            "trained_on": describe_cpu(), "date": time.strftime("%Y-%m-%d"), "note": note}
    (dest / "provenance.json").write_text(json.dumps(prov, indent=2) + "\n")
    return dest


def build_warm_start(out_dir, *, seed: int = 0, config: WarmStartConfig | None = None,
                     progress: bool = True, log=print, world_seed: int | None = None,
                     threads: str | int | None = None, shipped: bool = False,
                     checkpoint_every: int | None = None) -> dict:
    """Build the world (with its warm-up split), the tiny policy and its SFT warm start under ``out_dir``.

    ``seed`` seeds the policy's initialisation and the SFT data order; ``world_seed`` (default: the
    same) the world, so warm starts of several seeds can be compared on one world's questions.
    ``checkpoint_every``: SFT steps between checkpoints (default ``SFT_CHECKPOINT_EVERY``; 0: none), from
    which the same call resumes a build that was killed (:func:`igsearch.train.sft.run_sft`).
    ``shipped``: when a shipped warm start was trained with this config and these seeds on this very world
    (:func:`find_shipped_warm_start`, :func:`install_shipped_warm_start`), copy it instead of training.

    Returns ``{"world", "policy_init", "sft", "seconds", "config", "shipped"}`` (paths as ``Path``;
    ``policy_init`` None and ``shipped`` the provenance when the shipped one was used): RL trains on
    ``world/train.jsonl`` and evaluates on ``dev``/``test``; ``sft`` is the warm-started policy.
    """
    from igsearch.policy.tiny import build_tiny_policy, policy_shape
    from igsearch.train.sft import SFT_CHECKPOINT_EVERY, run_sft
    from igsearch.world import build_world

    cfg = config or WarmStartConfig()
    shape = policy_shape(cfg.policy_size)
    out = Path(out_dir)
    t0 = time.perf_counter()
    world = out / "world"
    world_seed = seed if world_seed is None else world_seed
    manifest = build_world(world, seed=world_seed, n_entities=cfg.entities, relations=cfg.relations,
                           split_sizes=world_split_sizes(cfg.entities, cfg.eval_split_size))
    log(f"world: {manifest['n_entities']} entities, questions per split {manifest['splits']} "
        "(SFT sees only the warm-up split)")
    found = find_shipped_warm_start(cfg, seed, world_seed) if shipped else None
    prov = install_shipped_warm_start(found, world, out / "sft") if found is not None else None
    if prov is not None:
        log(f"warm start: the shipped one ({found.name}, trained by this code, {prov['date']}; "
            "--build-warm-start trains it here instead)")
        return {"world": world, "policy_init": None, "sft": out / "sft", "seconds": time.perf_counter() - t0,
                "config": asdict(cfg), "shipped": prov}
    if found is not None:
        log(f"warm start: {found.name} was trained on another world than this code builds, or its files are "
            "damaged; training the warm start here")
    init = build_tiny_policy(world, out / "policy-init", seed=seed, vocab_size=cfg.vocab_size, **shape)
    sft = run_sft(init, world, out / "sft", **cfg.sft_kwargs(), seed=seed, progress=progress, threads=threads,
                  checkpoint_every=SFT_CHECKPOINT_EVERY if checkpoint_every is None else checkpoint_every)
    return {"world": world, "policy_init": init, "sft": sft, "seconds": time.perf_counter() - t0,
            "config": asdict(cfg), "shipped": None}


def main(argv=None) -> int:
    """``python -m igsearch.warmstart ship OUT``: train the demo's default warm start under ``OUT`` (world, policy,
    SFT: ~10 minutes on an AVX-512 Xeon) and ship it as ``igsearch/assets/warm_starts/lookalike-small-seed0``.
    Run it after a change to the world, the tokenizer or :class:`WarmStartConfig` (tests/test_shipped_warm_start.py
    says when), then check the demo's figures."""
    import argparse
    from dataclasses import replace

    ap = argparse.ArgumentParser(prog="python -m igsearch.warmstart", description=main.__doc__.split("\n")[0])
    ap.add_argument("command", choices=["ship"])
    ap.add_argument("out", help="folder to build the warm start in (world/, policy-init/, sft/)")
    args = ap.parse_args(argv)
    config = replace(WarmStartConfig(), distractor=DEMONSTRATORS["lookalike"])
    build_warm_start(args.out, seed=0, world_seed=0, config=config)
    print(ship_warm_start(args.out, "lookalike-small-seed0", config=config, seed=0, world_seed=0,
                          note="igsearch demo's default warm start, shipped by `python -m igsearch.warmstart ship`"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
