#!/usr/bin/env bash
# Builds the CUDA-enabled binaries here (no GPU needed) and gathers them, with
# the shared libraries the GPU machine lacks, into gpu-pkg/ for the device
# tool to carry. Then, on the GPU machine: scripts/gpu_check.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DGPTC_NATIVE=OFF -DGPTC_GPU_TESTS=ON >/dev/null
cmake --build build-gpu -j"$(nproc)"
rm -rf gpu-pkg && mkdir -p gpu-pkg/lib
cp build-gpu/gptc gpu-pkg/
# libgptc.so for the Python package (tests/gpu/devices_check.py)
cp build-gpu/libgptc.so gpu-pkg/lib/ && strip --strip-unneeded gpu-pkg/lib/libgptc.so
# Only the tests that exercise the GPU: the device tool carries at most 64 MiB.
for t in test_cuda test_kernels test_sample test_beam test_batch; do
  find build-gpu/tests -maxdepth 2 -type f -perm -u+x -name "$t" -exec cp {} gpu-pkg/ \;
done
strip --strip-unneeded gpu-pkg/gptc gpu-pkg/test_*
# bench/launch_floor.cu: what a chain of dependent kernels costs on the card.
cp build-gpu/launch_floor gpu-pkg/
# bench/lt_rows.cu: whether a cuBLASLt product's rows depend on their neighbours.
cp build-gpu/lt_rows gpu-pkg/ && strip --strip-unneeded gpu-pkg/lt_rows
# GPU_PKG_DROP="test_cuda ...": leave those out (a smaller bundle beside a large carry).
for f in ${GPU_PKG_DROP:-}; do rm -f "gpu-pkg/$f"; done
# Libraries from Debian packages that the GPU image may not have; the CUDA
# libraries (cuBLASLt) come from the GPU machine's own toolkit.
for lib in $(ldd build-gpu/gptc | awk '/=> \// {print $3}'); do
  case "$(basename "$lib")" in
    libpcre2-8.so*|libcjson.so*|libgomp.so*|libmicrohttpd.so*) cp -L "$lib" gpu-pkg/lib/ ;;
  esac
done
# libcurl (Hub downloads) and the libraries it needs beyond glibc, in lib/curl/:
# gpu_check.sh puts them on the library path only on a machine without libcurl
# (or without GnuTLS, which libmicrohttpd, for gptc serve, needs too).
mkdir -p gpu-pkg/lib/curl
curl_so=$(ldd build-gpu/gptc | awk '/libcurl\.so/ {print $3}')
for lib in $curl_so $(ldd "$curl_so" | awk '/=> \// {print $3}'); do
  case "$(basename "$lib")" in
    libc.so*|libm.so*|libdl.so*|librt.so*|libpthread.so*|libresolv.so*|ld-linux*) ;;
    *) cp -L "$lib" gpu-pkg/lib/curl/ ;;
  esac
done
# The device tool carries at most 64 MiB with the repository's files (about
# 35 MB): ship the package compressed; gpu_check.sh unpacks it, with
# Python's tarfile (the GPU machine may lack xz). One xz stream with a 64 MiB
# dictionary (-9, one thread: threads cut the stream into blocks) finds each
# binary's copy of the same fat CUDA code in the one before it: 29 MB -> 11 MB
# with five 25 MB binaries.
tar -C gpu-pkg -cf - . | xz -9 -T1 > gpu-pkg.tar.xz
rm -rf gpu-pkg && mkdir gpu-pkg && mv gpu-pkg.tar.xz gpu-pkg/bundle.tar.xz
du -sh gpu-pkg
