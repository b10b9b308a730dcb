#!/usr/bin/env bash
# On the GPU machine (carrying gpu-pkg/): ncu durations (serialized, clocks
# not locked) of one decode layer's kernels and of a prefill's first kernels,
# for each shape in SHAPES (default gpt2 gpt2-xl). One line per kernel:
# name, grid, registers, duration, DRAM throughput. The decode layer is
# taken past the first steps (SKIP kernels of the matching names).
set -u -o pipefail
cd "$(dirname "$0")/.."
. scripts/gpu_env.sh
metrics=gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,launch__registers_per_thread,launch__grid_size
# csv from ncu --csv --page raw: kernel name, grid, registers, us, DRAM %
read -r -d '' show_py <<'PY'
import csv, sys
rows = list(csv.reader(sys.stdin))
h = next((i for i, r in enumerate(rows) if "Kernel Name" in r), None)
if h is None:
    sys.exit(print("  (no kernels profiled)"))
c = {k: rows[h].index(k) for k in rows[h]}
for r in rows[h + 2:]:
    if len(r) < len(rows[h]):
        continue
    name = r[c["Kernel Name"]].split("(")[0][:60]
    us = float(r[c["gpu__time_duration.sum"]].replace(",", "")) / 1000
    print(f"  {name:<60} grid {r[c['launch__grid_size']]:>6} regs {r[c['launch__registers_per_thread']]:>4}"
          f" {us:8.2f} us  dram {r[c['dram__throughput.avg.pct_of_peak_sustained_elapsed']]:>6}%")
PY
show() { python3 -c "$show_py"; }
for shape in ${SHAPES:-gpt2 gpt2-xl}; do
  echo "== $shape: one decode layer (and what follows it)"
  ncu --clock-control none --csv --page raw --metrics $metrics --kernel-name regex:"${DECODE_KERNELS:-gemv_mma|attn_split}" \
    --launch-skip "${SKIP:-200}" --launch-count "${COUNT:-5}" \
    gpu-pkg/gptc bench --backend cuda --shape "$shape" --prompt-len 16 --new-tokens 64 2>/dev/null | show
  echo "== $shape: the first kernels of a 1024-token prefill"
  ncu --clock-control none --csv --page raw --metrics $metrics --launch-count "${PCOUNT:-14}" \
    --kernel-name regex:"${PREFILL_KERNELS:-attn|layernorm|nvjet|kv_store|embed|epilogue|sm90|gemm|cutlass}" \
    gpu-pkg/gptc bench --backend cuda --shape "$shape" --prompt-len 1024 --new-tokens 0 2>/dev/null | show
  if [ -n "${BATCH:-}" ]; then
    echo "== $shape: one decode layer of a batch of $BATCH (128-token prompts)"
    ncu --clock-control none --csv --page raw --metrics $metrics \
      --kernel-name regex:"${BATCH_KERNELS:-gemv_mma|gemv_pipe|attn_split|ln_stage}" --launch-skip "${BSKIP:-400}" \
      --launch-count "${BCOUNT:-7}" gpu-pkg/gptc bench --backend cuda --shape "$shape" --batch "$BATCH" \
      --prompt-len 128 --new-tokens 16 2>/dev/null | show
  fi
done
