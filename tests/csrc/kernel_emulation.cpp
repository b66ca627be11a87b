// Runs the CUDA kernels of fairseq_srupp/cuda/sru_recurrence.cu on the CPU, one CUDA thread at a time, so that
// CI (no GPU) checks their indexing, chunking, masking, 16-bit staging and pipeline order against the reference.
//
// The kernel file supplies its device primitives only without SRUPP_EMULATION; this file supplies host ones:
//  - cp.async: copy4/copy8 queue the copy in the thread's open commit group, commit_copies closes the group,
//    and wait_copies<N> performs the oldest groups until at most N are pending. A slot read before the wait
//    that covers it therefore holds stale data (shared memory starts as 0xff bytes: NaN for floats), so a
//    wrong pipeline order fails the comparison instead of passing by luck.
//  - threadIdx/blockIdx and the dynamic shared memory of the block being run.
//  - the 16-bit conversions (GCC/Clang _Float16, round to nearest even like cvt.rn.f16.f32) and sigmoid.
// Threads of a block share nothing but disjoint shared-memory slots and never synchronise, so running them
// one after another is equivalent to running them concurrently.
//
// Entry points (extern "C", for ctypes): srupp_emulate_forward / srupp_emulate_backward take the kernel's
// arguments as raw addresses plus the storage type code (0 float32, 1 float64, 2 float16, 3 bfloat16), the
// pipeline configuration (P, STAGES) and whether to run the *_pair kernels (16-bit only); they return 0, or a
// negative number for a configuration that is not compiled here.
#include <cmath>
#include <cstring>
#include <deque>
#include <type_traits>
#include <vector>

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(n)

struct EmulatedIndex {
    unsigned int x;
};
static EmulatedIndex threadIdx, blockIdx;
static unsigned char* emulated_smem = nullptr;
#define SRUPP_DECLARE_SMEM(name) unsigned char* name = emulated_smem

