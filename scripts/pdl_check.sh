#!/usr/bin/env bash
# Whether ptxas moved a kernel's loads past its PDL wait (no GPU needed).
# A kernel launched with programmatic dependent launch loads its weights
# before griddepcontrol.wait so that they are in flight while the previous
# kernel finishes; ptxas may still schedule the wait (SASS: ACQBULK) above
# read-only loads, which then start only after that kernel is done (session 9
# found gpt2-xl's one-token products so: 3.5% of its decode step). Compiles
# each src/cuda/*.cu for sm_90 to PTX and to a cubin, disassembles the cubin
# with nvdisasm (PyPI's nvidia-cuda-nvdisasm, into .venv-tools/ if missing)
# and lists the kernels with fewer loads before the wait in the SASS than in
# the PTX. A heuristic: ptxas may also merge or split loads.
# usage: scripts/pdl_check.sh [FILE.cu...]   (default: every src/cuda/*.cu)
set -euo pipefail
cd "$(dirname "$0")/.."
nvdisasm=$(command -v nvdisasm || true)
if [ -z "$nvdisasm" ]; then
  [ -d .venv-tools ] || python3 -m venv .venv-tools
  nvdisasm=$(find -L .venv-tools -path '*/bin/nvdisasm' -type f 2>/dev/null | head -1)
  if [ -z "$nvdisasm" ]; then
    .venv-tools/bin/pip install -q nvidia-cuda-nvdisasm
    nvdisasm=$(find -L .venv-tools -path '*/bin/nvdisasm' -type f | head -1)
  fi
  chmod +x "$nvdisasm"
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
flags=(-DGPTC_HAVE_CUDA -D_POSIX_C_SOURCE=200809L -Iinclude -Isrc -O3 -DNDEBUG -arch=sm_90 -std=c++17)
status=0
for f in "${@:-src/cuda/*.cu}"; do
  for g in $f; do
    b=$(basename "$g" .cu)
    nvcc "${flags[@]}" -ptx "$g" -o "$tmp/$b.ptx"
    nvcc "${flags[@]}" -cubin "$g" -o "$tmp/$b.cubin"
    "$nvdisasm" -c "$tmp/$b.cubin" > "$tmp/$b.sass"
    echo "== $g"
    python3 scripts/pdl_check.py "$tmp/$b.ptx" "$tmp/$b.sass" || status=1
  done
done
exit $status
