#!/usr/bin/env bash
# The GPU study as one job on a GPU host without internet (README, "The GPU study").
#   here:  .venv/bin/python -m langbench bundle gpu --out gpu-bundle     (≤ 64 MiB)
#   there: bash bench/gpu_study.sh gpu-bundle OUTDIR [PARAMS]
#   CLUSTER=local (one Dask worker and one embedded Ollama per GPU; CUDA_VISIBLE_DEVICES=0 for one), RUN_ID=… to name or resume
#   a run, SWEEP_TIMEOUT=seconds to stop the sweep (resumably) and pack what it has,
#   DEADLINE=epoch seconds to stop it by then, LENGTH_PROBE=1 to add bench/length_probe.py's file to a finished run.
#   GPU_HOST_ARGS="--server llama-cpp" builds llama-server with CUDA instead of Ollama's backend (issue 42);
#   bench/gpu_scale.sh runs the scale study on it, its profiles and replay twins in one call.
# Installs the bundle's wheels, builds the CUDA backend, writes and registers the synthetic
# gemma3:latest-shaped model, checks the server offloads to the GPU, runs the sweep, and packs
# the run (no jobs/, no HTML) into OUTDIR/run.tar.xz, also when the sweep stops early.
set -uo pipefail
bundle=$(realpath "$1"); out=$(realpath "$2"); params=${3:-parameters/tr112-gpu.yaml}
work=${WORK:-/tmp/langbench-gpu}
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | awk '{print tolower($NF)}')
ngpu=$(nvidia-smi -L 2>/dev/null | wc -l)
[ -n "${CUDA_VISIBLE_DEVICES+x}" ] && ngpu=$(tr ',' '\n' <<<"$CUDA_VISIBLE_DEVICES" | grep -c .)  # --cluster local uses those
[ "${CLUSTER:-}" ] && [ "$ngpu" -gt 1 ] && gpu="${gpu}x${ngpu}"
run_id=${RUN_ID:-tr112-gpu-${gpu:-unknown}}
cd "$(dirname "$0")/.."
mkdir -p "$work" "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --target "$work/site" "$bundle"/wheels/*.whl || exit 1
export PYTHONPATH="$work/site:$PWD/lib" XDG_CACHE_HOME="$work/cache" PATH="$work/ollama/bin:$PATH"
export PYTHONUNBUFFERED=1
step() { echo "== $(date -u +%T) $*"; }
step "gpu-host"; python3 -m langbench gpu-host "$bundle" --work "$work" ${GPU_HOST_ARGS:-} || exit 1
[ "${DEADLINE:-}" ] && SWEEP_TIMEOUT=$(( DEADLINE - $(date +%s) ))  # stop by this epoch second
step "sweep $params ${CLUSTER:+on cluster $CLUSTER} ${SWEEP_TIMEOUT:+(stops after ${SWEEP_TIMEOUT} s)}"
timeout -s INT "${SWEEP_TIMEOUT:-0}" python3 -m langbench sweep "$params" --run-id "$run_id" \
  ${CLUSTER:+--cluster "$CLUSTER"} ${SWEEP_ARGS:-}; rc=$?
if [ "$rc" = 0 ] && [ "${LENGTH_PROBE:-}" ]; then  # throughput and TTFT against num_predict, one GPU
  step "length probe"
  CUDA_VISIBLE_DEVICES=0 python3 bench/length_probe.py --model gemma3-4b-shape-synthetic:q4_k_m \
    --num-gpu 99 --lengths 64 128 256 512 --reps 5 --out "outputs/$run_id/length_probe.jsonl"
fi
step "sweep exit $rc; packing"
tar -C outputs -cJf "$out/run.tar.xz" --exclude="$run_id/jobs" --exclude="$run_id/.lock" --exclude="$run_id/length_probe.ollama.log" "$run_id"
cp outputs/"$run_id"/ollama.log "$out/ollama.log" 2>/dev/null; xz -f "$out/ollama.log" 2>/dev/null
step "done"; touch "$out/done"
exit $rc
