// SRU elementwise recurrence: forward and backward kernels (compiled at run time by NVRTC via CuPy).
//
// Layout (time-major, contiguous; one CUDA thread per column col = b * d + j, looping over time; with L = 2,
// for 16-bit storage, two adjacent columns per thread, see "lanes" below):
//   U      (T, B, 3, d)  planes u0 (candidate), u1 (forget pre-activation), u2 (reset pre-activation)
//   x, h   (T, B, d)     skip input and output
//   c_all  (T, B, d)     every c_t, kept in the math type A (float, or double for double storage)
//   weight_c, bias (2d,) = [v_f | v_r], [b_f | b_r];  c0, c_last, dropout_mask (B, d);  mask_pad (T, B) uint8
// With this layout the 32 threads of a warp read 32 (pairs: 64) consecutive elements of each plane per step.
//
// Forward, per step (mask m, identity activation):
//   f = sigmoid(u1 + v_f c + b_f),  r = sigmoid(u2 + v_r c + b_r),  c' = (c - u0) f + u0,  h = x + m r (c' - x)
//   padded step: c' = c, h = 0.
//
// Storage type S is float, double, or a 16-bit half/bfloat16 bit pattern; the math type A is float (double for
// double storage). The forward saves every c_t (c_all, type A); the backward reads c_{t-1} from it and
// recomputes the gates, so its serial dependence is only the short dL/dc carry.
//
// Memory pipeline. With one thread per column there are only B*d threads (24k at B=8, d=3072: ~190 per SM),
// so each thread must keep many loads in flight. The loads do not depend on the running state, so every thread
// streams its own column into its own slots of shared memory with cp.async (sm_80+): time is cut into chunks
// of P steps; STAGES chunks are in shared memory or on their way. Iteration k issues the copies of chunk
// k + STAGES - 1 (one commit group per chunk, committed even when empty so that the group count stays
// uniform), waits until at most STAGES - 1 groups are pending (= chunk k has landed) and computes chunk k from
// shared memory. The stage refilled in iteration k was read by this same thread in iteration k - 1, before the
// refill was issued (program order; cp.async writes land only after their global read). No thread touches
// another thread's slots, so no __syncthreads is needed: cp.async.wait_group makes a thread's own copies
// visible to itself. Unlike a register ring, the wait is a group count, not one scoreboard per load, so it
// waits exactly for the chunk that is needed.
//
// Shared memory of a block: [stage][step][value][thread] words (4 bytes; 8 for double), so the 32 threads of a
// warp hit 32 consecutive banks, then (when mask_pad is given) a [stage][step][thread] region of 4-byte words
// for the mask. Sizes: SRUPP_BLOCK_THREADS * STAGES * P * (NV * word + (mask ? 4 : 0)) bytes; NV = 4 values
// per step in the forward (u0, u1, u2, x), 6 in the backward (u0, u1, u2, x, grad_h, c_{t-1}); with L = 2 a word
// holds both columns' 16-bit elements and c_{t-1} of each column has its own (NV = 4 and 7). The
// launcher computes the same number (launcher.smem_bytes).
//
// Below sm_80 (or with -DSRUPP_SYNC_COPY) the copies are ordinary loads and shared stores: the same code, but a
// chunk's loads are waited for when it is issued, so only P steps are in flight.

#ifndef SRUPP_BLOCK_THREADS
#error "SRUPP_BLOCK_THREADS must be defined by the launcher"
#endif

namespace srupp {

struct half_t { unsigned short bits; };  // IEEE binary16 bit pattern
struct bf16_t { unsigned short bits; };  // bfloat16 bit pattern

// ---- device primitives (a host test harness may supply its own: SRUPP_EMULATION) ----

#ifndef SRUPP_EMULATION

#if !defined(SRUPP_SYNC_COPY) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define SRUPP_ASYNC_COPY 1
#else
#define SRUPP_ASYNC_COPY 0
#endif

#define SRUPP_DECLARE_SMEM(name) extern __shared__ __align__(16) unsigned char name[]

#if SRUPP_ASYNC_COPY
typedef unsigned int smem_ptr;  // a shared-window address, the destination operand of cp.async

__device__ __forceinline__ smem_ptr smem_pointer(void* p) {
    unsigned int address;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(address) : "l"(p));
    return address;
}

