// Shared helpers for the tests: random fills and a central finite-difference checker.
#pragma once
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "../fbi_llm.hpp"
#include "../examples/kernels/fast_kernels.hpp"  // the fast kernels are tested like the header's own
#include "../examples/quantizers/b158.hpp"       // so are the plug-in quantizers, DAD and codebook scales
#include "../examples/quantizers/codebook.hpp"
#include "../examples/quantizers/db.hpp"

namespace fbi_test {

// Where the tests write their temporary files: the build directory in use (the Makefile sets FBI_TEST_DIR to
// $(BUILD)), so `make BUILD=elsewhere test` works; `build` when the binary is run by hand.
inline std::string test_dir() {
    const char* d = std::getenv("FBI_TEST_DIR");
    return d && *d ? d : "build";
}
inline std::string test_file(const std::string& name) { return test_dir() + "/" + name; }

inline std::vector<double> randn(size_t n, uint64_t seed, double scale = 1.0) {
    fbi::Rng rng(seed);
    std::vector<double> v(n);
    for (double& x : v) x = scale * rng.normal();
    return v;
}

// Central difference of a scalar function f with respect to x[i] (double precision, h = 1e-6: truncation
// error ~h² ≈ 1e-12, rounding error ~1e-16/h ≈ 1e-10 relative to f, far below the 1e-6 tolerance we use).
inline double numeric_grad(std::vector<double>& x, size_t i, const std::function<double()>& f, double h = 1e-6) {
    double keep = x[i];
    x[i] = keep + h;
    double up = f();
    x[i] = keep - h;
    double down = f();
    x[i] = keep;
    return (up - down) / (2 * h);
}

// Compare analytic[i] with the finite difference at every index (or `samples` random ones).
// Tolerance: |a − n| <= 1e-6 · max(1e-3, |a|, |n|): relative for gradients above 1e-3, and an absolute 1e-9
// below (the rounding error of the difference is ~1e-16·|L|/h ≈ 1e-10 for the O(1) losses
// used in the tests; keep them O(1)). A wrong backward is off by O(|a|).
inline void check_grad(const char* what, std::vector<double>& x, const std::vector<double>& analytic,
                       const std::function<double()>& f, size_t samples = 0, uint64_t seed = 7) {
    fbi::Rng rng(seed);
    size_t n = samples == 0 ? x.size() : samples;
    double worst = 0;
    for (size_t s = 0; s < n; s++) {
        size_t i = samples == 0 ? s : size_t(rng.below(x.size()));
        double num = numeric_grad(x, i, f);
        double err = std::fabs(num - analytic[i]) / std::max({1e-3, std::fabs(num), std::fabs(analytic[i])});
        worst = std::max(worst, err);
    }
    std::string msg = std::string(what) + ": worst relative error " + std::to_string(worst);
    INFO(msg);
    CHECK(worst < 1e-6);
}

// L = Σ_i r_i out_i: a random linear read-out turns any layer output into a scalar loss with dL/dout = r.
inline double dot(const std::vector<double>& a, const std::vector<double>& b) {
    double s = 0;
    for (size_t i = 0; i < a.size(); i++) s += a[i] * b[i];
    return s;
}

// ---- configs: one maker, and the named shapes the test files share --------------------------------------------
inline fbi::Config make_config(fbi::Quant q, int V, int C, int L, int NH, int F, int T) {
    fbi::Config c;
    c.V = V; c.C = C; c.L = L; c.NH = NH; c.F = F; c.T = T; c.quant = q;
    return c;
}
// tiny: every whole-model gradient check (test_model, test_quant): finite differences over every tensor
inline fbi::Config tiny_config(fbi::Quant q) { return make_config(q, 7, 8, 2, 2, 12, 6); }
// small: training and checkpoint round trips (test_train, test_io)
inline fbi::Config small_config(fbi::Quant q) { return make_config(q, 11, 16, 2, 2, 24, 8); }
// packed: the packed decoder (test_packed_model, test_packed_quant); F = 130 gives padded rows
inline fbi::Config packed_config(fbi::Quant q) { return make_config(q, 13, 64, 2, 2, 130, 12); }
// file: small enough that every prefix and every byte of a file can be tried (test_io); F = 70 pads rows
inline fbi::Config file_config(fbi::Quant q) { return make_config(q, 3, 4, 1, 1, 70, 4); }

// A model whose latent weights (and scales) were moved away from their init, as training would move them.
inline fbi::Model trained_like(fbi::Quant q, uint64_t seed) {
    fbi::Model m = fbi::build_model<float>(packed_config(q), seed);
    fbi::Rng rng(seed + 1);
    for (float& p : m.params) p += float(0.01 * rng.normal());
    return m;
}
// int8 activations over the full range, −128 included.
inline std::vector<int8_t> random_int8(int n, fbi::Rng& rng) {
    std::vector<int8_t> q(n);
    for (int8_t& x : q) x = int8_t(int(rng.below(256)) - 128);
    return q;
}
// Scale every parameter up so that gradients are O(0.01–1) instead of O(1e-4) at the 0.02 init: the
// finite-difference check is then relative, not lost in the absolute floor. noise = 0 only scales.
inline void spread_params(fbi::ModelT<double>& m, uint64_t seed, double noise = 0.05) {
    fbi::Rng rng(seed);
    for (double& p : m.params) p = p * 5 + noise * rng.normal();
}
// Random tokens in [0, V).
inline std::vector<int> random_tokens(size_t n, int V, uint64_t seed) {
    fbi::Rng rng(seed);
    std::vector<int> t(n);
    for (int& x : t) x = int(rng.below(uint64_t(V)));
    return t;
}
// CE loss of the model on (x, y); fills grads when `backward`.
inline double model_loss(fbi::ModelT<double>& m, const std::vector<int>& x, const std::vector<int>& y, int B, int T,
                         bool backward) {
    fbi::model_forward(m, x.data(), B, T);
    auto& a = m.acts;
    fbi::zero(a.dlogits);
    double loss = fbi::loss_forward_backward(fbi::Loss::CE, a.dlogits.data(), a.probs.data(), a.probs_teacher.data(),
                                             a.logits.data(), (const double*)nullptr, y.data(), B * T, m.cfg.V, 1.0);
    if (backward) { fbi::zero_grad(m); fbi::model_backward(m, x.data()); }
    return loss;
}
// The setup of a whole-model gradient check: a double model of the tiny shape built from `seed`, its parameters
// spread (seed + 1), one random batch of B × T tokens (seeds + 2, + 3), and the analytic gradients of the CE loss
// on it. loss() evaluates the loss again, for finite differences.
struct GradCase {
    static constexpr int B = 2, T = 5;
    fbi::ModelT<double> m;
    std::vector<int> x, y;
    std::vector<double> analytic;
    GradCase(fbi::Quant q, uint64_t seed, double noise = 0.05) : m(fbi::build_model<double>(tiny_config(q), seed)) {
        spread_params(m, seed + 1, noise);
        x = random_tokens(B * T, m.cfg.V, seed + 2);
        y = random_tokens(B * T, m.cfg.V, seed + 3);
        model_loss(m, x, y, B, T, true);
        analytic = m.grads;
    }
    double loss() { return model_loss(m, x, y, B, T, false); }
};
// Every block linear's latent W: sign/round have zero derivative, so its gradient is checked against the STE
// formula exactly: ∂L/∂W_ij == expected(lin, i, j, G_ij), G = ∂L/∂Ŵ.
template <class Expected>
void check_latent_grads(const GradCase& gc, Expected&& expected) {
    for (const fbi::BlockRef& blk : gc.m.blocks)
        for (const fbi::LinearRef& lin : blk.lin) {
            const double* G = gc.m.dw_eff.data() + lin.eff;
            const double* dW = gc.analytic.data() + gc.m.tensors[lin.W].offset;
            for (int i = 0; i < lin.m; i++)
                for (int j = 0; j < lin.n; j++) REQUIRE(dW[i * lin.n + j] == expected(lin, i, j, G[i * lin.n + j]));
        }
}

// Worst relative finite-difference error of the analytic gradient over `samples` random entries of tensor t.
inline double worst_fd_error(fbi::ModelT<double>& m, size_t t, const std::vector<double>& analytic,
                             const std::function<double()>& f, int samples, uint64_t seed) {
    const fbi::TensorInfo& ti = m.tensors[t];
    fbi::Rng rng(seed);
    double worst = 0;
    for (int s = 0; s < samples; s++) {
        size_t i = ti.offset + size_t(rng.below(ti.size()));
        double num = numeric_grad(m.params, i, f);
        worst = std::max(worst, std::fabs(num - analytic[i]) / std::max({1e-3, std::fabs(num), std::fabs(analytic[i])}));
    }
    return worst;
}

// ---- packed decoding (test_packed_model, test_packed_quant) ---------------------------------------------------
// Logits of every position, decoding `toks` one at a time through the packed model with kernel k.
inline std::vector<float> decode_all(const fbi::PackedModel& pm, fbi::Kernel k, const std::vector<int>& toks) {
    fbi::DecodeView d = fbi::decode_view(pm);
    fbi::PackedLinearFn fn(&pm, k);
    fbi::KVCache cache;
    cache.reset(d.cfg.L, d.cfg.T, d.cfg.C);
    fbi::DecodeScratch s;
    s.resize(d.cfg);
    std::vector<float> out, logits(d.cfg.V);
    for (int t : toks) {
        fbi::decode_step(d, fn, cache, s, t, logits.data(), pm.rope_cos.data(), pm.rope_sin.data());
        out.insert(out.end(), logits.begin(), logits.end());
    }
    return out;
}
// A file with its trailing FNV-1a checksum recomputed, so that a deliberately corrupted byte reaches the checks
// behind the checksum.
inline std::vector<unsigned char> reseal(std::vector<unsigned char> b) {
    uint64_t sum = fbi::fnv1a(b.data(), b.size() - 8);
    std::memcpy(b.data() + b.size() - 8, &sum, 8);
    return b;
}

// max |a − b| and max |b| over two equally long vectors (how far a packed path is from the float one).
struct MaxDiff { double worst = 0, scale = 0; };
inline MaxDiff max_diff(const std::vector<float>& a, const std::vector<float>& b) {
    MaxDiff d;
    for (size_t i = 0; i < a.size(); i++) {
        d.worst = std::max(d.worst, double(std::fabs(a[i] - b[i])));
        d.scale = std::max(d.scale, double(std::fabs(b[i])));
    }
    return d;
}

}  // namespace fbi_test