static inline float __uint_as_float(unsigned int u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
static inline unsigned int __float_as_uint(float f) {
    unsigned int u;
    std::memcpy(&u, &f, 4);
    return u;
}
static inline double __longlong_as_double(long long v) {
    double f;
    std::memcpy(&f, &v, 8);
    return f;
}

namespace srupp {

struct half_t;
typedef unsigned char* smem_ptr;

struct PendingCopy {
    unsigned char* dst;
    const unsigned char* src;
    unsigned int size, width;  // bytes read, bytes written (the rest zero-filled)
};
static std::deque<std::vector<PendingCopy>> committed;  // oldest first
static std::vector<PendingCopy> open_group;

inline smem_ptr smem_pointer(void* p) { return static_cast<unsigned char*>(p); }
inline void copy4(smem_ptr dst, const void* src, unsigned int src_size) {
    open_group.push_back({dst, static_cast<const unsigned char*>(src), src_size, 4u});
}
inline void copy8(smem_ptr dst, const void* src) {
    open_group.push_back({dst, static_cast<const unsigned char*>(src), 8u, 8u});
}
inline void commit_copies() {
    committed.push_back(open_group);
    open_group.clear();
}
template <int N>
inline void wait_copies() {
    while (committed.size() > static_cast<size_t>(N)) {
        for (const PendingCopy& c : committed.front()) {
            std::memset(c.dst, 0, c.width);
            std::memcpy(c.dst, c.src, c.size);
        }
        committed.pop_front();
    }
}
float to_math(half_t v);
void store(half_t* p, float v);
inline float sigmoid(float z) { return 1.0f / (1.0f + std::exp(-z)); }

}  // namespace srupp

#include "sru_recurrence.cu"

namespace srupp {

float to_math(half_t v) {
    _Float16 h;
    std::memcpy(&h, &v.bits, 2);
    return static_cast<float>(h);
}
void store(half_t* p, float v) {
    const _Float16 h = static_cast<_Float16>(v);
    std::memcpy(&p->bits, &h, 2);
}

}  // namespace srupp

namespace {

constexpr int kThreads = SRUPP_BLOCK_THREADS;

template <typename S>
struct Math {
    typedef float A;
};
template <>
struct Math<double> {
    typedef double A;
};

// Runs `thread_body` for every (block, thread) of a launch over `columns` columns with `smem_bytes` of shared
// memory per block, filled with 0xff before each block.
template <typename Body>
void run_grid(long long columns, size_t smem_bytes, Body thread_body) {
    std::vector<unsigned char> smem(smem_bytes + 16);
    unsigned char* base = smem.data() + (16 - reinterpret_cast<unsigned long long>(smem.data()) % 16) % 16;
    emulated_smem = base;
    const long long blocks = (columns + kThreads - 1) / kThreads;
    for (long long block = 0; block < blocks; ++block) {
        std::memset(base, 0xff, smem_bytes);
        blockIdx.x = static_cast<unsigned int>(block);
        for (int tid = 0; tid < kThreads; ++tid) {
            threadIdx.x = static_cast<unsigned int>(tid);
            srupp::committed.clear();
            srupp::open_group.clear();
            thread_body();
        }
    }
}

template <typename S>
size_t smem_bytes(int P, int stages, int values, bool has_mask) {
    const size_t word = sizeof(typename srupp::Stage<S>::Word);
    return static_cast<size_t>(kThreads) * stages * P * (values * word + (has_mask ? 4 : 0));
}

// L columns per thread: 1, or 2 for the two-column kernels (16-bit storage, d even)
template <typename S, int P, int STAGES, int L>
void forward(long long U, long long x, long long weight_c, long long bias, long long c0, long long dropout_mask,
             long long mask_pad, long long h, long long c_all, long long c_last, long long T, long long B,
             long long d) {
    typedef typename Math<S>::A A;
    run_grid(B * d / L, smem_bytes<S>(P, STAGES, 4, mask_pad != 0), [&] {
        srupp::sru_forward<S, A, P, STAGES, L>(
            reinterpret_cast<const S*>(U), reinterpret_cast<const S*>(x), reinterpret_cast<const A*>(weight_c),
            reinterpret_cast<const A*>(bias), reinterpret_cast<const A*>(c0),
            reinterpret_cast<const A*>(dropout_mask), reinterpret_cast<const unsigned char*>(mask_pad),
            reinterpret_cast<S*>(h), reinterpret_cast<A*>(c_all), reinterpret_cast<A*>(c_last), T, B, d);
    });
}

template <typename S, int P, int STAGES, int L>
void backward(long long U, long long x, long long weight_c, long long bias, long long c0, long long dropout_mask,
              long long mask_pad, long long c_all, long long grad_h, long long grad_c_last, long long grad_U,
              long long grad_x, long long grad_c0, long long param_grads, long long T, long long B, long long d) {
    typedef typename Math<S>::A A;
    run_grid(B * d / L, smem_bytes<S>(P, STAGES, 5 + L, mask_pad != 0), [&] {
        srupp::sru_backward<S, A, P, STAGES, L>(
            reinterpret_cast<const S*>(U), reinterpret_cast<const S*>(x), reinterpret_cast<const A*>(weight_c),
            reinterpret_cast<const A*>(bias), reinterpret_cast<const A*>(c0),
            reinterpret_cast<const A*>(dropout_mask), reinterpret_cast<const unsigned char*>(mask_pad),
            reinterpret_cast<const A*>(c_all), reinterpret_cast<const S*>(grad_h),
            reinterpret_cast<const A*>(grad_c_last), reinterpret_cast<S*>(grad_U), reinterpret_cast<S*>(grad_x),
            reinterpret_cast<A*>(grad_c0), reinterpret_cast<A*>(param_grads), T, B, d);
    });
}

// The (P, STAGES) configurations compiled here: the launcher's defaults (float64: 2 x 2) and shapes that
// exercise partial chunks (P = 3), a single stage, and one step per chunk.
#define SRUPP_FOR_EACH_CONFIG(X) X(4, 3) X(4, 2) X(2, 2) X(3, 2) X(1, 1)

template <typename S>
constexpr bool kSixteenBit = std::is_same<S, srupp::half_t>::value || std::is_same<S, srupp::bf16_t>::value;

// Runs direction<S, P, STAGES, L> with L = 2 when `paired`; -1 for a configuration not compiled here, -2 for
// pairs of a wider type.
#define SRUPP_DISPATCH(direction)                                          \
    template <typename S, typename... Args>                                \
    int dispatch_##direction(int P, int stages, int paired, Args... args) { \
        if (paired && !kSixteenBit<S>) return -2;                          \
        SRUPP_FOR_EACH_CONFIG(SRUPP_CASE_##direction)                      \
        return -1;                                                         \
    }
#define SRUPP_CASE(direction, p, s)                             \
    if (P == p && stages == s) {                                \
        if constexpr (kSixteenBit<S>) {                         \
            if (paired) {                                       \
                direction<S, p, s, 2>(args...);                 \
                return 0;                                       \
            }                                                   \
        }                                                       \
        direction<S, p, s, 1>(args...);                         \
        return 0;                                               \
    }
#define SRUPP_CASE_forward(p, s) SRUPP_CASE(forward, p, s)
#define SRUPP_CASE_backward(p, s) SRUPP_CASE(backward, p, s)
SRUPP_DISPATCH(forward)
SRUPP_DISPATCH(backward)

}  // namespace

extern "C" int srupp_emulate_forward(int dtype, int P, int stages, int paired, long long U, long long x,
                                     long long weight_c, long long bias, long long c0, long long dropout_mask,
                                     long long mask_pad, long long h, long long c_all, long long c_last, long long T,
                                     long long B, long long d) {
#define SRUPP_ARGS P, stages, paired, U, x, weight_c, bias, c0, dropout_mask, mask_pad, h, c_all, c_last, T, B, d
    switch (dtype) {
        case 0: return dispatch_forward<float>(SRUPP_ARGS);
        case 1: return dispatch_forward<double>(SRUPP_ARGS);
        case 2: return dispatch_forward<srupp::half_t>(SRUPP_ARGS);
        case 3: return dispatch_forward<srupp::bf16_t>(SRUPP_ARGS);
        default: return -1;
    }
#undef SRUPP_ARGS
}

extern "C" int srupp_emulate_backward(int dtype, int P, int stages, int paired, long long U, long long x,
                                      long long weight_c, long long bias, long long c0, long long dropout_mask,
                                      long long mask_pad, long long c_all, long long grad_h, long long grad_c_last,
                                      long long grad_U, long long grad_x, long long grad_c0, long long param_grads,
                                      long long T, long long B, long long d) {
#define SRUPP_ARGS                                                                                                \
    P, stages, paired, U, x, weight_c, bias, c0, dropout_mask, mask_pad, c_all, grad_h, grad_c_last, grad_U, \
        grad_x, grad_c0, param_grads, T, B, d
    switch (dtype) {
        case 0: return dispatch_backward<float>(SRUPP_ARGS);
        case 1: return dispatch_backward<double>(SRUPP_ARGS);
        case 2: return dispatch_backward<srupp::half_t>(SRUPP_ARGS);
        case 3: return dispatch_backward<srupp::bf16_t>(SRUPP_ARGS);
        default: return -1;
    }
#undef SRUPP_ARGS
}