// Copies src_size (0..4) bytes from the 4-aligned global address src to dst and zero-fills the rest.
__device__ __forceinline__ void copy4(smem_ptr dst, const void* src, unsigned int src_size) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(dst), "l"(src), "r"(src_size) : "memory");
}

__device__ __forceinline__ void copy8(smem_ptr dst, const void* src) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8;" ::"r"(dst), "l"(src) : "memory");
}

__device__ __forceinline__ void commit_copies() { asm volatile("cp.async.commit_group;" ::: "memory"); }

// Returns once at most N of this thread's commit groups are still pending; the completed copies are visible
// to this thread.
template <int N>
__device__ __forceinline__ void wait_copies() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}
#else
typedef unsigned char* smem_ptr;

__device__ __forceinline__ smem_ptr smem_pointer(void* p) { return static_cast<unsigned char*>(p); }

__device__ __forceinline__ void copy4(smem_ptr dst, const void* src, unsigned int src_size) {
    unsigned int word;
    if (src_size == 4u) {
        word = *static_cast<const unsigned int*>(src);
    } else {
        word = 0u;
        for (unsigned int k = 0; k < src_size; ++k) {
            word |= static_cast<unsigned int>(static_cast<const unsigned char*>(src)[k]) << (8u * k);
        }
    }
    *reinterpret_cast<unsigned int*>(dst) = word;
}

__device__ __forceinline__ void copy8(smem_ptr dst, const void* src) {
    *reinterpret_cast<unsigned long long*>(dst) = *static_cast<const unsigned long long*>(src);
}

__device__ __forceinline__ void commit_copies() {}

template <int N>
__device__ __forceinline__ void wait_copies() {}
#endif  // SRUPP_ASYNC_COPY

// ---- storage conversions (header-free, so NVRTC needs neither cuda_fp16.h nor cuda_bf16.h) ----

__device__ __forceinline__ float to_math(half_t v) {
    float out;
    asm("cvt.f32.f16 %0, %1;" : "=f"(out) : "h"(v.bits));
    return out;
}

__device__ __forceinline__ void store(half_t* p, float v) {
    unsigned short bits;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(bits) : "f"(v));
    p->bits = bits;
}

// 1 / (1 + exp(-z)) with the hardware exp2 and reciprocal (about 2 ulp); short latency matters because the
// forward gates sit on the serial c chain. exp overflow gives rcp(inf) = 0, the correct limit.
__device__ __forceinline__ float sigmoid(float z) {
    float e, out;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(e) : "f"(z * -1.4426950408889634f));
    asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(out) : "f"(1.0f + e));
    return out;
}

#endif  // SRUPP_EMULATION

__device__ __forceinline__ double sigmoid(double z) { return 1.0 / (1.0 + exp(-z)); }

__device__ __forceinline__ float to_math(float v) { return v; }
__device__ __forceinline__ double to_math(double v) { return v; }

__device__ __forceinline__ float to_math(bf16_t v) {
    return __uint_as_float(static_cast<unsigned int>(v.bits) << 16);
}

__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(double* p, double v) { *p = v; }

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

// ---- staging one element of a stream into a shared-memory slot ----
//
// Stage<S>::copy(dst, p) issues the copy of *p into the slot at dst; Stage<S>::read(slot, upper) converts the
// landed slot to the math type. `upper` (16-bit types only) says in which half of the 4-byte slot the element
// landed: Stage<S>::upper(p), a function of p's address (bit 1), which the kernels track per step instead of
// keeping the pointer.

template <typename S>
struct Stage;

template <>
struct Stage<float> {
    typedef unsigned int Word;
    static __device__ __forceinline__ void copy(smem_ptr dst, const float* p) { copy4(dst, p, 4u); }
    static __device__ __forceinline__ unsigned int upper(const float*) { return 0u; }
    static __device__ __forceinline__ float read(const Word* slot, unsigned int) { return __uint_as_float(*slot); }
};

template <>
struct Stage<double> {
    typedef unsigned long long Word;
    static __device__ __forceinline__ void copy(smem_ptr dst, const double* p) { copy8(dst, p); }
    static __device__ __forceinline__ unsigned int upper(const double*) { return 0u; }
    static __device__ __forceinline__ double read(const Word* slot, unsigned int) {
        return __longlong_as_double(static_cast<long long>(*slot));
    }
};

