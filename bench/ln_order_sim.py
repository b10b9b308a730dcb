#!/usr/bin/env python3
"""Float32 simulation of the layer-norm sum orders in src/cuda/gemv.cu.

ln_stage_row (the one-token products, ln_stage_kernel) sums a row with a block of 256 threads and
block_sum; gemv_pipe_ln_kernel's ln_stats_regs gives one warp, holding the row in registers (lane
l: float4s l + 32 k), the same bits. This checks that emulation - as landed (a full butterfly for
each virtual warp) and as the transposed halvings planned next (bench/NOTES-cuda.md, session 16:
at each level a lane keeps half of its values and receives its partner's copies, 7 shuffles a
pass) - against the block's sums, in numpy float32 (IEEE round-to-nearest adds, as FADD), the
variance's d * d + q as one rounding (the FFMA the compiler makes of `q += d * d`).
Run: .venv/bin/python bench/ln_order_sim.py   (prints the widths checked; exits 1 on a mismatch)
"""
import sys

import numpy as np

f32 = np.float32


def fma(a, b, c):
    # d * d is exact in float64 (24 + 24 bits); the sum then rounds once to float32 unless it also
    # rounds in float64 - both sides of every comparison here use this same function.
    return f32(np.float64(a) * np.float64(b) + np.float64(c))


def warp_sum(vals):  # common.cuh warp_sum: xor butterfly 16, 8, 4, 2, 1 (every lane the same)
    v = list(vals)
    for o in (16, 8, 4, 2, 1):
        v = [f32(v[p] + v[p ^ o]) for p in range(32)]
    return v


def block_sum(vals):  # common.cuh block_sum over 256 threads
    r = [warp_sum(vals[32 * w:32 * w + 32])[0] for w in range(8)]
    return warp_sum([r[l] if l < 8 else f32(0) for l in range(32)])[0]


def block_stats(x):  # ln_stage_from with 256 threads, I a multiple of 4
    I = len(x)
    s = []
    for t in range(256):
        a = f32(0)
        for i in range(4 * t, I, 1024):
            a = f32(a + f32(f32(x[i] + x[i + 1]) + f32(x[i + 2] + x[i + 3])))
        s.append(a)
    mean = f32(block_sum(s) / f32(I))
    q = []
    for t in range(256):
        a = f32(0)
        for i in range(t, I, 256):
            d = f32(x[i] - mean)
            a = fma(d, d, a)
        q.append(a)
    return mean, f32(block_sum(q) / f32(I))


def lane_partials(x, NV):
    """Each lane's eight sum partials p[w] and eight variance partials q[h * 4 + c] (after mean)."""
    n4 = len(x) // 4
    v = [[x[4 * (l + 32 * k):4 * (l + 32 * k) + 4] if l + 32 * k < n4 else None for k in range(NV)]
         for l in range(32)]
    p = []
    for l in range(32):
        row = []
        for w in range(8):
            a = f32(0)
            for k in range(w, NV, 8):
                if v[l][k] is not None:
                    e = v[l][k]
                    a = f32(a + f32(f32(e[0] + e[1]) + f32(e[2] + e[3])))
            row.append(a)
        p.append(row)

    def var_partials(mean):
        q = []
        for l in range(32):
            row = [f32(0)] * 8
            for h in range(2):
                for k in range(h, NV, 2):
                    if v[l][k] is not None:
                        for c in range(4):
                            d = f32(v[l][k][c] - mean)
                            row[h * 4 + c] = fma(d, d, row[h * 4 + c])
            q.append(row)
        return q
    return p, var_partials


def landed(x, NV=16):  # ln_stats_regs as in main: a full butterfly a virtual warp
    I = len(x)
    p, var_partials = lane_partials(x, NV)
    r = [warp_sum([p[l][w] for l in range(32)])[0] for w in range(8)]
    mean = f32(warp_sum([r[l] if l < 8 else f32(0) for l in range(32)])[0] / f32(I))
    q = var_partials(mean)
    rw = {}
    for h in range(2):
        for G in range(4):
            ys = []
            for c in range(4):
                vals = [q[8 * G + j][h * 4 + c] for j in range(8)]
                for o in (4, 2, 1):
                    vals = [f32(vals[j] + vals[j ^ o]) for j in range(8)]
                ys.append(vals[0])
            rw[G + 4 * h] = f32(f32(ys[0] + ys[2]) + f32(ys[1] + ys[3]))
    var = f32(warp_sum([rw[l] if l < 8 else f32(0) for l in range(32)])[0] / f32(I))
    return mean, var


def halve(vals, bitmask):  # ln_halve: keep the upper half where the lane bit is set, add the partner's
    out = []
    for l in range(32):
        n = len(vals[l]) // 2
        hi = 1 if l & bitmask else 0
        out.append([f32(vals[l][i + n * hi] + vals[l ^ bitmask][i + n * hi]) for i in range(n)])
    return out


def halvings(x, NV=16):  # the planned variant
    I = len(x)
    p, var_partials = lane_partials(x, NV)
    cur = halve(halve(halve(p, 16), 8), 4)
    s = [cur[l][0] for l in range(32)]
    s = [f32(s[l] + s[l ^ 2]) for l in range(32)]
    s = [f32(s[l] + s[l ^ 1]) for l in range(32)]
    mean = f32(warp_sum([s[4 * (l & 7)] if l < 8 else f32(0) for l in range(32)])[0] / f32(I))
    cur = halve(halve(halve(var_partials(mean), 4), 2), 1)
    y = [cur[l][0] for l in range(32)]
    y = [f32(y[l] + y[l ^ 2]) for l in range(32)]
    y = [f32(y[l] + y[l ^ 1]) for l in range(32)]
    var = f32(warp_sum([y[8 * (l & 3) + (l & 4)] if l < 8 else f32(0) for l in range(32)])[0] / f32(I))
    return mean, var


def main():
    rng = np.random.default_rng(1)
    bad = 0
    widths = (4, 8, 100, 132, 256, 768, 1024, 1280, 1596, 1600, 2048)
    for I in widths:
        for _ in range(3):
            x = (rng.standard_normal(I) * rng.uniform(0.1, 30) + rng.uniform(-5, 5)).astype(np.float32)
            want = block_stats(x)
            for name, fn in (("landed", landed), ("halvings", halvings)):
                got = fn(x)
                if any(a.tobytes() != b.tobytes() for a, b in zip(want, got)):
                    bad += 1
                    print(f"MISMATCH {name} I={I}: block {want}, warp {got}")
    print(f"widths {', '.join(map(str, widths))}: {bad} mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
