// SRU elementwise recurrence: forward and backward kernels (compiled at run time by NVRTC via CuPy).
//
// Layout (time-major, contiguous; one CUDA thread per column col = b * d + j, looping over time):
//   U      (T, B, 3, d)  planes u0 (candidate), u1 (forget pre-activation), u2 (reset pre-activation)
//   x, h   (T, B, d)     skip input and output
//   c_all  (T, B, d)     every c_t, kept in the math type A (float, or double for double storage)
//   weight_c, bias (2d,) = [v_f | v_r], [b_f | b_r];  c0, c_last, dropout_mask (B, d);  mask_pad (T, B) uint8
// With this layout the 32 threads of a warp read 32 consecutive elements of each plane per step.
//
// Forward, per step (mask m, identity activation):
//   f = sigmoid(u1 + v_f c + b_f),  r = sigmoid(u2 + v_r c + b_r),  c' = (c - u0) f + u0,  h = x + m r (c' - x)
//   padded step: c' = c, h = 0.
//
// Storage type S is float, double, or a 16-bit half/bfloat16 bit pattern; the math type A is float (double for
// double storage). The forward saves every c_t (c_all, type A); the backward reads c_{t-1} from it and
// recomputes the gates, so its serial dependence is only the short dL/dc carry.
//
// With one thread per column there are only B*d threads, so the kernels are bound by memory latency, not
// bandwidth, unless each thread keeps many loads in flight. Loads do not depend on the running state, so every
// thread keeps the next DEPTH steps in flight: a ring of DEPTH register slots, where slot k is consumed by step
// t and immediately refilled with step t + DEPTH. All ring indices are compile-time constants after
// unrolling, so the ring lives in registers.

#ifndef SRUPP_BLOCK_THREADS
#error "SRUPP_BLOCK_THREADS must be defined by the launcher"
#endif

namespace srupp {

// ---- storage conversions (header-free, so NVRTC needs neither cuda_fp16.h nor cuda_bf16.h) ----

struct half_t { unsigned short bits; };  // IEEE binary16 bit pattern
struct bf16_t { unsigned short bits; };  // bfloat16 bit pattern

__device__ __forceinline__ float to_math(float v) { return v; }
__device__ __forceinline__ double to_math(double v) { return v; }

__device__ __forceinline__ float to_math(half_t v) {
    float out;
    asm("cvt.f32.f16 %0, %1;" : "=f"(out) : "h"(v.bits));
    return out;
}

__device__ __forceinline__ float to_math(bf16_t v) {
    return __uint_as_float(static_cast<unsigned int>(v.bits) << 16);
}

__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(double* p, double v) { *p = v; }

__device__ __forceinline__ void store(half_t* p, float v) {
    unsigned short bits;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(bits) : "f"(v));
    p->bits = bits;
}

__device__ __forceinline__ void store(bf16_t* p, float v) {
    const unsigned int u = __float_as_uint(v);
    unsigned short bits;
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        bits = static_cast<unsigned short>((u >> 16) | 0x0040u);  // NaN stays a (quiet) NaN
    } else {
        bits = static_cast<unsigned short>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);  // round to nearest even
    }
    p->bits = bits;
}

// ---- gate nonlinearity ----

// 1 / (1 + exp(-z)) with the hardware exp2 and reciprocal (about 2 ulp); short latency matters because the
// forward gates sit on the serial c chain. exp overflow gives rcp(inf) = 0, the correct limit.
__device__ __forceinline__ float sigmoid(float z) {
    float e, out;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(e) : "f"(z * -1.4426950408889634f));
    asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(out) : "f"(1.0f + e));
    return out;
}

__device__ __forceinline__ double sigmoid(double z) { return 1.0 / (1.0 + exp(-z)); }

// ---- per-thread column addressing ----

// Offsets of one column (b, j) inside the (T, B, 3, d) and (T, B, d) tensors, advanced one step at a time.
// `read` runs DEPTH steps ahead of `write`; both move forward in time in the forward kernel and backward in
// time in the backward kernel.
struct ColumnCursor {
    long long u;    // offset of u0 of the current step (u1 at u + d, u2 at u + 2d)
    long long x;    // offset of x / h / c_all / grad_h / grad_x of the current step
    long long pad;  // offset into mask_pad (T, B)