// 16-bit storage. cp.async copies 4, 8 or 16 bytes from an address aligned to that size, so an element is
// copied within the aligned 4-byte word that holds it: at a 4-aligned address with src-size 2 (the upper half
// of the slot is zero-filled and nothing past the element is read), at an address 2 mod 4 as the whole word,
// i.e. together with the element before it, and it lands in the upper half of the slot. That earlier element
// lies inside the tensor, except for the tensor's first element when the data pointer itself is 2 mod 4 (a view
// starting at an odd element); those two bytes still lie inside the same allocation, because PyTorch's CUDA
// allocations start at multiples of 512 bytes (cudaMalloc itself aligns to 256).
template <typename H>
struct Stage16 {
    typedef unsigned int Word;
    static __device__ __forceinline__ void copy(smem_ptr dst, const H* p) {
        const unsigned long long address = reinterpret_cast<unsigned long long>(p);
        copy4(dst, reinterpret_cast<const void*>(address & ~3ull), (address & 2ull) ? 4u : 2u);
    }
    static __device__ __forceinline__ unsigned int upper(const H* p) {
        return static_cast<unsigned int>(reinterpret_cast<unsigned long long>(p) >> 1) & 1u;
    }
    static __device__ __forceinline__ float read(const Word* slot, unsigned int upper) {
        H v;
        v.bits = static_cast<unsigned short>(*slot >> (16u * upper));
        return to_math(v);
    }
};

template <>
struct Stage<half_t> : Stage16<half_t> {};
template <>
struct Stage<bf16_t> : Stage16<bf16_t> {};

// mask_pad bytes: the aligned 4-byte word holding the byte, clipped at the end of the mask (the bytes before the
// mask's first byte that the word may include are inside the same 512-byte-aligned allocation, as above).
__device__ __forceinline__ void copy_mask(smem_ptr dst, const unsigned char* p, const unsigned char* end) {
    const unsigned long long address = reinterpret_cast<unsigned long long>(p);
    const unsigned long long word = address & ~3ull;
    const unsigned long long left = reinterpret_cast<unsigned long long>(end) - word;  // >= 1
    copy4(dst, reinterpret_cast<const void*>(word), left < 4ull ? static_cast<unsigned int>(left) : 4u);
}

// byte_lane: address of the mask byte mod 4
// mask_pad[t][b] from its landed slot; lane0 = (address of mask_pad[0][b]) mod 4, so the byte sits in lane
// (lane0 + t * B) mod 4 of the word
__device__ __forceinline__ bool read_mask(const unsigned int* slot, unsigned int lane0, int t, int B) {
    const unsigned int lane = (lane0 + static_cast<unsigned int>(t) * static_cast<unsigned int>(B)) & 3u;
    return ((*slot >> (8u * lane)) & 0xffu) != 0u;
}

// ---- per-thread slots ----

// This thread's slots: main words at [stage][step][value][thread], mask words at [stage][step][thread] after
// the STAGES * P * NV * SRUPP_BLOCK_THREADS main words. Indices are compile-time constants once the loops over
// stages and steps are unrolled.
template <typename Word, int P, int STAGES, int NV>
struct Slots {
    static constexpr int kMainWords = STAGES * P * NV * SRUPP_BLOCK_THREADS;
    const Word* main;
    const unsigned int* mask;
    smem_ptr main_dst, mask_dst;

    __device__ __forceinline__ Slots(unsigned char* smem, int tid) {
        Word* m = reinterpret_cast<Word*>(smem) + tid;
        unsigned int* k = reinterpret_cast<unsigned int*>(reinterpret_cast<Word*>(smem) + kMainWords) + tid;
        main = m;
        mask = k;
        main_dst = smem_pointer(m);
        mask_dst = smem_pointer(k);
    }
    static __device__ __forceinline__ int at(int stage, int step, int value) {
        return ((stage * P + step) * NV + value) * SRUPP_BLOCK_THREADS;
    }
    static __device__ __forceinline__ int mask_at(int stage, int step) {
        return (stage * P + step) * SRUPP_BLOCK_THREADS;
    }
    __device__ __forceinline__ smem_ptr dst(int stage, int step, int value) const {
        return main_dst + static_cast<unsigned int>(at(stage, step, value) * sizeof(Word));
    }
    __device__ __forceinline__ smem_ptr mask_dst_at(int stage, int step) const {
        return mask_dst + static_cast<unsigned int>(mask_at(stage, step) * sizeof(unsigned int));
    }
    __device__ __forceinline__ const Word* slot(int stage, int step, int value) const {
        return main + at(stage, step, value);
    }
    __device__ __forceinline__ const unsigned int* mask_slot(int stage, int step) const {
        return mask + mask_at(stage, step);
    }
};

