#!/usr/bin/env bash
# Whether ptxas moved a kernel's loads past its PDL wait (no GPU needed).
# A kernel launched with programmatic dependent launch loads its weights
# before griddepcontrol.wait so that they are in flight while the previous
# kernel finishes; ptxas may still schedule the wait (SASS: ACQBULK) above
# read-only loads, which then start only after that kernel is done (session 9
# found gpt2-xl's one-token products so: 3.5% of its decode step). Compiles
# each src/cuda/*.cu for sm_90 to PTX and to a cubin, disassembles the cubin
# with nvdisasm (PyPI's nvidia-cuda-nvdisasm: install-deps.sh --test puts it
# in .venv where nvcc is found; else into .venv-tools/)
# and lists the kernels with fewer loads before the wait in the SASS than in
# the PTX. A heuristic: ptxas may also merge or split loads.
# usage: scripts/pdl_check.sh [FILE.cu...]   (default: every src/cuda/*.cu;
# NVCC=PATH: that nvcc; CTest runs it as the test pdl_check)
set -euo pipefail
cd "$(dirname "$0")/.."
nvdisasm=$(command -v nvdisasm || true)
for v in .venv .venv-tools; do
  [ -n "$nvdisasm" ] || nvdisasm=$(find -L $v -path '*/bin/nvdisasm' -type f 2>/dev/null | head -1 || true)
done
if [ -z "$nvdisasm" ]; then
  [ -d .venv-tools ] || python3 -m venv .venv-tools
  .venv-tools/bin/pip install -q nvidia-cuda-nvdisasm
  nvdisasm=$(find -L .venv-tools -path '*/bin/nvdisasm' -type f | head -1)
fi
[ -x "$nvdisasm" ] || chmod +x "$nvdisasm"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export nvdisasm tmp NVCC
# One nvcc run a file (-keep leaves the PTX beside the cubin), the files side
# by side; each file's report printed whole, in order.
one() {
  local g=$1 b
  b=$(basename "$g" .cu)
  mkdir -p "$tmp/$b"
  "${NVCC:-nvcc}" -DGPTC_HAVE_CUDA -D_POSIX_C_SOURCE=200809L -Iinclude -Isrc -O3 -DNDEBUG -arch=sm_90 -std=c++17 \
    -cubin -keep -keep-dir "$tmp/$b" "$g" -o "$tmp/$b/$b.cubin"
  "$nvdisasm" -c "$tmp/$b/$b.cubin" > "$tmp/$b/$b.sass"
  { echo "== $g"; python3 scripts/pdl_check.py "$tmp/$b/$b.ptx" "$tmp/$b/$b.sass"; } > "$tmp/$b.report" 2>&1
}
export -f one
files=("${@:-}")
[ $# -gt 0 ] || files=(src/cuda/*.cu)
printf '%s\n' "${files[@]}" | xargs -P "$(nproc)" -I{} bash -c 'one "$@" || touch "$tmp/failed"' _ {}
status=0
for g in "${files[@]}"; do
  cat "$tmp/$(basename "$g" .cu).report" 2>/dev/null || { echo "== $g: not checked"; status=1; }
done
[ ! -e "$tmp/failed" ] || status=1
exit $status