    __device__ __forceinline__ void move(int direction, long long u_step, long long x_step, int B) {
        u += direction * u_step;
        x += direction * x_step;
        pad += direction * B;
    }
};

__device__ __forceinline__ ColumnCursor cursor_at(int t, int b, int j, int B, int d) {
    ColumnCursor cur;
    cur.x = static_cast<long long>(t) * B * d + static_cast<long long>(b) * d + j;
    cur.u = (static_cast<long long>(t) * B + b) * 3 * d + j;
    cur.pad = static_cast<long long>(t) * B + b;
    return cur;
}

// ---- forward ----

template <typename S, int DEPTH>
struct ForwardRing {
    S u0[DEPTH], u1[DEPTH], u2[DEPTH], x[DEPTH];
    unsigned char pad[DEPTH];
};

template <typename S, int DEPTH>
__device__ __forceinline__ void load_forward_step(ForwardRing<S, DEPTH>& ring, int slot, const ColumnCursor& at,
                                                  int d, const S* U, const S* x, const unsigned char* mask_pad) {
    ring.u0[slot] = U[at.u];
    ring.u1[slot] = U[at.u + d];
    ring.u2[slot] = U[at.u + 2 * d];
    ring.x[slot] = x[at.x];
    ring.pad[slot] = mask_pad ? mask_pad[at.pad] : 0;
}

template <typename A>
struct ForwardParams {
    A v_f, v_r, b_f, b_r, m;  // peephole weights, biases and dropout mask of this column
};

// Runs steps t0 .. t0 + DEPTH - 1 (ring slot k holds step t0 + k) and refills each slot with the step DEPTH
// later. The per-step bounds checks also keep every step in its own basic block: without them ptxas hoists the
// serial c chain of many steps above the stores and the refill loads that must follow them, which issues the
// refills in a burst at the end of the chunk and leaves nothing in flight while the next chunk waits (seen in
// the sm_90 SASS). For the same reason the pointers are not __restrict__: a refill load may not move above the
// preceding step's stores.
template <typename S, typename A, int DEPTH>
__device__ __forceinline__ void forward_chunk(ForwardRing<S, DEPTH>& ring, int t0, int T, int B, int d, A& c,
                                              const ForwardParams<A>& p, ColumnCursor& write, ColumnCursor& read,
                                              const S* U, const S* x, const unsigned char* mask_pad, S* h,
                                              A* c_all) {
    const long long u_step = 3LL * B * d, x_step = static_cast<long long>(B) * d;
#pragma unroll
    for (int k = 0; k < DEPTH; ++k) {
        const int t = t0 + k;
        if (t < T) {
            // Branch-free: a padded step computes and then discards its values (selects, so a NaN in padded
            // U or x cannot leak into c).
            const bool pad = ring.pad[k] != 0;
            const A u0 = to_math(ring.u0[k]);
            const A f = sigmoid(to_math(ring.u1[k]) + p.v_f * c + p.b_f);
            const A r = sigmoid(to_math(ring.u2[k]) + p.v_r * c + p.b_r);
            const A x_t = to_math(ring.x[k]);
            const A c_t = (c - u0) * f + u0;
            const A h_t = x_t + (p.m * r) * (c_t - x_t);
            c = pad ? c : c_t;
            store(h + write.x, pad ? A(0) : h_t);
            if (c_all) c_all[write.x] = c;
            write.move(1, u_step, x_step, B);
        }
        if (t + DEPTH < T) {
            load_forward_step(ring, k, read, d, U, x, mask_pad);
            read.move(1, u_step, x_step, B);
        }
    }
}

