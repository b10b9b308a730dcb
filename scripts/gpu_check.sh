#!/usr/bin/env bash
# On the GPU machine (carrying gpu-pkg/ from scripts/gpu_package.sh): the GPU
# tests, a compute-sanitizer memcheck on a small model, and the benchmark
# against transformers on the same card. Results go to $OUT (if set).
set -u -o pipefail
cd "$(dirname "$0")/.."
. scripts/gpu_env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv | tee "$out/card.txt"
status=0
for t in gpu-pkg/test_*; do
  case "$t" in *test_cuda*|*test_kernels*|*test_sample*) ;; *) continue ;; esac
  echo "== $t"
  "$t" 2>&1 | tee "$out/$(basename "$t").log" | tail -40 || true
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
done
echo "== batched generation and beam search on the CUDA backend"
for t in batch beam; do
  T=$(echo "$t" | tr a-z A-Z)
  env "GPTC_${T}_BACKEND=cuda" gpu-pkg/test_$t > "$out/test_$t-cuda.log" 2>&1 || status=1
  grep FAIL "$out/test_$t-cuda.log" | head -10
  tail -1 "$out/test_$t-cuda.log"
done
echo "== the persistent decode kernel (GPTC_CUDA_MEGA=1, an experiment): same tests"
GPTC_CUDA_MEGA=1 GPTC_CUDA_MEGA_STRICT=1 gpu-pkg/test_cuda > "$out/test_cuda-mega.log" 2>&1 || status=1
tail -1 "$out/test_cuda-mega.log"
echo "== compute-sanitizer memcheck"
compute-sanitizer --tool memcheck --leak-check full --error-exitcode 3 gpu-pkg/gptc generate \
  -m tests/fixtures/base-gelu_new --backend cuda --prompt-ids 1,2,3,4,5 --max-new-tokens 8 --ids \
  2>&1 | tail -8 || status=1
compute-sanitizer --tool memcheck --error-exitcode 3 gpu-pkg/gptc generate \
  -m tests/fixtures/gpt2vocab-f16 --backend cuda --prompt "Hello world" --max-new-tokens 8 --ids \
  2>&1 | tail -4 || status=1
compute-sanitizer --tool memcheck --error-exitcode 3 gpu-pkg/gptc generate \
  -m tests/fixtures/gpt2vocab-f16 --backend cuda --prompt "Hello world" --max-new-tokens 8 --ids \
  --do-sample --top-k 40 --top-p 0.9 --temperature 0.8 --repetition-penalty 1.2 \
  --no-repeat-ngram-size 2 --seed 7 2>&1 | tail -4 || status=1
GPTC_CUDA_MEGA=1 GPTC_CUDA_MEGA_STRICT=1 compute-sanitizer --tool memcheck --error-exitcode 3 \
  gpu-pkg/gptc generate -m tests/fixtures/act-relu2 --backend cuda --prompt-ids 1,2,3,4,5 \
  --max-new-tokens 8 --ids 2>&1 | tail -3 || status=1
echo "== compute-sanitizer memcheck: batched generation and beam search (the paged K/V cache)"
printf '%s\n' "Hello world" "The quick brown fox jumps over the lazy dog and keeps running far away" "a" \
  "Once upon a time, in a land far far away, there lived a king who had three daughters" > /tmp/prompts.txt
compute-sanitizer --tool memcheck --error-exitcode 3 gpu-pkg/gptc generate -m tests/fixtures/gpt2vocab-f16 \
  --backend cuda --prompts-file /tmp/prompts.txt --batch-size 3 --max-new-tokens 12 --ids 2>&1 | tail -2 || status=1
compute-sanitizer --tool memcheck --error-exitcode 3 gpu-pkg/gptc generate -m tests/fixtures/gpt2vocab-f16 \
  --backend cuda --prompt "Hello world, a test of beams" --num-beams 4 --max-new-tokens 12 --ids 2>&1 | tail -2 || status=1
echo "== CLI on the GPU"
gpu-pkg/gptc bench --backend cuda --shape gpt2 --prompt-len 16 --new-tokens 256
gpu-pkg/gptc bench --backend cuda --shape gpt2 --prompt-len 16 --new-tokens 64 --batch 32
echo "== benchmark (gptc vs transformers, same card)"
python3 bench/gpu_bench.py --gptc gpu-pkg/gptc --out "$out" ${GPU_BENCH_ARGS:-} 2>&1 | grep -v -i warn | tail -20
exit $status
