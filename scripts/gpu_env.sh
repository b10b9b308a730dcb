# Sourced from the repository root by the scripts that run on the GPU machine
# (scripts/gpu_check.sh, tests/gpu/batch_check.sh, bench/gpu_batch_serve.sh),
# carrying gpu-pkg/ from scripts/gpu_package.sh: unpacks the binaries (shipped
# compressed, unpacked with Python's tarfile: the machine may lack xz), makes
# $out (from $OUT, else /tmp/gptc-out) and sets the library path, GPTC_ROOT
# and GPTC_BIN; and status (0) and run, the checks' way of running a test.
if [ -f gpu-pkg/bundle.tar.xz ] && [ ! -x gpu-pkg/gptc ]; then
  python3 -c "import tarfile; tarfile.open('gpu-pkg/bundle.tar.xz').extractall('gpu-pkg')"
fi
out=${OUT:-/tmp/gptc-out}
mkdir -p "$out"
cublas=$(ls -d /usr/local/cuda/lib64 2>/dev/null)
torchlibs=$(python3 -c "import os, nvidia.cublas as c; print(os.path.join(os.path.dirname(c.__file__), 'lib'))" 2>/dev/null || true)
export LD_LIBRARY_PATH="$PWD/gpu-pkg/lib:${cublas}:${torchlibs}:${LD_LIBRARY_PATH:-}"
# libcurl, for a machine without it (gpu_package.sh says why it is kept apart).
{ ldconfig -p | grep -q 'libcurl\.so\.4 ' && ldconfig -p | grep -q 'libgnutls\.so\.30 '; } ||
  export LD_LIBRARY_PATH="$PWD/gpu-pkg/lib/curl:$LD_LIBRARY_PATH"
export GPTC_ROOT=$PWD GPTC_BIN=$PWD/gpu-pkg/gptc
# run name command...: logs to $out/name.log, prints its time, last line and
# failures, sets status=1 if it fails.
status=0
run() { # name, command...: log to $out/name.log, print the failures and the last line
  local name=$1; shift
  local t0=$SECONDS
  "$@" > "$out/$name.log" 2>&1 || status=1
  echo "== $name ($((SECONDS - t0)) s): $(tail -1 "$out/$name.log")"
  grep -E '^FAIL|FAIL:|differ' "$out/$name.log" | head -12
}
