#!/usr/bin/env bash
# On the GPU machine (carrying gpu-pkg/ from scripts/gpu_package.sh): the
# checks and timings of the prefill path - the kernel tests (attention
# against float64, paged = contiguous), test_cuda and the batch tests on
# CUDA (a batch's prompts = sessions, bitwise), racecheck and memcheck of a
# gpt2-shape prefill through the tensor-core attention, then prefill of
# 1024 tokens for the gpt2 and gpt2-xl shapes with the per-phase profile.
# SHAPES= overrides the shapes; SKIP_TESTS=1 times only.
set -u -o pipefail
cd "$(dirname "$0")/../.."
. scripts/gpu_env.sh
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv,noheader
if [ -z "${SKIP_TESTS:-}" ]; then
  run test_kernels gpu-pkg/test_kernels
  grep -E '^ok.*attention f16.*mma' "$out/test_kernels.log" | head -8
  run test_cuda gpu-pkg/test_cuda
  for dt in f16 bf16; do
    run test_batch-cuda-$dt env GPTC_BATCH_BACKEND=cuda GPTC_BATCH_DTYPE=$dt gpu-pkg/test_batch
  done
  # A 200-token prompt: four query tiles, both key groups, a causal edge
  # inside a tile.
  san() { compute-sanitizer --tool $1 gpu-pkg/gptc bench --backend cuda --shape gpt2 --prompt-len 200 \
    --new-tokens 2 > "$out/$1.log" 2>&1; }
  san memcheck
  echo "== memcheck: $(grep -E 'SUMMARY' "$out/memcheck.log" | tail -1)"
  grep -q 'ERROR SUMMARY: 0 errors' "$out/memcheck.log" || status=1
  san racecheck
  echo "== racecheck: $(grep -E 'SUMMARY' "$out/racecheck.log" | tail -1), by kernel:"
  grep 'reported between' "$out/racecheck.log" | grep -oE 'at [A-Za-z_0-9]+' | sort | uniq -c
  # cuBLASLt's own nvjet kernels report hazards (with or without gptc's
  # changes, NOTES-cuda.md); any other kernel fails the check.
  grep 'reported between' "$out/racecheck.log" | grep -v ' at nvjet_' | grep -q . && status=1
  # Prompts of a batch side by side on streams (fp16/bf16, gelu_new): a batch
  # of long prompts gives each the ids it gets alone, with the streams and
  # without them (GPTC_PREFILL_STREAMS=0).
  python3 - > /tmp/long_prompts.txt <<'PY'
words = "the quick brown fox jumps over a lazy dog while seven wizards quietly judge boxing matches".split()
for i in range(7):
    print(" ".join(words[(i * 3 + k) % len(words)] for k in range(20 + 9 * i)))
PY
  for dt in f16 bf16; do
    : > /tmp/alone.txt
    while IFS= read -r line; do
      gpu-pkg/gptc generate -m tests/fixtures/gpt2vocab-f16 --backend cuda --dtype $dt --prompt "$line" \
        --max-new-tokens 12 --ids >> /tmp/alone.txt 2>/dev/null
    done < /tmp/long_prompts.txt
    for ps in 4 0; do
      GPTC_PREFILL_STREAMS=$ps gpu-pkg/gptc generate -m tests/fixtures/gpt2vocab-f16 --backend cuda --dtype $dt \
        --prompts-file /tmp/long_prompts.txt --batch-size 7 --max-new-tokens 12 --ids > /tmp/batch.txt 2>/dev/null
      if cmp -s /tmp/alone.txt /tmp/batch.txt && [ -s /tmp/batch.txt ]; then
        echo "== long prompts $dt, prefill streams $ps: batch = one at a time"
      else
        echo "== long prompts $dt, prefill streams $ps: DIFFERENT from one at a time"; status=1
        diff /tmp/alone.txt /tmp/batch.txt | head -6
      fi
    done
  done
  compute-sanitizer --tool memcheck gpu-pkg/gptc generate -m tests/fixtures/gpt2vocab-f16 --backend cuda \
    --prompts-file /tmp/long_prompts.txt --batch-size 7 --max-new-tokens 4 --ids > "$out/memcheck-streams.log" 2>&1
  echo "== memcheck, long prompts side by side: $(grep -E 'SUMMARY' "$out/memcheck-streams.log" | tail -1)"
  grep -q 'ERROR SUMMARY: 0 errors' "$out/memcheck-streams.log" || status=1
fi
for shape in ${SHAPES:-gpt2 gpt2-xl}; do
  for ps in 4 0; do
    echo "== $shape batch 32 x 128 + 128, prefill streams $ps"
    GPTC_PREFILL_STREAMS=$ps gpu-pkg/gptc bench --backend cuda --shape $shape --prompt-len 128 --new-tokens 128 \
      --batch 32 2>&1 | grep -E 'prefill|decode|tokens/s' | head -4
  done
done
for shape in ${SHAPES:-gpt2 gpt2-xl}; do
  echo "== $shape"
  gpu-pkg/gptc bench --backend cuda --shape $shape --prompt-len 1024 --new-tokens 0 2>&1 | grep prefill
  GPTC_CUDA_PROF_PREFILL=1024 gpu-pkg/gptc bench --backend cuda --shape $shape --prompt-len 1024 \
    --new-tokens 0 2>&1 | grep -A14 'prefill profile'
done
exit $status
