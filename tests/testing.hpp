// Shared helpers for the tests: random fills and a central finite-difference checker.
#pragma once
#include <doctest/doctest.h>

#include <functional>
#include <string>
#include <vector>

#include "../fbi_llm.hpp"

namespace fbi_test {

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

}  // namespace fbi_test
