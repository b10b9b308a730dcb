#!/usr/bin/env bash
# On the GPU machine (carrying gpu-pkg/ from scripts/gpu_package.sh): batch-1
# decode ms/token of environment-switch variants side by side, the variants
# taken in turn REPS times (A B A B ...) so that a drift of the card shows.
# usage: bench/decode_ab.sh 'X=0' 'GPTC_GEMV_RB=16' ...   (X=0: the default)
# A variant's GPTC=PATH runs that binary instead of gpu-pkg/gptc (two builds
# in one call: scripts/gpu_ab_binary.sh keeps one as gpu-pkg-ab/NAME.xz, and
# GPTC=gpu-pkg-ab/NAME runs it, unpacked here on first use).
# SHAPES (default: the four GPT-2 sizes), REPS (2), PROMPT (16), NEW (256),
# BACKEND (cuda), BENCH_ARGS (more gptc bench flags, e.g. "--do-sample --top-k 50"
# for sampling steps at batch 1). BATCH="32 128": batches of that many prompts instead, each
# run's device ms per decode pass (GPTC_CUDA_PASS_PROF=1); PROF=2 adds the
# ms per kernel kind (the passes then run uncaptured, an event per kernel);
# STEP=1 the wall ms of a decode step instead (gptc bench's median: the
# device's pass plus what the host adds between passes).
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
# One run's number: batch 1's decode ms/token, or a batch's device ms per
# decode pass (with PROF=2 followed by each kernel kind's).
one() { # variant, binary, shape, batch
  if [ -z "$4" ]; then
    # shellcheck disable=SC2086 # a variant is several words on purpose
    env $1 "$2" bench --backend "${BACKEND:-cuda}" --shape "$3" --prompt-len "${PROMPT:-16}" \
      --new-tokens "${NEW:-256}" ${BENCH_ARGS:-} 2>&1 | grep -oE 'decode[^0-9]*[0-9.]+ ms' | grep -oE '[0-9.]+ ms'
  elif [ -n "${STEP:-}" ]; then
    # shellcheck disable=SC2086
    env $1 "$2" bench --backend "${BACKEND:-cuda}" --shape "$3" --prompt-len "${PROMPT:-128}" \
      --new-tokens "${NEW:-64}" --batch "$4" 2>&1 | grep -oE '^decode +[0-9.]+ ms/step' | grep -oE '[0-9.]+ ms'
  else
    # shellcheck disable=SC2086
    env GPTC_CUDA_PASS_PROF="${PROF:-1}" $1 "$2" bench --backend "${BACKEND:-cuda}" --shape "$3" \
      --prompt-len "${PROMPT:-128}" --new-tokens "${NEW:-64}" --batch "$4" 2>&1 |
      grep -oE 'per pass: device [0-9.]+ ms|^ +[a-z]+ +[0-9.]+ ms per pass' |
      sed -E 's/per pass: device //; s/^ +([a-z]+) +([0-9.]+) ms per pass/\1 \2/' | tr '\n' ' '
  fi
}
for shape in ${SHAPES:-gpt2 gpt2-medium gpt2-large gpt2-xl}; do
  for n in ${BATCH:-"-"}; do
    [ "$n" = - ] && n=
    for v in "$@"; do
      line="$shape${n:+ batch $n} [$v]"
      bin=$(binary "$v")
      for r in $(seq "${REPS:-2}"); do
        ms=$(one "$v" "$bin" "$shape" "$n")
        line="$line ${ms:-failed}${PROF:+ |}"
      done
      echo "$line"
    done
  done
done
