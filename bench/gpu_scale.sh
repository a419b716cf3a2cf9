#!/usr/bin/env bash
# Issue 42 in one device call (at most 10 minutes): the scale study on a real server at a production
# server's pace, llama.cpp's llama-server with CUDA, and on the replay of its capture.
#   here:  .venv/bin/python -m langbench bundle gpu --server llama-cpp --out gpu-bundle   (≈ 32 MiB)
#   there: bash bench/gpu_scale.sh gpu-bundle OUTDIR
# Steps, each stopped by its own deadline so that something always comes back:
#   wheels       the bundle's wheels into WORK/site (runner and every Python client)
#   gpu-host     llama-server built with CUDA for this GPU (≈ 200 s), the text-only 2-block model,
#                one completion checked for every layer on the GPU (gpu-host --server llama-cpp)
#   sweeps       parameters/scale-gpu.yaml and scale-gpu-agent.yaml (capture: true)
#   profiles     `python -m langbench profile` of each capture (into its run directory)
#   replays      each file's replay twin (bench/replay_twin.py: time_scale 1, load profile)
#   pack         each run, data only (no jobs/), as OUTDIR/<run>.tar.xz; OUTDIR/timings.txt (every
#                step's seconds) and OUTDIR/gpu-host.log.xz (gpu-host's output, the build log's tail)
# BUDGET=seconds for all of it (default 570: a device call's 600 less a margin); each sweep gets an
# even share of what is left then (a sweep that ends early leaves its time to the next), stops
# with SIGINT at its share (resumable: a second call with the same WORK on a warm machine reuses the
# build and model and resumes the runs), and the packing keeps PACK_S (default 30) for itself.
# FILES="scale-gpu scale-gpu-agent" (the parameter files to run), REPLAY=0 (no replay twins),
# TAG=h100 (run ids' suffix; default: the GPU's model, from nvidia-smi), WORK=/tmp/langbench-gpu.
set -uo pipefail
started=$(date +%s)
bundle=$(realpath "$1"); out=$(realpath -m "$2")
budget=${BUDGET:-570}; deadline=$(( started + budget )); pack_s=${PACK_S:-30}
work=${WORK:-/tmp/langbench-gpu}
files=${FILES:-scale-gpu scale-gpu-agent}
tag=${TAG:-$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | grep -oE '[A-Z][0-9]{2,4}' | head -1 | tr 'A-Z' 'a-z')}
tag=${tag:-gpu}
cd "$(dirname "$0")/.."
mkdir -p "$work" "$out"
export PYTHONPATH="$work/site:$PWD/lib" XDG_CACHE_HOME="$work/cache" PYTHONUNBUFFERED=1
timings="$out/timings.txt"
printf 'bench/gpu_scale.sh on %s, budget %s s, started %s\n' \
  "$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)" "$budget" "$(date -u +%FT%TZ)" > "$timings"

left() { echo $(( deadline - $(date +%s) )); }
step() {  # step NAME SECONDS CMD...: run CMD for at most SECONDS (SIGINT, then KILL 20 s later), timed
  local name=$1 limit=$2 t0 rc; shift 2
  if [ "$limit" -lt 1 ]; then echo "gpu_scale: no time left for $name" | tee -a "$timings"; return 124; fi
  t0=$(date +%s)
  echo "== $(date -u +%T) $name (at most ${limit} s; $(left) s left)"
  timeout -s INT -k 20 "$limit" "$@"; rc=$?
  printf '%-34s %5d s  exit %s%s\n' "$name" "$(( $(date +%s) - t0 ))" "$rc" \
    "$([ "$rc" = 124 ] && echo ' (stopped at its deadline)')" | tee -a "$timings"
  return $rc
}
pack() {  # every run of this tag, data only; gpu-host's output; the timings
  local t0 d run f
  t0=$(date +%s)
  echo "== $(date -u +%T) pack"
  for d in outputs/*-"$tag"; do
    [ -d "$d" ] || continue
    run=$(basename "$d")
    tar -C outputs -cJf "$out/$run.tar.xz" --exclude="$run/jobs" --exclude="$run/.lock" "$run"
  done
  { cat "$work/gpu-host.log" 2>/dev/null; echo "--- llama-build.log (tail)"; tail -n 200 "$work/llama-build.log" 2>/dev/null; } \
    | xz > "$out/gpu-host.log.xz"
  printf '%-34s %5d s\n' "pack" "$(( $(date +%s) - t0 ))" | tee -a "$timings"
  printf '%-34s %5d s\n' "total" "$(( $(date +%s) - started ))" | tee -a "$timings"
  ls -la "$out"
  for f in "$out"/*; do
    [ "$(stat -c %s "$f")" -le $(( 16 * 2**20 )) ] || echo "gpu_scale: $f is over 16 MiB: it will not come back"
  done
  cat "$timings"
}

if [ ! -e "$work/site/.installed" ]; then
  step "wheels" 120 python3 -m pip install -q --no-index --no-deps --no-compile --target "$work/site" \
    "$bundle"/wheels/*.whl && touch "$work/site/.installed" || { pack; exit 1; }
fi
step "gpu-host (build, model, check)" $(( $(left) - pack_s )) \
  bash -c "python3 -m langbench gpu-host '$bundle' --work '$work' --server llama-cpp ${GPU_HOST_ARGS:-} 2>&1 | tee '$work/gpu-host.log'; exit \${PIPESTATUS[0]}" \
  || { pack; exit 1; }

sweeps=()  # "PARAMS RUN_ID": the real runs first, then the twins (written once each profile exists)
for f in $files; do sweeps+=("parameters/$f.yaml $f-$tag"); done
n_left=$(( $(wc -w <<<"$files") * ( ${REPLAY:-1} == 0 ? 1 : 2 ) ))
sweep() {  # sweep PARAMS RUN_ID: an even share of the time left among the sweeps still to run
  local share=$(( ( $(left) - pack_s - 10 * n_left ) / n_left ))
  n_left=$(( n_left - 1 ))
  if [ "$share" -lt 30 ]; then echo "gpu_scale: no time left for $2" | tee -a "$timings"; return 1; fi
  step "sweep $2" "$share" python3 -m langbench sweep "$1" --run-id "$2"
}
for s in "${sweeps[@]}"; do sweep $s; done
if [ "${REPLAY:-1}" != 0 ]; then
  for f in $files; do
    run="outputs/$f-$tag"
    [ -f "$run/capture.jsonl" ] || { echo "gpu_scale: $run has no capture: no replay of it" | tee -a "$timings"; n_left=$(( n_left - 1 )); continue; }
    step "profile $f-$tag" 60 python3 -m langbench profile "$run" || { n_left=$(( n_left - 1 )); continue; }
    step "twin $f" 30 python3 bench/replay_twin.py "parameters/$f.yaml" "$run/profile.json" "$work/$f-replay.yaml" \
      || { n_left=$(( n_left - 1 )); continue; }
    sweep "$work/$f-replay.yaml" "$f-replay-$tag"
  done
fi
pack
exit 0
