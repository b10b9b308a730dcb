/*
 * act.cuh - the MLP activations on the device, formula for formula the CPU
 * backend's cpu_activation, so both backends compute the same function.
 */
#ifndef GPTC_CUDA_ACT_CUH
#define GPTC_CUDA_ACT_CUH

#include "kernels.cuh"

__device__ __forceinline__ float gelu_erf(float x) {
    return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
}
__device__ __forceinline__ float sigmoid_f(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ __forceinline__ float softplus_f(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

/* The activations of cpu_activation, formula for formula. */
__device__ __forceinline__ float act_apply(float v, gptc_act act) {
    switch (act) {
    case ACT_GELU_TANH:
        return 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
    case ACT_GELU_ERF: return gelu_erf(v);
    case ACT_GELU_10: return fminf(fmaxf(gelu_erf(v), -10.0f), 10.0f);
    case ACT_QUICK_GELU: return v * sigmoid_f(1.702f * v);
    case ACT_RELU: return v > 0 ? v : 0;
    case ACT_RELU2: return v > 0 ? v * v : 0;
    case ACT_RELU6: return fminf(fmaxf(v, 0.0f), 6.0f);
    case ACT_LEAKY_RELU: return v >= 0 ? v : 0.01f * v;
    case ACT_SILU: return v * sigmoid_f(v);
    case ACT_TANH: return tanhf(v);
    case ACT_SIGMOID: return sigmoid_f(v);
    case ACT_MISH: return v * tanhf(softplus_f(v));
    case ACT_HARDSWISH: return v <= -3.0f ? 0.0f : v >= 3.0f ? v : v * (v + 3.0f) / 6.0f;
    case ACT_SQRT_SOFTPLUS: return sqrtf(softplus_f(v));
    case ACT_LAPLACE: return 0.5f * (1.0f + erff((v - 0.707107f) / (0.282095f * 1.4142135623730951f)));
    default: return v; /* ACT_LINEAR */
    }
}

#endif