template <typename A>
struct ColumnParams {
    A v_f, v_r, b_f, b_r, m;  // peephole weights, biases and dropout mask of this column

    // column j of its row; col = b * d + j
    static __device__ __forceinline__ ColumnParams load(const A* weight_c, const A* bias, const A* dropout_mask,
                                                       int d, int j, int col) {
        return {weight_c[j], weight_c[d + j], bias[j], bias[d + j], dropout_mask ? dropout_mask[col] : A(1)};
    }
};

template <typename A>
struct BackwardState {
    A carry;                   // dL/dc_t on entry to step t, dL/dc_{t-1} on exit
    A g_vf, g_vr, g_bf, g_br;  // this column's parameter gradients, summed over time

    static __device__ __forceinline__ BackwardState start(const A* grad_c_last, int col) {
        return {grad_c_last ? grad_c_last[col] : A(0), A(0), A(0), A(0), A(0)};
    }
    // into param_grads (4, B, d), rows v_f, v_r, b_f, b_r; plane = B * d
    __device__ __forceinline__ void store(A* param_grads, long long plane, int col) const {
        param_grads[col] = g_vf;
        param_grads[plane + col] = g_vr;
        param_grads[2 * plane + col] = g_bf;
        param_grads[3 * plane + col] = g_br;
    }
};

// The copy pipeline of one thread over T steps in chunks of P (chunks 0 .. full-1 have P steps; a last,
// partial chunk follows when P does not divide T), STAGES chunks in shared memory or on their way.
// w.issue<kFull>(k, stage) copies chunk k into `stage` and w.compute<kFull>(k, stage) runs it, where kFull says
// the chunk has all P steps; chunk k lives in stage k % STAGES.
template <int P, int STAGES, typename Worker>
__device__ __forceinline__ void run_pipeline(Worker& w, int T) {
    const int full = T / P, chunks = (T + P - 1) / P;
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < full) {
            w.template issue<true>(s, s);
        } else if (s < chunks) {
            w.template issue<false>(s, s);
        }
        commit_copies();
    }
    for (int k0 = 0; k0 < chunks; k0 += STAGES) {
#pragma unroll
        for (int s = 0; s < STAGES; ++s) {  // chunk k = k0 + s lives in stage s
            const int k = k0 + s, next = k + STAGES - 1, next_stage = (s + STAGES - 1) % STAGES;
            if (k < chunks) {
                if (next < full) {
                    w.template issue<true>(next, next_stage);
                } else if (next < chunks) {
                    w.template issue<false>(next, next_stage);
                }
                commit_copies();
                wait_copies<STAGES - 1>();
                if (k < full) {
                    w.template compute<true>(k, s);
                } else {
                    w.template compute<false>(k, s);
                }
            }
        }
    }
}

// ---- lanes: the columns of one thread ----
//
// A thread runs L adjacent columns j .. j+L-1 of one row b. L = 1 for every storage type. With 16-bit storage,
// one column per thread moves half the bytes of float32 with as many copy and store instructions, so it is
// bound by instruction issue rather than by bandwidth; when d is even and U and x (and grad_h) start at
// 4-byte-aligned addresses, the launcher runs the kernels with L = 2 instead: the two elements of a
// column pair share one aligned 4-byte word in every plane, so one copy and one store serve both columns, and
// the two independent c chains interleave. Lanes<S, A, L> moves the L elements of one stream at one step:
// copy() issues their copy into a slot, read() converts the landed slot into L math values, store() writes L
// results of the storage type, store_state() L values of the math type.

template <typename S, typename A, int L>
struct Lanes;

