#!/usr/bin/env bash
# On the GPU machine (carrying gpu-pkg/ from scripts/gpu_package.sh): the
# checks and timings of the prefill path - the kernel tests (attention
# against float64, paged = contiguous), test_cuda and the batch tests on
# CUDA (a batch's prompts = sessions, bitwise; also on a gpt2-shape model),
# racecheck and memcheck of a gpt2-shape prefill through the tensor-core
# attention and memcheck of a batch's, then a batch's timings and prefill of
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
  # A batch's prompts share each product and the attention launch: a batch of
  # long prompts gives each the ids it gets alone (fixture: 8-wide heads), and
  # so does a gpt2-shape model (64-wide heads: the tensor-core attention of
  # several prompts in one launch), f16 and bf16.
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
    gpu-pkg/gptc generate -m tests/fixtures/gpt2vocab-f16 --backend cuda --dtype $dt \
      --prompts-file /tmp/long_prompts.txt --batch-size 7 --max-new-tokens 12 --ids > /tmp/batch.txt 2>/dev/null
    if cmp -s /tmp/alone.txt /tmp/batch.txt && [ -s /tmp/batch.txt ]; then
      echo "== long prompts $dt: batch = one at a time"
    else
      echo "== long prompts $dt: DIFFERENT from one at a time"; status=1
      diff /tmp/alone.txt /tmp/batch.txt | head -6
    fi
    run test_batch-shape-gpt2-$dt env GPTC_BATCH_SHAPE=gpt2 GPTC_BATCH_BACKEND=cuda GPTC_BATCH_DTYPE=$dt \
      gpu-pkg/test_batch
    run test_batch-shape-tiny64-$dt env GPTC_BATCH_SHAPE=tiny64 GPTC_BATCH_BACKEND=cuda GPTC_BATCH_DTYPE=$dt \
      gpu-pkg/test_batch
  done
  compute-sanitizer --tool memcheck gpu-pkg/gptc bench --backend cuda --shape gpt2 --batch 5 --prompt-len 150 \
    --new-tokens 3 > "$out/memcheck-batch.log" 2>&1
  echo "== memcheck, a batch of gpt2 prompts: $(grep -E 'SUMMARY' "$out/memcheck-batch.log" | tail -1)"
  grep -q 'ERROR SUMMARY: 0 errors' "$out/memcheck-batch.log" || status=1
fi
for shape in ${SHAPES:-gpt2 gpt2-xl}; do
  echo "== $shape batch 32 x 128 + 128"
  gpu-pkg/gptc bench --backend cuda --shape $shape --prompt-len 128 --new-tokens 128 --batch 32 2>&1 |
    grep -E 'prefill|decode|tokens/s' | head -4
done
for shape in ${SHAPES:-gpt2 gpt2-xl}; do
  echo "== $shape"
  gpu-pkg/gptc bench --backend cuda --shape $shape --prompt-len 1024 --new-tokens 0 2>&1 | grep prefill
  GPTC_CUDA_PROF_PREFILL=1024 gpu-pkg/gptc bench --backend cuda --shape $shape --prompt-len 1024 \
    --new-tokens 0 2>&1 | grep -A14 'prefill profile'
done
exit $status
