#!/usr/bin/env bash
# On the GPU machine (carrying gpu-pkg/ from scripts/gpu_package.sh): batch-1
# decode ms/token of environment-switch variants side by side, the variants
# taken in turn REPS times (A B A B ...) so that a drift of the card shows.
# usage: bench/decode_ab.sh 'X=0' 'GPTC_GEMV_RB=16' ...   (X=0: the default)
# A variant's GPTC=PATH runs that binary instead of gpu-pkg/gptc (two builds
# in one call: scripts/gpu_ab_binary.sh keeps one as gpu-pkg-ab/NAME.xz, and
# GPTC=gpu-pkg-ab/NAME runs it, unpacked here on first use).
# SHAPES (default: the four GPT-2 sizes), REPS (2), PROMPT (16), NEW (256),
# BACKEND (cuda).
set -u -o pipefail
cd "$(dirname "$0")/.."
. scripts/gpu_env.sh
[ $# -gt 0 ] || { echo "usage: bench/decode_ab.sh VAR=VALUE... (one argument a variant)" >&2; exit 2; }
# The binary of a variant: its GPTC=PATH (a .xz beside PATH unpacked), else gpu-pkg/gptc.
binary() {
  local w bin=gpu-pkg/gptc
  for w in $1; do [[ $w == GPTC=* ]] && bin=${w#GPTC=}; done
  if [ ! -x "$bin" ] && [ -f "$bin.xz" ]; then
    python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" \
      "$bin.xz" "$bin" && chmod +x "$bin"
  fi
  echo "$bin"
}
for shape in ${SHAPES:-gpt2 gpt2-medium gpt2-large gpt2-xl}; do
  for v in "$@"; do
    line="$shape [$v]"
    bin=$(binary "$v")
    for r in $(seq "${REPS:-2}"); do
      # shellcheck disable=SC2086 # a variant is several words on purpose
      ms=$(env $v "$bin" bench --backend "${BACKEND:-cuda}" --shape "$shape" --prompt-len "${PROMPT:-16}" \
        --new-tokens "${NEW:-256}" 2>&1 | grep -oE 'decode[^0-9]*[0-9.]+ ms' | grep -oE '[0-9.]+ ms')
      line="$line ${ms:-failed}"
    done
    echo "$line"
  done
done
