// b158.hpp — BitNet b1.58 as a quantizer plug-in for fbi_llm.hpp: ternary weights γ·{−1, 0, +1} per tensor and
// int8 activations per token, trained with the identity STE, packed to two bit masks. Include it after (or
// instead of) the header; it registers itself as quantizer id 2, "b1.58" (Config::quant = fbi::kB158).
//
// METHOD NOTES (b1.58 = Ma et al. 2024, "The Era of 1-bit LLMs", arXiv 2402.17764 §2; BitNet = Wang et al. 2023,
// arXiv 2310.11453). [Q2], the int8 activation, is the header's: the packed kernels use it for every quantizer.
//   [Q1] γ = mean|W| over the tensor, code = RoundClip(W/(γ + ε), −1, 1) ∈ {−1, 0, +1}, Ŵ = γ·code (eq. 1–3)
//   [Q3] identity STE through both quantizers: ∂L/∂W = ∂L/∂Ŵ, ∂L/∂x = ∂L/∂x̃        (BitNet §2.2)
//   [S8] ternary on the ±1 kernels: Σ code·q = Σ_{code=+1} q − Σ_{code=−1} q, each from one mask (this project's)
//
// EQUATION MAP   label → function → test
//   [Q1] γ, RoundClip ternary codes        ternary_forward, ternary_code     "Q1 ..."
//   [Q2] training form of the int8 input   act_quant_rows                    "Q2 ..."
//   [Q3] identity STE                      identity_backward (header), linear_input   "Q3 ..."
//   [S8] two masks, packed forward         b158_pack, b158_packed_forward    "S8 ..."
#pragma once
#include "../../fbi_llm.hpp"

namespace fbi {

constexpr Quant kB158{2};

// [Q2], training form: every row of x (N rows × n) replaced by its dequantized int8 value q/s. The backward
// is the identity STE (∂L/∂x = ∂L/∂x̃, [Q3]): the model passes the gradient on.
template <class R>
void act_quant_rows(R* xq, const R* x, int N, int n) {
#pragma omp parallel if (long(N) * n >= kParallelMinWork)
    {
        std::vector<int8_t> q(n);  // one int8 row per thread
#pragma omp for schedule(static)
        for (int t = 0; t < N; t++) {
            R s = quantize_int8_absmax(x + size_t(t) * n, n, q.data());
            for (int j = 0; j < n; j++) xq[size_t(t) * n + j] = R(q[j]) / s;  // [Q2] dequantized x_q / s
        }
    }
}

// [Q1] weights: γ = mean |W| over the whole tensor (the header's absmean), code = RoundClip(W / (γ + ε), −1, 1).
constexpr double kTernaryEps = 1e-5;
template <class R>
R ternary_code(R w, R gamma) {
    R c = std::nearbyint(w / (gamma + R(kTernaryEps)));  // [Q1] round (half to even, as torch.round)
    return std::max(R(-1), std::min(R(1), c));          // [Q1] clip to [−1, 1]
}
// Ŵ = γ · code ([Q1]). Returns γ. The backward is the identity STE: ∂L/∂W = ∂L/∂Ŵ (γ is not learned).
template <class R>
R ternary_forward(R* w_hat, const R* W, int m, int n) {
    const size_t count = size_t(m) * n;
    const R gamma = absmean(W, count);  // [Q1] γ = mean|W|
    for (size_t i = 0; i < count; i++) w_hat[i] = gamma * ternary_code(W[i], gamma);  // [Q1] dequantized γ·W_q
    return gamma;
}

// ---- packed: two masks, codes = +1 and codes = −1 ([S8]), and γ ------------------------------------------------
inline void b158_pack(PackedLinear& p, const float* W, const float*, const float*) {
    const float gamma = absmean(W, size_t(p.m) * p.n);  // [Q1]
    auto code = [&](int i, int j) { return ternary_code(W[size_t(i) * p.n + j], gamma); };
    p.mask[0] = pack_bits(p.m, p.n, [&](int i, int j) { return code(i, j) > 0; });  // [S8]: +1 codes
    p.mask[1] = pack_bits(p.m, p.n, [&](int i, int j) { return code(i, j) < 0; });  //        −1 codes
    p.scale[0] = {gamma};
}
// y = γ/s · Σ_j code_j q_j, q the int8 of x itself ([Q2]); Σ code·q = Σ_P q − Σ_M q = (signed(P) − signed(M)) / 2.
// b1.58 trained with the same int8 input, so this equals its training forward up to fp32 rounding.
inline void b158_packed_forward(const PackedLinear& p, const float* x, float* y, PackedScratch& ws) {
    const float s = packed_signed_sums(p, x, ws);
    const float gamma_over_s = p.scale[0][0] / s;
    for (int i = 0; i < p.m; i++) y[i] = float((ws.acc[0][i] - ws.acc[1][i]) / 2) * gamma_over_s;
}
inline void b158_check(const PackedLinear& p, const std::string& what) {
    for (size_t w = 0; w < p.mask[0].bits.size(); w++)
        if (p.mask[0].bits[w] & p.mask[1].bits[w])
            throw std::runtime_error(what + ": a ternary weight is marked both +1 and -1 (corrupted)");
}

template <class R> QuantOps<R> b158_ops() {
    QuantOps<R> o;
    o.forward = [](R* w_hat, const R* W, const R*, const R*, int m, int n) { ternary_forward(w_hat, W, m, n); };
    o.backward = &identity_backward<R>;  // [Q3]
    o.input = &act_quant_rows<R>;        // [Q2]
    return o;
}
inline Quantizer b158_quantizer() {
    Quantizer q;
    q.id = kB158;
    q.name = "b1.58";  // no learnable scale: γ comes from W
    q.f32 = b158_ops<float>();
    q.f64 = b158_ops<double>();
    q.masks = 2;
    q.packed_scale_sizes = [](int, int, int sizes[2]) { sizes[0] = 1, sizes[1] = 0; };  // γ
    q.pack = &b158_pack;
    q.packed_forward = &b158_packed_forward;
    q.check = &b158_check;
    return q;
}
inline const bool kB158Registered = register_quantizer(b158_quantizer());

}  // namespace fbi