// grid.x * SRUPP_BLOCK_THREADS >= B * d threads, one per column. c0, dropout_mask, mask_pad and c_all may
// be null (zeros, no dropout, no padding, do not store c_all).
template <typename S, typename A, int DEPTH>
__global__ void __launch_bounds__(SRUPP_BLOCK_THREADS)
sru_forward(const S* U, const S* x, const A* weight_c, const A* bias, const A* c0, const A* dropout_mask,
            const unsigned char* mask_pad, S* h, A* c_all, A* c_last, const int T, const int B, const int d) {
    const int col = blockIdx.x * SRUPP_BLOCK_THREADS + threadIdx.x;
    if (col >= B * d) return;
    const int b = col / d, j = col - b * d;
    const ForwardParams<A> p = {weight_c[j], weight_c[d + j], bias[j], bias[d + j],
                                dropout_mask ? dropout_mask[col] : A(1)};
    A c = c0 ? c0[col] : A(0);
    const long long u_step = 3LL * B * d, x_step = static_cast<long long>(B) * d;

    ColumnCursor write = cursor_at(0, b, j, B, d);
    ColumnCursor read = write;
    ForwardRing<S, DEPTH> ring;
#pragma unroll
    for (int k = 0; k < DEPTH; ++k) {
        if (k < T) {
            load_forward_step(ring, k, read, d, U, x, mask_pad);
            read.move(1, u_step, x_step, B);
        }
    }
    for (int t0 = 0; t0 < T; t0 += DEPTH) {
        forward_chunk(ring, t0, T, B, d, c, p, write, read, U, x, mask_pad, h, c_all);
    }
    c_last[col] = c;
}

// ---- backward (same thread mapping, reverse time) ----

template <typename S, typename A, int DEPTH>
struct BackwardRing {
    S u0[DEPTH], u1[DEPTH], u2[DEPTH], x[DEPTH], grad_h[DEPTH];
    A c_prev[DEPTH];
    unsigned char pad[DEPTH];
};

template <typename S, typename A, int DEPTH>
__device__ __forceinline__ void load_backward_step(BackwardRing<S, A, DEPTH>& ring, int slot, int t,
                                                   const ColumnCursor& at, int B, int d, A c_init, const S* U,
                                                   const S* x, const S* grad_h, const A* c_all,
                                                   const unsigned char* mask_pad) {
    ring.u0[slot] = U[at.u];
    ring.u1[slot] = U[at.u + d];
    ring.u2[slot] = U[at.u + 2 * d];
    ring.x[slot] = x[at.x];
    ring.grad_h[slot] = grad_h[at.x];
    ring.c_prev[slot] = t > 0 ? c_all[at.x - static_cast<long long>(B) * d] : c_init;
    ring.pad[slot] = mask_pad ? mask_pad[at.pad] : 0;
}

template <typename A>
struct BackwardState {
    A carry;                  // dL/dc_t on entry to step t, dL/dc_{t-1} on exit
    A g_vf, g_vr, g_bf, g_br; // this column's parameter gradients, summed over time
};