template <typename S, typename A>
struct Lanes<S, A, 1> {
    typedef Stage<S> St;
    typedef typename St::Word Word;
    static __device__ __forceinline__ void copy(smem_ptr dst, const S* p) { St::copy(dst, p); }
    static __device__ __forceinline__ unsigned int upper(const S* p) { return St::upper(p); }
    static __device__ __forceinline__ void read(const Word* slot, unsigned int upper, A (&v)[1]) {
        v[0] = St::read(slot, upper);
    }
    static __device__ __forceinline__ void store(S* p, const A (&v)[1]) { srupp::store(p, v[0]); }
    static __device__ __forceinline__ void store_state(A* p, const A (&v)[1]) { *p = v[0]; }
};

struct alignas(8) FloatPair {
    float lo, hi;
};

// H: half_t or bf16_t; every pointer passed is 4-byte aligned (the lower address holds the low half)
template <typename H>
struct Lanes<H, float, 2> {
    typedef unsigned int Word;
    static __device__ __forceinline__ void copy(smem_ptr dst, const H* p) { copy4(dst, p, 4u); }
    static __device__ __forceinline__ unsigned int upper(const H*) { return 0u; }
    static __device__ __forceinline__ void read(const Word* slot, unsigned int, float (&v)[2]) {
        H lo, hi;
        lo.bits = static_cast<unsigned short>(*slot & 0xffffu);
        hi.bits = static_cast<unsigned short>(*slot >> 16);
        v[0] = to_math(lo);
        v[1] = to_math(hi);
    }
    static __device__ __forceinline__ void store(H* p, const float (&v)[2]) {
        H lo, hi;
        srupp::store(&lo, v[0]);
        srupp::store(&hi, v[1]);
        *reinterpret_cast<unsigned int*>(p) = static_cast<unsigned int>(lo.bits) |
                                              (static_cast<unsigned int>(hi.bits) << 16);
    }
    static __device__ __forceinline__ void store_state(float* p, const float (&v)[2]) {
        *reinterpret_cast<FloatPair*>(p) = FloatPair{v[0], v[1]};
    }
};

// The columns of a thread: group g of the B * d / L groups is row b = g / (d / L), columns j .. j + L - 1 with
// j = L * (g mod d / L); col = b * d + j. False for the threads past the last group.
template <int L>
struct Columns {
    int b, j, col;
    __device__ __forceinline__ bool locate(int B, int d) {
        const int group = blockIdx.x * SRUPP_BLOCK_THREADS + threadIdx.x, per_row = d / L;
        if (group >= B * per_row) return false;
        b = group / per_row;
        j = L * (group - b * per_row);
        col = b * d + j;
        return true;
    }
    // (address of mask_pad[b]) mod 4: the byte lane of this row's mask in its 4-byte word at t = 0
    __device__ __forceinline__ unsigned int mask_lane(const unsigned char* mask_pad) const {
        return mask_pad ? static_cast<unsigned int>(reinterpret_cast<unsigned long long>(mask_pad + b)) & 3u : 0u;
    }
};

// ---- forward ----

template <typename S, typename A, int P, int STAGES, int L>
struct Forward {
    typedef Lanes<S, A, L> Ln;
    typedef Slots<typename Ln::Word, P, STAGES, 4> Sl;

    const S* U;
    const S* x;
    const unsigned char* mask_pad;
    const unsigned char* mask_end;
    S* h;
    A* c_all;
    int T, B, d;
    long long Bd;
    Sl slots;
    long long u_read, x_read, m_read;  // element offsets of the next step to copy (plane u0 for U)
    long long x_write;                 // offset of the next step to compute in (T, B, d)
    unsigned int flip;                 // 1 when the U and x offsets change parity from one step to the next
    unsigned int up[4];                // Lanes::upper of the streams u0, u1, u2, x at t = 0
    unsigned int mask_lane0;           // (address of mask_pad[b]) mod 4
    ColumnParams<A> p[L];
    A c[L];                            // the running states

    // Copies the steps of chunk k into `stage` (nothing for steps >= T). kFull: the whole chunk lies before T,
    // so the steps need no checks (a check per step would also keep each step in its own basic block).
    template <bool kFull>
    __device__ __forceinline__ void issue(int k, int stage) {
#pragma unroll
        for (int i = 0; i < P; ++i) {
            if (kFull || k * P + i < T) {
                const S* u = U + u_read;
                Ln::copy(slots.dst(stage, i, 0), u);
                Ln::copy(slots.dst(stage, i, 1), u + d);
                Ln::copy(slots.dst(stage, i, 2), u + 2 * d);
                Ln::copy(slots.dst(stage, i, 3), x + x_read);
                if (mask_pad) copy_mask(slots.mask_dst_at(stage, i), mask_pad + m_read, mask_end);
                u_read += 3 * Bd;
                x_read += Bd;
                m_read += B;
            }
        }
    }

