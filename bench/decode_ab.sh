#!/usr/bin/env bash
# On the GPU machine (carrying gpu-pkg/ from scripts/gpu_package.sh): batch-1
# decode ms/token of environment-switch variants side by side, the variants
# taken in turn REPS times (A B A B ...) so that a drift of the card shows.
# usage: bench/decode_ab.sh 'X=0' 'GPTC_GEMV_RB=16' ...   (X=0: the default)
# SHAPES (default: the four GPT-2 sizes), REPS (2), PROMPT (16), NEW (256).
set -u -o pipefail
cd "$(dirname "$0")/.."
. scripts/gpu_env.sh
[ $# -gt 0 ] || { echo "usage: bench/decode_ab.sh VAR=VALUE... (one argument a variant)" >&2; exit 2; }
for shape in ${SHAPES:-gpt2 gpt2-medium gpt2-large gpt2-xl}; do
  for v in "$@"; do
    line="$shape [$v]"
    for r in $(seq "${REPS:-2}"); do
      # shellcheck disable=SC2086 # a variant is several words on purpose
      ms=$(env $v gpu-pkg/gptc bench --backend cuda --shape "$shape" --prompt-len "${PROMPT:-16}" \
        --new-tokens "${NEW:-256}" 2>&1 | grep -oE 'decode[^0-9]*[0-9.]+ ms' | grep -oE '[0-9.]+ ms')
      line="$line ${ms:-failed}"
    done
    echo "$line"
  done
done
