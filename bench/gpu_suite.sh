#!/usr/bin/env bash
# The GPU checks in one command, for a machine with a CUDA GPU and no network:
#   1. pytest -m gpu                         (GPU tests: kernels against their references, ...)
#   2. bench/kernels.py                      (kernels vs torch references and library anchors)
#   3. bench/ig_scoring.py                   (every IG scorer: trunk, tree, naive, the vLLM peer; tiny and
#                                             0.5B shapes; its default_scorer= line is this card's default)
#   4. bench/step_overhead.py --preset gpu   (IG overhead per training step, Qwen2.5-3B shape)
#   5. bench/peer_trl.py --preset gpu        (igsearch's step against TRL's GRPOTrainer, Qwen2.5-0.5B shape)
# Every log and JSON goes under one folder, bench/results/gpu-<card>-<date>/ (or $1 when given).
# A failing part does not stop the others; the exit status is non-zero if any part failed, and
# summary.txt lists each part's exit status.
#
#   bash bench/gpu_suite.sh                 # from the repository root, in the project's venv
#   PYTHON=.venv/bin/python bash bench/gpu_suite.sh
#   QUICK=1 bash bench/gpu_suite.sh         # --quick where a script has it, one timed step of
#                                           # step_overhead (meant to fit one 10-minute call)
set -u
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_suite: no CUDA GPU visible to $PY (torch.cuda.is_available() is False); nothing run." >&2
    exit 2
fi
card=$("$PY" -c 'import re, torch; print(re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(0).lower()).strip("-"))')
out="${1:-bench/results/gpu-${card}-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$out"
quick=()
overhead=()
peer=()
if [ "${QUICK:-0}" = "1" ]; then
    quick=(--quick)
    overhead=(--steps 1 --warmup 0 --sft-steps 20 --questions 16)
    peer=(--rounds 1 --sft-steps 20 --no-replay)
fi

{
    echo "date: $(date -Is)"
    echo "git: $(git rev-parse HEAD 2>/dev/null || echo unknown) $(git status --porcelain 2>/dev/null | grep -q . && echo '(dirty)')"
    nvidia-smi 2>/dev/null || echo "nvidia-smi not available"
    "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))'
    "$PY" -c 'import vllm; print("vllm", vllm.__version__)' 2>&1
    "$PY" -c 'import triton; print("triton", triton.__version__)' 2>&1
} > "$out/environment.txt" 2>&1

status=0
: > "$out/summary.txt"
part() {  # part NAME COMMAND...: run, log to $out/NAME.log, record the exit status, never stop
    local name=$1; shift
    echo "=== $name: $*"
    local t0=$SECONDS
    "$@" > "$out/$name.log" 2>&1
    local rc=$?
    [ $rc -ne 0 ] && status=1
    printf '%-14s rc=%-3d %5ds  %s\n' "$name" "$rc" "$((SECONDS - t0))" "$*" | tee -a "$out/summary.txt"
    tail -n 3 "$out/$name.log"
}

part pytest-gpu "$PY" -m pytest -m gpu -q -rs --junitxml="$out/pytest-gpu.xml"
part kernels "$PY" bench/kernels.py --device cuda "${quick[@]}" --out "$out/kernels.json"
part ig_scoring "$PY" bench/ig_scoring.py --device cuda "${quick[@]}" --out "$out/ig_scoring.json"
part step_overhead "$PY" bench/step_overhead.py --preset gpu "${overhead[@]}" --work-dir "$out/step_overhead-work" \
    --out "$out/step_overhead.json"
grep -h "default_scorer=" "$out/ig_scoring.log" >> "$out/summary.txt" 2>/dev/null
# the work dir holds a 3B model and checkpoints; keep the logs and JSON only
rm -rf "$out/step_overhead-work"
part peer_trl "$PY" bench/peer_trl.py --preset gpu "${peer[@]}" --work-dir "$out/peer_trl-work" --out "$out/peer_trl.json"
grep -h "igsearch_grpo_vs_trl" "$out/peer_trl.log" >> "$out/summary.txt" 2>/dev/null
rm -rf "$out/peer_trl-work"

echo "results: $out (summary.txt lists each part)"
[ $status -ne 0 ] && echo "gpu_suite: at least one part failed" >&2
exit $status
