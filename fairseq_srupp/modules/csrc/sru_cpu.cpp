// Fused CPU forward and backward of the SRU elementwise recurrence (float32 and float64).
//
// Same math and layout as fairseq_srupp/modules/recurrence_ref.py (the specification):
//   U (T, B, 3, d) planes u0, u1, u2;  x, h, c_all (T, B, d);  weight_c, bias (2d,);  c0, dropout_mask (B, d);
//   mask_pad (T, B) bool, true = padded step (c carried, h = 0).
// Work is split into tiles of up to kTileWidth consecutive units j of one batch row b. A tile walks through
// time with its running state in a small local array, so the inner loop over j reads each plane contiguously.
// Tiles are independent and run in parallel (at::parallel_for). The math type is the storage type: float for
// float32 input, double for float64 input.
//
// Compiled on first use by torch.utils.cpp_extension.load (fairseq_srupp/modules/recurrence_cpu.py) and
// registered as torch.ops.srupp_cpu.{forward, backward}.

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <tuple>

namespace {

constexpr int64_t kTileWidth = 256;

// exp for float in plain, branch-free arithmetic, so that the loops over units vectorize (built with
// -fno-trapping-math, which lets the compiler turn the clamps into vector selects). Range reduction
// x = n ln2 + r with ln2 split in two (Cody-Waite), a degree-6 polynomial for exp(r) on |r| <= ln2/2
// (the Cephes expf coefficients), and 2^n assembled in the exponent bits. Relative error < 1e-7 on the
// clamped range [-87, 88], which keeps every result a normal float; NaN propagates.
inline float exp_vectorizable(float x) {
    x = std::min(std::max(x, -87.0f), 88.0f);
    const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest (1.5 * 2^23)
    const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const int32_t exponent_bits = (static_cast<int32_t>(n) + 127) << 23;
    float scale;
    std::memcpy(&scale, &exponent_bits, sizeof(scale));
    return p * scale;
}

inline double exp_vectorizable(double x) { return std::exp(x); }  // float64 is for gradcheck: accuracy first

template <typename scalar_t>
inline scalar_t sigmoid(scalar_t z) {
    return scalar_t(1) / (scalar_t(1) + exp_vectorizable(-z));
}

template <typename scalar_t>
const scalar_t* optional_data(const std::optional<at::Tensor>& t) {
    return t.has_value() ? t->data_ptr<scalar_t>() : nullptr;
}

// The tile (b, j0 .. j0 + width - 1) of a (B, d)-shaped grid, numbered tile = b * tiles_per_row + j-block.
struct Tile {
    int64_t b, j0, width;
};

inline Tile tile_at(int64_t tile, int64_t d) {
    const int64_t tiles_per_row = (d + kTileWidth - 1) / kTileWidth;
    const int64_t b = tile / tiles_per_row;
    const int64_t j0 = (tile % tiles_per_row) * kTileWidth;
    return {b, j0, std::min(kTileWidth, d - j0)};
}

void check_inputs(const at::Tensor& U, const at::Tensor& x, const at::Tensor& weight_c, const at::Tensor& bias) {
    TORCH_CHECK(U.device().is_cpu(), "srupp_cpu: tensors must be on the CPU");
    TORCH_CHECK(U.scalar_type() == at::kFloat || U.scalar_type() == at::kDouble,
                "srupp_cpu: U must be float32 or float64, got ", U.scalar_type());
    TORCH_CHECK(U.dim() == 4 && U.size(2) == 3, "srupp_cpu: U must be (T, B, 3, d)");
    TORCH_CHECK(U.is_contiguous() && x.is_contiguous() && weight_c.is_contiguous() && bias.is_contiguous(),
                "srupp_cpu: inputs must be contiguous");
    TORCH_CHECK(x.scalar_type() == U.scalar_type() && weight_c.scalar_type() == U.scalar_type() &&
                    bias.scalar_type() == U.scalar_type(),
                "srupp_cpu: x, weight_c and bias must have U's dtype");
}

// One time step of a tile: c (the running state) is updated in place and h_t written. Kept out of line so
// the compiler vectorizes it with the __restrict__ guarantees of its own parameters.
template <typename scalar_t>
__attribute__((noinline)) void forward_step(int64_t width, const scalar_t* __restrict__ u0, const scalar_t* __restrict__ u1,
                         const scalar_t* __restrict__ u2, const scalar_t* __restrict__ x_t,
                         const scalar_t* __restrict__ v_f, const scalar_t* __restrict__ v_r,
                         const scalar_t* __restrict__ b_f, const scalar_t* __restrict__ b_r,
                         const scalar_t* __restrict__ m, scalar_t* __restrict__ c, scalar_t* __restrict__ h_t) {
    for (int64_t k = 0; k < width; ++k) {
        const scalar_t f = sigmoid(u1[k] + v_f[k] * c[k] + b_f[k]);
        const scalar_t r = sigmoid(u2[k] + v_r[k] * c[k] + b_r[k]);
        const scalar_t c_t = (c[k] - u0[k]) * f + u0[k];
        c[k] = c_t;
        h_t[k] = x_t[k] + (m[k] * r) * (c_t - x_t[k]);
    }
}

template <typename scalar_t>
void forward_tiles(const at::Tensor& U, const at::Tensor& x, const at::Tensor& weight_c, const at::Tensor& bias,
                   const std::optional<at::Tensor>& c0, const std::optional<at::Tensor>& mask_pad,
                   const std::optional<at::Tensor>& dropout_mask, at::Tensor& h, at::Tensor& c_last,
                   scalar_t* c_all) {
    const int64_t T = U.size(0), B = U.size(1), d = U.size(3);
    const scalar_t* u_data = U.data_ptr<scalar_t>();
    const scalar_t* x_data = x.data_ptr<scalar_t>();
    const scalar_t* w = weight_c.data_ptr<scalar_t>();
    const scalar_t* bs = bias.data_ptr<scalar_t>();
    const scalar_t* c0_data = optional_data<scalar_t>(c0);
    const scalar_t* m_data = optional_data<scalar_t>(dropout_mask);
    const bool* pad_data = mask_pad.has_value() ? mask_pad->data_ptr<bool>() : nullptr;
    scalar_t* h_data = h.data_ptr<scalar_t>();
    scalar_t* c_last_data = c_last.data_ptr<scalar_t>();
    const int64_t n_tiles = B * ((d + kTileWidth - 1) / kTileWidth);

    at::parallel_for(0, n_tiles, 1, [&](int64_t begin, int64_t end) {
        scalar_t c[kTileWidth], m[kTileWidth];
        for (int64_t tile = begin; tile < end; ++tile) {
            const Tile tl = tile_at(tile, d);
            const int64_t col0 = tl.b * d + tl.j0;
            for (int64_t k = 0; k < tl.width; ++k) {
                c[k] = c0_data ? c0_data[col0 + k] : scalar_t(0);
                m[k] = m_data ? m_data[col0 + k] : scalar_t(1);
            }
            const scalar_t* v_f = w + tl.j0;
            const scalar_t* v_r = w + d + tl.j0;
            const scalar_t* b_f = bs + tl.j0;
            const scalar_t* b_r = bs + d + tl.j0;
            for (int64_t t = 0; t < T; ++t) {
                const int64_t xo = (t * B) * d + col0;
                const scalar_t* u0 = u_data + (t * B + tl.b) * 3 * d + tl.j0;
                const scalar_t* u1 = u0 + d;
                const scalar_t* u2 = u0 + 2 * d;
                scalar_t* h_t = h_data + xo;
                if (pad_data && pad_data[t * B + tl.b]) {
                    std::fill(h_t, h_t + tl.width, scalar_t(0));
                } else {
                    forward_step(tl.width, u0, u1, u2, x_data + xo, v_f, v_r, b_f, b_r, m, c, h_t);
                }
                if (c_all) std::copy(c, c + tl.width, c_all + xo);
            }
            std::copy(c, c + tl.width, c_last_data + col0);
        }
    });
}

// Returns h (T, B, d), c_last (B, d) and, when store_c, every c_t as c_all (T, B, d) (else an empty tensor).
std::tuple<at::Tensor, at::Tensor, at::Tensor> sru_forward(const at::Tensor& U, const at::Tensor& x,
                                                           const at::Tensor& weight_c, const at::Tensor& bias,
                                                           const std::optional<at::Tensor>& c0,
                                                           const std::optional<at::Tensor>& mask_pad,
                                                           const std::optional<at::Tensor>& dropout_mask,
                                                           bool store_c) {
    check_inputs(U, x, weight_c, bias);
    const int64_t T = U.size(0), B = U.size(1), d = U.size(3);
    at::Tensor h = at::empty({T, B, d}, U.options());
    at::Tensor c_last = at::empty({B, d}, U.options());
    at::Tensor c_all = at::empty({store_c ? T : 0, B, d}, U.options());
    AT_DISPATCH_FLOATING_TYPES(U.scalar_type(), "srupp_cpu_forward", [&] {
        forward_tiles<scalar_t>(U, x, weight_c, bias, c0, mask_pad, dropout_mask, h, c_last,
                                store_c ? c_all.data_ptr<scalar_t>() : nullptr);
    });
    return {h, c_last, c_all};
}

// One time step of a tile, backwards: writes the step's gradients, moves carry (dL/dc) from c_t to c_{t-1}
// and accumulates the parameter gradients. Out of line, with every pointer a __restrict__ parameter, for the
// same reason as forward_step.
template <typename scalar_t>
__attribute__((noinline)) void backward_step(
    int64_t width, const scalar_t* __restrict__ u0, const scalar_t* __restrict__ u1,
    const scalar_t* __restrict__ u2, const scalar_t* __restrict__ x_t, const scalar_t* __restrict__ gh,
    const scalar_t* __restrict__ c_prev, const scalar_t* __restrict__ v_f, const scalar_t* __restrict__ v_r,
    const scalar_t* __restrict__ b_f, const scalar_t* __restrict__ b_r, const scalar_t* __restrict__ m,
    scalar_t* __restrict__ gu0, scalar_t* __restrict__ gu1, scalar_t* __restrict__ gu2, scalar_t* __restrict__ gx,
    scalar_t* __restrict__ carry, scalar_t* __restrict__ g_vf, scalar_t* __restrict__ g_vr,
    scalar_t* __restrict__ g_bf, scalar_t* __restrict__ g_br) {
    for (int64_t k = 0; k < width; ++k) {
        const scalar_t cp = c_prev[k];
        const scalar_t f = sigmoid(u1[k] + v_f[k] * cp + b_f[k]);
        const scalar_t r = sigmoid(u2[k] + v_r[k] * cp + b_r[k]);
        const scalar_t c_t = (cp - u0[k]) * f + u0[k];
        const scalar_t mr = m[k] * r;
        const scalar_t gc = carry[k] + gh[k] * mr;                                 // dL/dc_t
        const scalar_t gr = gh[k] * m[k] * (c_t - x_t[k]) * (r * (scalar_t(1) - r));  // reset pre-activation
        const scalar_t gf = gc * (cp - u0[k]) * (f * (scalar_t(1) - f));             // forget pre-activation
        gu0[k] = gc * (scalar_t(1) - f);
        gu1[k] = gf;
        gu2[k] = gr;
        gx[k] = gh[k] * (scalar_t(1) - mr);
        carry[k] = gc * f + gf * v_f[k] + gr * v_r[k];
        g_vf[k] += gf * cp;
        g_vr[k] += gr * cp;
        g_bf[k] += gf;
        g_br[k] += gr;
    }
}

template <typename scalar_t>
void backward_tiles(const at::Tensor& U, const at::Tensor& x, const at::Tensor& weight_c, const at::Tensor& bias,
                    const std::optional<at::Tensor>& c0, const std::optional<at::Tensor>& mask_pad,
                    const std::optional<at::Tensor>& dropout_mask, const at::Tensor& c_all,
                    const at::Tensor& grad_h, const std::optional<at::Tensor>& grad_c_last, at::Tensor& grad_U,
                    at::Tensor& grad_x, at::Tensor& grad_c0, at::Tensor& param_grads) {
    const int64_t T = U.size(0), B = U.size(1), d = U.size(3);
    const scalar_t* u_data = U.data_ptr<scalar_t>();
    const scalar_t* x_data = x.data_ptr<scalar_t>();
    const scalar_t* w = weight_c.data_ptr<scalar_t>();
    const scalar_t* bs = bias.data_ptr<scalar_t>();
    const scalar_t* c0_data = optional_data<scalar_t>(c0);
    const scalar_t* m_data = optional_data<scalar_t>(dropout_mask);
    const bool* pad_data = mask_pad.has_value() ? mask_pad->data_ptr<bool>() : nullptr;
    const scalar_t* c_all_data = c_all.data_ptr<scalar_t>();
    const scalar_t* gh_data = grad_h.data_ptr<scalar_t>();
    const scalar_t* gcl_data = optional_data<scalar_t>(grad_c_last);
    scalar_t* gU_data = grad_U.data_ptr<scalar_t>();
    scalar_t* gx_data = grad_x.data_ptr<scalar_t>();
    scalar_t* gc0_data = grad_c0.data_ptr<scalar_t>();
    scalar_t* pg_data = param_grads.data_ptr<scalar_t>();
    const int64_t plane = B * d;
    const int64_t n_tiles = B * ((d + kTileWidth - 1) / kTileWidth);

    at::parallel_for(0, n_tiles, 1, [&](int64_t begin, int64_t end) {
        scalar_t carry[kTileWidth], c_init[kTileWidth], m[kTileWidth];
        scalar_t g_vf[kTileWidth], g_vr[kTileWidth], g_bf[kTileWidth], g_br[kTileWidth];
        for (int64_t tile = begin; tile < end; ++tile) {
            const Tile tl = tile_at(tile, d);
            const int64_t col0 = tl.b * d + tl.j0;
            for (int64_t k = 0; k < tl.width; ++k) {
                carry[k] = gcl_data ? gcl_data[col0 + k] : scalar_t(0);
                c_init[k] = c0_data ? c0_data[col0 + k] : scalar_t(0);
                m[k] = m_data ? m_data[col0 + k] : scalar_t(1);
                g_vf[k] = g_vr[k] = g_bf[k] = g_br[k] = scalar_t(0);
            }
            const scalar_t* v_f = w + tl.j0;
            const scalar_t* v_r = w + d + tl.j0;
            const scalar_t* b_f = bs + tl.j0;
            const scalar_t* b_r = bs + d + tl.j0;
            for (int64_t t = T - 1; t >= 0; --t) {
                const int64_t xo = (t * B) * d + col0;
                const int64_t uo = (t * B + tl.b) * 3 * d + tl.j0;
                scalar_t* gu0 = gU_data + uo;
                scalar_t* gu1 = gu0 + d;
                scalar_t* gu2 = gu0 + 2 * d;
                scalar_t* gx_t = gx_data + xo;
                if (pad_data && pad_data[t * B + tl.b]) {  // carry passes through, zero gradients
                    std::fill(gu0, gu0 + tl.width, scalar_t(0));
                    std::fill(gu1, gu1 + tl.width, scalar_t(0));
                    std::fill(gu2, gu2 + tl.width, scalar_t(0));
                    std::fill(gx_t, gx_t + tl.width, scalar_t(0));
                    continue;
                }
                const scalar_t* u0 = u_data + uo;
                const scalar_t* u1 = u0 + d;
                const scalar_t* u2 = u0 + 2 * d;
                const scalar_t* x_t = x_data + xo;
                const scalar_t* gh = gh_data + xo;
                const scalar_t* c_prev = t > 0 ? c_all_data + xo - plane : c_init;
                backward_step(tl.width, u0, u1, u2, x_t, gh, c_prev, v_f, v_r, b_f, b_r, m, gu0, gu1, gu2, gx_t, carry,
                              g_vf, g_vr, g_bf, g_br);
            }
            std::copy(carry, carry + tl.width, gc0_data + col0);
            std::copy(g_vf, g_vf + tl.width, pg_data + col0);
            std::copy(g_vr, g_vr + tl.width, pg_data + plane + col0);
            std::copy(g_bf, g_bf + tl.width, pg_data + 2 * plane + col0);
            std::copy(g_br, g_br + tl.width, pg_data + 3 * plane + col0);
        }
    });
}

// Returns grad_U (T, B, 3, d), grad_x (T, B, d), grad_c0 (B, d) and the per-column parameter gradients
// param_grads (4, B, d) with rows [v_f, v_r, b_f, b_r]; the caller sums them over B.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> sru_backward(
    const at::Tensor& U, const at::Tensor& x, const at::Tensor& weight_c, const at::Tensor& bias,
    const std::optional<at::Tensor>& c0, const std::optional<at::Tensor>& mask_pad,
    const std::optional<at::Tensor>& dropout_mask, const at::Tensor& c_all, const at::Tensor& grad_h,
    const std::optional<at::Tensor>& grad_c_last) {
    check_inputs(U, x, weight_c, bias);
    const int64_t T = U.size(0), B = U.size(1), d = U.size(3);
    TORCH_CHECK(c_all.size(0) == T && c_all.is_contiguous(), "srupp_cpu: c_all must be a contiguous (T, B, d)");
    TORCH_CHECK(grad_h.is_contiguous() && grad_h.scalar_type() == U.scalar_type(),
                "srupp_cpu: grad_h must be contiguous with U's dtype");
    at::Tensor grad_U = at::empty({T, B, 3, d}, U.options());
    at::Tensor grad_x = at::empty({T, B, d}, U.options());
    at::Tensor grad_c0 = at::empty({B, d}, U.options());
    at::Tensor param_grads = at::empty({4, B, d}, U.options());
    AT_DISPATCH_FLOATING_TYPES(U.scalar_type(), "srupp_cpu_backward", [&] {
        backward_tiles<scalar_t>(U, x, weight_c, bias, c0, mask_pad, dropout_mask, c_all, grad_h, grad_c_last,
                                 grad_U, grad_x, grad_c0, param_grads);
    });
    return {grad_U, grad_x, grad_c0, param_grads};
}

}  // namespace

TORCH_LIBRARY(srupp_cpu, m) {
    m.def("forward(Tensor U, Tensor x, Tensor weight_c, Tensor bias, Tensor? c0, Tensor? mask_pad, "
          "Tensor? dropout_mask, bool store_c) -> (Tensor, Tensor, Tensor)");
    m.def("backward(Tensor U, Tensor x, Tensor weight_c, Tensor bias, Tensor? c0, Tensor? mask_pad, "
          "Tensor? dropout_mask, Tensor c_all, Tensor grad_h, Tensor? grad_c_last) -> (Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(srupp_cpu, CPU, m) {
    m.impl("forward", &sru_forward);
    m.impl("backward", &sru_backward);
}
