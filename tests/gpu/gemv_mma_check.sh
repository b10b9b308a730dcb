#!/usr/bin/env bash
# On the GPU machine (carrying gpu-pkg/ from scripts/gpu_package.sh): the
# tensor-core GEMV (gemv.cu's gemv_mma_kernel) checked and timed against the
# CUDA-core kernels it replaces for fp16 / bf16 (GPTC_GEMV_MMA=0), in one
# run on one card: test_kernels (per-kernel bounds and the bitwise batch
# invariance), test_batch and test_beam on CUDA in fp16 and bf16 (a batch =
# its sequences alone, to the bit), test_cuda, then decode ms per step at
# batch 1 / 8 / 32 / 128 for the gpt2 and gpt2-xl shapes, both kernels.
# Logs go to $OUT (if set). SKIP_TESTS=1: timings only; SHAPES, BATCHES
# override the timed points; PROF=1 adds per-kernel profiles of a decode step,
# NCU=1 Nsight Compute counters of gpt2-xl's decode GEMVs.
set -u -o pipefail
cd "$(dirname "$0")/../.."
. scripts/gpu_env.sh
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
if [ -z "${SKIP_TESTS:-}" ]; then
  run test_kernels gpu-pkg/test_kernels
  grep -E 'gemv rows' "$out/test_kernels.log" | head -30
  for dt in f16 bf16; do
    run test_batch-cuda-$dt env GPTC_BATCH_BACKEND=cuda GPTC_BATCH_DTYPE=$dt gpu-pkg/test_batch
    run test_beam-cuda-$dt env GPTC_BEAM_BACKEND=cuda GPTC_BEAM_DTYPE=$dt gpu-pkg/test_beam
  done
  # bf16 with the CUDA-core kernels too: whether a difference is the new kernel's
  run test_batch-cuda-bf16-mma0 env GPTC_GEMV_MMA=0 GPTC_BATCH_BACKEND=cuda GPTC_BATCH_DTYPE=bf16 gpu-pkg/test_batch
  run test_batch-cuda-f32 env GPTC_BATCH_BACKEND=cuda gpu-pkg/test_batch
  run test_cuda gpu-pkg/test_cuda
  echo "== memcheck: bench --shape gpt2 --batch 19 (tensor-core GEMV, several groups)"
  compute-sanitizer --tool memcheck --error-exitcode 3 gpu-pkg/gptc bench --backend cuda --shape gpt2 \
    --batch 19 --prompt-len 12 --new-tokens 3 > "$out/memcheck.log" 2>&1 || status=1
  tail -2 "$out/memcheck.log"
fi
for shape in ${SHAPES:-gpt2 gpt2-xl}; do
  for n in ${BATCHES:-1 8 32 128}; do
    for mma in 1 0; do
      printf '%-8s batch %-4s mma %s  ' "$shape" "$n" "$mma"
      if [ "$n" = 1 ]; then
        GPTC_GEMV_MMA=$mma gpu-pkg/gptc bench --backend cuda --shape "$shape" --prompt-len 16 --new-tokens 256 2>&1 |
          grep -E '^decode|^prefill' | tr -s ' ' | tr '\n' ' '
      else
        GPTC_GEMV_MMA=$mma gpu-pkg/gptc bench --backend cuda --shape "$shape" --batch "$n" --prompt-len 16 \
          --new-tokens 64 2>&1 | grep -E '^decode' | tr -s ' ' | tr '\n' ' '
      fi
      echo
    done
  done
done
if [ -n "${PROF:-}" ]; then
  for shape in gpt2 gpt2-xl; do
    for mma in 1 0; do
      echo "== profile of a batch-1 decode step at position 144, $shape, mma $mma"
      GPTC_GEMV_MMA=$mma GPTC_CUDA_PROF=144 gpu-pkg/gptc bench --backend cuda --shape $shape --prompt-len 16 \
        --new-tokens 256 2>&1 | grep -A12 "profile"
    done
  done
  for n in 32; do
    echo "== batch $n decode passes per kernel kind, gpt2-xl (mma 1)"
    GPTC_CUDA_PASS_PROF=2 gpu-pkg/gptc bench --backend cuda --shape gpt2-xl --batch $n --prompt-len 16 \
      --new-tokens 32 2>&1 | tail -14
  done
fi
if [ -n "${NCU:-}" ]; then
  for mma in 1 0; do
    echo "== ncu: gpt2-xl batch-1 decode GEMVs of one layer (qkv, proj, fc, mproj), mma $mma"
    GPTC_GEMV_MMA=$mma ncu --clock-control none --kernel-name regex:'gemv_(mma_)?kernel' --launch-skip 400 \
      --launch-count 4 --metrics gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,\
sm__warps_active.avg.pct_of_peak_sustained_active,launch__grid_size,launch__registers_per_thread,\
launch__occupancy_limit_registers,launch__occupancy_limit_shared_mem,\
smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio \
      gpu-pkg/gptc bench --backend cuda --shape gpt2-xl --prompt-len 16 --new-tokens 8 2>&1 |
      grep -E "gemv|duration|throughput|warps_active|grid_size|registers|limit|scoreboard" | sed 's/(int, int, int.*//' | cut -c1-110
  done
fi
exit $status
