"""IG on verl's v1 data path: rollouts read from TransferQueue, IG requests scored through it.

verl 0.9.1's v1 trainers keep a step's rollouts in TransferQueue (TQ): the agent loop stores one row
per rollout under a key (``{uid}_{session}_{index}``: unpadded ``prompts``, ``responses``,
``response_mask``, ``input_ids``, ``position_ids`` and the agent loop's ``extra_fields``), and the
trainer hands worker groups a ``KVBatchMeta`` (keys + tags); the workers fetch and store fields by
key (``verl.utils.transferqueue_utils.tqbridge``).

- :func:`trajectories_from_tq` reads a batch's rows back as igsearch ``Trajectory`` objects (None for
  verl's synthetic padding rows, tag ``is_padding``: they get no IG and no step advantage).
- :func:`tq_log_prob_fn` gives the ``verl_actor`` scorer a ``compute_log_prob(DataProto)`` that runs
  on the actor worker group: the IG requests are stored in their own partition in the rollout
  format, ordered so that each data-parallel rank gets the same number of rows and about the same
  number of tokens (verl's own seq-len balancing), scored by the group's ``compute_log_prob`` (the
  forward verl uses for the old log-probs, at temperature 1), read back and cleared.
"""

from __future__ import annotations

import itertools
import uuid
from typing import Any, Callable

import torch
import transfer_queue as tq
from transfer_queue import KVBatchMeta
from verl import DataProto
from verl.utils.seqlen_balancing import calculate_workload, get_seqlen_balanced_partitions
from verl.utils.tensordict_utils import list_of_dict_to_tensordict
from verl.workers.utils.padding import response_from_nested

from igsearch.rollout.trajectory import Trajectory

from .ig_batch import GOLDS_KEY, MISSING_RECORD, STEPS_KEY, trajectory_from_row

ROW_FIELDS = ["prompts", "responses", "response_mask", "extra_fields"]
IG_PARTITION = "igsearch_ig"


def _rows(value: Any) -> list:
    """A TQ column as a Python list (nested tensors unbound, non-tensor stacks listed)."""
    if isinstance(value, torch.Tensor):
        return list(value.unbind()) if value.is_nested else list(value)
    return list(value.tolist() if hasattr(value, "tolist") else value)


def trajectories_from_tq(batch: KVBatchMeta, tokenizer) -> list[Trajectory | None]:
    """The rollouts of ``batch`` (rows in key order) as trajectories; None for padding rows."""
    data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=ROW_FIELDS)
    prompts, responses, masks = _rows(data["prompts"]), _rows(data["responses"]), _rows(data["response_mask"])
    extras = _rows(data["extra_fields"])
    tags = batch.tags or [{}] * len(batch.keys)
    trajs = []
    for i, (p, r, m, extra, tag) in enumerate(zip(prompts, responses, masks, extras, tags, strict=True)):
        extra = extra or {}
        if tag.get("is_padding", False):
            trajs.append(None)
            continue
        if STEPS_KEY not in extra or GOLDS_KEY not in extra:
            raise ValueError(f"row {batch.keys[i]}: {MISSING_RECORD}")
        trajs.append(trajectory_from_row(p.tolist(), r.tolist(), m.tolist(), extra[STEPS_KEY], extra[GOLDS_KEY], i,
                                         tokenizer))
    return trajs


def balanced_order(seq_lens: list[int], dp_size: int) -> list[int]:
    """Row order for dispatch: verl chunks a batch evenly over the ``dp_size`` ranks in order, so
    rows are grouped into equal-size partitions of about equal attention workload."""
    if dp_size <= 1 or len(seq_lens) < dp_size:
        return list(range(len(seq_lens)))
    parts = get_seqlen_balanced_partitions(calculate_workload(torch.tensor(seq_lens)), k_partitions=dp_size,
                                           equal_size=True)
    return [j for part in parts for j in part]


def tq_log_prob_fn(worker_group, *, dp_size: int = 1, partition_id: str = IG_PARTITION,
                   extra_info: dict | None = None) -> Callable[[DataProto], DataProto]:
    """``compute_log_prob`` for the ``verl_actor`` scorer, run by ``worker_group`` through TQ.

    In: the scorer's DataProto (prompts left-padded [n, P], responses right-padded [n, R],
    attention_mask [n, P + R]; n a multiple of ``dp_size``). Out: a DataProto with
    ``old_log_probs`` [n, R], log p(response token | prefix) under the current actor weights at
    temperature 1, zero past each response.
    """
    calls = itertools.count()
    run_id = uuid.uuid4().hex[:8]

    def compute_log_prob(data: DataProto) -> DataProto:
        b = data.batch
        n, p_len = b["prompts"].shape
        call = next(calls)
        keys, rows, tags = [], [], []
        for i in range(n):
            att = b["attention_mask"][i].bool()
            p, r = b["prompts"][i][att[:p_len]], b["responses"][i][att[p_len:]]
            ids = torch.cat([p, r])
            # the fields verl's agent-loop worker stores for a rollout (nested, so no attention_mask)
            rows.append({"prompts": p, "responses": r, "input_ids": ids, "position_ids": torch.arange(ids.numel()),
                         "response_mask": torch.ones_like(r), "loss_mask": torch.ones_like(r)})
            tags.append({"prompt_len": int(p.numel()), "response_len": int(r.numel()), "seq_len": int(ids.numel())})
            keys.append(f"ig{run_id}_{call}_{i}")
        tq.kv_batch_put(keys=keys, partition_id=partition_id, fields=list_of_dict_to_tensordict(rows), tags=tags)
        order = balanced_order([t["seq_len"] for t in tags], dp_size)
        meta = KVBatchMeta(keys=[keys[j] for j in order], tags=[tags[j] for j in order], partition_id=partition_id,
                           extra_info={"calculate_entropy": False, "compute_loss": False, "temperature": 1.0,
                                       **(extra_info or {})})
        try:
            worker_group.compute_log_prob(meta)
            got = tq.kv_batch_get(keys=keys, partition_id=partition_id, select_fields=["log_probs", "response_mask"])
            logp = response_from_nested(got["log_probs"], got["response_mask"]).to_padded_tensor(0.0)
        finally:
            tq.kv_clear(keys=keys, partition_id=partition_id)
        r_len = b["responses"].shape[1]
        out = torch.zeros(n, r_len, dtype=torch.float32)
        out[:, :logp.shape[1]] = logp.float()
        return DataProto.from_dict(tensors={"old_log_probs": out})

    return compute_log_prob