// Runs steps t_hi, t_hi - 1, ..., t_hi - DEPTH + 1 (ring slot k holds step t_hi - k) and refills each slot
// with the step DEPTH earlier. The per-step checks keep one step per basic block, as in forward_chunk.
template <typename S, typename A, int DEPTH>
__device__ __forceinline__ void backward_chunk(BackwardRing<S, A, DEPTH>& ring, int t_hi, int B, int d,
                                               BackwardState<A>& state, const ForwardParams<A>& p, A c_init,
                                               ColumnCursor& write, ColumnCursor& read, const S* U, const S* x,
                                               const S* grad_h, const A* c_all, const unsigned char* mask_pad,
                                               S* grad_U, S* grad_x) {
    const long long u_step = 3LL * B * d, x_step = static_cast<long long>(B) * d;
#pragma unroll
    for (int k = 0; k < DEPTH; ++k) {
        const int t = t_hi - k;
        if (t >= 0) {
            // Branch-free as in the forward: a padded step passes the carry through and writes zero
            // gradients (selects, so values read at padded steps cannot leak into the carry).
            const bool pad = ring.pad[k] != 0;
            const A c_prev = ring.c_prev[k];
            const A u0 = to_math(ring.u0[k]);
            const A f = sigmoid(to_math(ring.u1[k]) + p.v_f * c_prev + p.b_f);
            const A r = sigmoid(to_math(ring.u2[k]) + p.v_r * c_prev + p.b_r);
            const A x_t = to_math(ring.x[k]);
            const A gh = to_math(ring.grad_h[k]);
            const A c_t = (c_prev - u0) * f + u0;
            const A mr = p.m * r;
            const A gc = state.carry + gh * mr;                        // dL/dc_t
            const A g_r = gh * p.m * (c_t - x_t) * (r * (A(1) - r));  // dL/d(reset pre-activation)
            const A g_f = gc * (c_prev - u0) * (f * (A(1) - f));      // dL/d(forget pre-activation)
            store(grad_U + write.u, pad ? A(0) : gc * (A(1) - f));
            store(grad_U + write.u + d, pad ? A(0) : g_f);
            store(grad_U + write.u + 2 * d, pad ? A(0) : g_r);
            store(grad_x + write.x, pad ? A(0) : gh * (A(1) - mr));
            if (!pad) {
                state.carry = gc * f + g_f * p.v_f + g_r * p.v_r;
                state.g_vf += g_f * c_prev;
                state.g_vr += g_r * c_prev;
                state.g_bf += g_f;
                state.g_br += g_r;
            }
            write.move(-1, u_step, x_step, B);
        }
        if (t - DEPTH >= 0) {
            load_backward_step(ring, k, t - DEPTH, read, B, d, c_init, U, x, grad_h, c_all, mask_pad);
            read.move(-1, u_step, x_step, B);
        }
    }
}

// Inputs as in the forward plus c_all (from the forward) and grad_h (T, B, d); grad_c_last may be null (zero).
// Outputs: grad_U (T, B, 3, d), grad_x (T, B, d), grad_c0 (B, d; may be null), and the per-column parameter
// gradients param_grads (4, B, d) with rows [v_f, v_r, b_f, b_r], summed over B by the caller (no atomics).
template <typename S, typename A, int DEPTH>
__global__ void __launch_bounds__(SRUPP_BLOCK_THREADS)
sru_backward(const S* U, const S* x, const A* weight_c, const A* bias, const A* c0, const A* dropout_mask,
             const unsigned char* mask_pad, const A* c_all, const S* grad_h, const A* grad_c_last, S* grad_U,
             S* grad_x, A* grad_c0, A* param_grads, const int T, const int B, const int d) {
    const int col = blockIdx.x * SRUPP_BLOCK_THREADS + threadIdx.x;
    if (col >= B * d) return;
    const int b = col / d, j = col - b * d;
    const ForwardParams<A> p = {weight_c[j], weight_c[d + j], bias[j], bias[d + j],
                                dropout_mask ? dropout_mask[col] : A(1)};
    const A c_init = c0 ? c0[col] : A(0);
    BackwardState<A> state = {grad_c_last ? grad_c_last[col] : A(0), A(0), A(0), A(0), A(0)};
    const long long u_step = 3LL * B * d, x_step = static_cast<long long>(B) * d;

    ColumnCursor write = cursor_at(T - 1, b, j, B, d);
    ColumnCursor read = write;
    BackwardRing<S, A, DEPTH> ring;
#pragma unroll
    for (int k = 0; k < DEPTH; ++k) {
        if (T - 1 - k >= 0) {
            load_backward_step(ring, k, T - 1 - k, read, B, d, c_init, U, x, grad_h, c_all, mask_pad);
            read.move(-1, u_step, x_step, B);
        }
    }
    for (int t_hi = T - 1; t_hi >= 0; t_hi -= DEPTH) {
        backward_chunk(ring, t_hi, B, d, state, p, c_init, write, read, U, x, grad_h, c_all, mask_pad, grad_U,
                       grad_x);
    }
    if (grad_c0) grad_c0[col] = state.carry;
    const long long plane = static_cast<long long>(B) * d;
    param_grads[col] = state.g_vf;
    param_grads[plane + col] = state.g_vr;
    param_grads[2 * plane + col] = state.g_bf;
    param_grads[3 * plane + col] = state.g_br;
}

}  // namespace srupp