    // Runs the steps of chunk k from `stage`.
    template <bool kFull>
    __device__ __forceinline__ void compute(int k, int stage) {
#pragma unroll
        for (int i = 0; i < P; ++i) {
            const int t = k * P + i;
            if (kFull || t < T) {
                const unsigned int tf = static_cast<unsigned int>(t) & flip;
                // Branch-free: a padded step computes and then discards its values (selects, so a NaN in
                // padded U or x cannot leak into c).
                const bool pad = mask_pad && read_mask(slots.mask_slot(stage, i), mask_lane0, t, B);
                A in[4][L], h_t[L];
#pragma unroll
                for (int v = 0; v < 4; ++v) Ln::read(slots.slot(stage, i, v), up[v] ^ tf, in[v]);
                const A(&u0)[L] = in[0], (&u1)[L] = in[1], (&u2)[L] = in[2], (&x_t)[L] = in[3];
#pragma unroll
                for (int l = 0; l < L; ++l) {
                    const A f = sigmoid(u1[l] + p[l].v_f * c[l] + p[l].b_f);
                    const A r = sigmoid(u2[l] + p[l].v_r * c[l] + p[l].b_r);
                    const A c_t = (c[l] - u0[l]) * f + u0[l];
                    h_t[l] = pad ? A(0) : x_t[l] + (p[l].m * r) * (c_t - x_t[l]);
                    c[l] = pad ? c[l] : c_t;
                }
                Ln::store(h + x_write, h_t);
                if (c_all) Ln::store_state(c_all + x_write, c);
                x_write += Bd;
            }
        }
    }
};

// grid.x * SRUPP_BLOCK_THREADS >= B * d / L threads, L columns each (L = 2: 16-bit S, A = float, d even, and U
// and x at 4-byte-aligned addresses); dynamic shared memory as described at the top. c0, dropout_mask, mask_pad
// and c_all may be null (zeros, no dropout, no padding, do not store c_all). T, B and d are passed as 64-bit
// integers (every parameter is 8 bytes) and must be below 2**31.
template <typename S, typename A, int P, int STAGES, int L>
__global__ void __launch_bounds__(SRUPP_BLOCK_THREADS)
sru_forward(const S* U, const S* x, const A* weight_c, const A* bias, const A* c0, const A* dropout_mask,
            const unsigned char* mask_pad, S* h, A* c_all, A* c_last, const long long T_, const long long B_,
            const long long d_) {
    SRUPP_DECLARE_SMEM(smem);
    const int T = static_cast<int>(T_), B = static_cast<int>(B_), d = static_cast<int>(d_);
    Columns<L> at;
    if (!at.locate(B, d)) return;
    typedef Forward<S, A, P, STAGES, L> F;
    typedef typename F::Ln Ln;
    F f = {U, x, mask_pad, mask_pad ? mask_pad + static_cast<long long>(T) * B : nullptr, h, c_all, T, B, d,
           static_cast<long long>(B) * d, typename F::Sl(smem, static_cast<int>(threadIdx.x))};
    f.u_read = static_cast<long long>(at.b) * 3 * d + at.j;
    f.x_read = at.col;
    f.m_read = at.b;
    f.x_write = at.col;
    f.flip = static_cast<unsigned int>(f.Bd & 1);
    const S* const first[4] = {U + f.u_read, U + f.u_read + d, U + f.u_read + 2 * d, x + at.col};
#pragma unroll
    for (int v = 0; v < 4; ++v) f.up[v] = Ln::upper(first[v]);
    f.mask_lane0 = at.mask_lane(mask_pad);
#pragma unroll
    for (int l = 0; l < L; ++l) {
        f.p[l] = ColumnParams<A>::load(weight_c, bias, dropout_mask, d, at.j + l, at.col + l);
        f.c[l] = c0 ? c0[at.col + l] : A(0);
    }
    run_pipeline<P, STAGES>(f, T);
#pragma unroll
    for (int l = 0; l < L; ++l) c_last[at.col + l] = f.c[l];
}

// ---- backward (same thread mapping, reverse time) ----

template <typename S, typename A, int P, int STAGES, int L>
struct Backward {
    typedef Lanes<S, A, L> Ln;
    typedef Stage<A> StA;
    // values per step: u0 u1 u2 x grad_h, then c_{t-1} of each column in a word of its own
    // (sizeof(A) == sizeof(Ln::Word) for every storage type)
    typedef Slots<typename Ln::Word, P, STAGES, 5 + L> Sl;

    const S* U;
    const S* x;
    const S* grad_h;
    const A* c_all;
    const unsigned char* mask_pad;
    const unsigned char* mask_end;
    S* grad_U;
    S* grad_x;
    int T, B, d;
    long long Bd;
    Sl slots;
    long long u_read, x_read, m_read;  // offsets of the next step to copy (steps run T-1, T-2, ..., 0)
    long long u_write, x_write;        // offsets of the next step to compute
    unsigned int flip;
    unsigned int up[5];  // Lanes::upper of the streams u0, u1, u2, x, grad_h at t = 0
    unsigned int mask_lane0;
    ColumnParams<A> p[L];
    A c_init[L];  // c_{-1}: c0, or zero
    BackwardState<A> state[L];

    // Copies the steps of chunk k (t = T-1-k*P, ..., T-P-k*P) into `stage`; c_{t-1} only for t >= 1.
    // kFull: every step of the chunk is >= 0.
    template <bool kFull>
    __device__ __forceinline__ void issue(int k, int stage) {
#pragma unroll
        for (int i = 0; i < P; ++i) {
            const int t = T - 1 - k * P - i;
            if (kFull || t >= 0) {
                const S* u = U + u_read;
                Ln::copy(slots.dst(stage, i, 0), u);
                Ln::copy(slots.dst(stage, i, 1), u + d);
                Ln::copy(slots.dst(stage, i, 2), u + 2 * d);
                Ln::copy(slots.dst(stage, i, 3), x + x_read);
                Ln::copy(slots.dst(stage, i, 4), grad_h + x_read);
                if (t > 0) {
#pragma unroll
                    for (int l = 0; l < L; ++l) StA::copy(slots.dst(stage, i, 5 + l), c_all + (x_read - Bd + l));
                }
                if (mask_pad) copy_mask(slots.mask_dst_at(stage, i), mask_pad + m_read, mask_end);
                u_read -= 3 * Bd;
                x_read -= Bd;
                m_read -= B;
            }
        }
    }

    template <bool kFull>
    __device__ __forceinline__ void compute(int k, int stage) {
#pragma unroll
        for (int i = 0; i < P; ++i) {
            const int t = T - 1 - k * P - i;
            if (kFull || t >= 0) {
                const unsigned int tf = static_cast<unsigned int>(t) & flip;
                // Branch-free as in the forward: a padded step passes the carry through and writes zero
                // gradients (selects, so values read at padded steps cannot leak into the carry).
                const bool pad = mask_pad && read_mask(slots.mask_slot(stage, i), mask_lane0, t, B);
                A in[5][L], g_u0[L], g_u1[L], g_u2[L], g_x[L];
#pragma unroll
                for (int v = 0; v < 5; ++v) Ln::read(slots.slot(stage, i, v), up[v] ^ tf, in[v]);
                const A(&u0)[L] = in[0], (&u1)[L] = in[1], (&u2)[L] = in[2], (&x_t)[L] = in[3], (&gh)[L] = in[4];
#pragma unroll
                for (int l = 0; l < L; ++l) {
                    const A c_prev = t > 0 ? StA::read(slots.slot(stage, i, 5 + l), 0u) : c_init[l];
                    const A f = sigmoid(u1[l] + p[l].v_f * c_prev + p[l].b_f);
                    const A r = sigmoid(u2[l] + p[l].v_r * c_prev + p[l].b_r);
                    const A c_t = (c_prev - u0[l]) * f + u0[l];
                    const A mr = p[l].m * r;
                    const A gc = state[l].carry + gh[l] * mr;                           // dL/dc_t
                    const A g_r = gh[l] * p[l].m * (c_t - x_t[l]) * (r * (A(1) - r));  // dL/d(reset pre-act.)
                    const A g_f = gc * (c_prev - u0[l]) * (f * (A(1) - f));            // dL/d(forget pre-act.)
                    g_u0[l] = pad ? A(0) : gc * (A(1) - f);
                    g_u1[l] = pad ? A(0) : g_f;
                    g_u2[l] = pad ? A(0) : g_r;
                    g_x[l] = pad ? A(0) : gh[l] * (A(1) - mr);
                    if (!pad) {
                        state[l].carry = gc * f + g_f * p[l].v_f + g_r * p[l].v_r;
                        state[l].g_vf += g_f * c_prev;
                        state[l].g_vr += g_r * c_prev;
                        state[l].g_bf += g_f;
                        state[l].g_br += g_r;
                    }
                }
                Ln::store(grad_U + u_write, g_u0);
                Ln::store(grad_U + u_write + d, g_u1);
                Ln::store(grad_U + u_write + 2 * d, g_u2);
                Ln::store(grad_x + x_write, g_x);
                u_write -= 3 * Bd;
                x_write -= Bd;
            }
        }
    }
};

// Inputs as in the forward plus c_all (from the forward) and grad_h (T, B, d); grad_c_last may be null (zero).
// Outputs: grad_U (T, B, 3, d), grad_x (T, B, d), grad_c0 (B, d; may be null), and the per-column parameter
// gradients param_grads (4, B, d) with rows [v_f, v_r, b_f, b_r], summed over B by the caller (no atomics).
// L = 2 also needs grad_h at a 4-byte-aligned address.
template <typename S, typename A, int P, int STAGES, int L>
__global__ void __launch_bounds__(SRUPP_BLOCK_THREADS)
sru_backward(const S* U, const S* x, const A* weight_c, const A* bias, const A* c0, const A* dropout_mask,
             const unsigned char* mask_pad, const A* c_all, const S* grad_h, const A* grad_c_last, S* grad_U,
             S* grad_x, A* grad_c0, A* param_grads, const long long T_, const long long B_, const long long d_) {
    SRUPP_DECLARE_SMEM(smem);
    const int T = static_cast<int>(T_), B = static_cast<int>(B_), d = static_cast<int>(d_);
    Columns<L> at;
    if (!at.locate(B, d)) return;
    typedef Backward<S, A, P, STAGES, L> G;
    typedef typename G::Ln Ln;
    G g = {U, x, grad_h, c_all, mask_pad, mask_pad ? mask_pad + static_cast<long long>(T) * B : nullptr,
           grad_U, grad_x, T, B, d, static_cast<long long>(B) * d,
           typename G::Sl(smem, static_cast<int>(threadIdx.x))};
    const long long u0_offset = static_cast<long long>(at.b) * 3 * d + at.j;  // t = 0
    g.u_read = g.u_write = u0_offset + static_cast<long long>(T - 1) * 3 * g.Bd;
    g.x_read = g.x_write = at.col + static_cast<long long>(T - 1) * g.Bd;
    g.m_read = at.b + static_cast<long long>(T - 1) * B;
    g.flip = static_cast<unsigned int>(g.Bd & 1);
    const S* const first[5] = {U + u0_offset, U + u0_offset + d, U + u0_offset + 2 * d, x + at.col, grad_h + at.col};
#pragma unroll
    for (int v = 0; v < 5; ++v) g.up[v] = Ln::upper(first[v]);
    g.mask_lane0 = at.mask_lane(mask_pad);
#pragma unroll
    for (int l = 0; l < L; ++l) {
        g.p[l] = ColumnParams<A>::load(weight_c, bias, dropout_mask, d, at.j + l, at.col + l);
        g.c_init[l] = c0 ? c0[at.col + l] : A(0);
        g.state[l] = BackwardState<A>::start(grad_c_last, at.col + l);
    }
    run_pipeline<P, STAGES>(g, T);  // chunk k covers t = T-1-k*P down to T-P-k*P (>= 0)
#pragma unroll
    for (int l = 0; l < L; ++l) {
        if (grad_c0) grad_c0[at.col + l] = g.state[l].carry;
        g.state[l].store(param_grads, static_cast<long long>(B) * d, at.col + l);
    }
}

}  // namespace srupp
