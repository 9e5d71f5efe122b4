// [O1]–[O3]: AdamW, clipping, the learning-rate schedule; §7 deterministic batches.
#include "testing.hpp"

using namespace fbi;
using namespace fbi_test;

namespace {
Config one_block() { return make_config(Quant::FP, 3, 2, 1, 1, 2, 2); }
}  // namespace

TEST_CASE("O1 AdamW: one and two steps against a hand computation; which parameters decay") {
    auto m = build_model<double>(one_block(), 1);
    int emb = m.tok_emb, norm = m.blocks[0].attn_norm;
    m.p(emb)[0] = 0.5;  m.g(emb)[0] = 0.2;   // a matrix entry
    m.p(norm)[0] = 0.5; m.g(norm)[0] = 0.2;  // a norm gain (a vector)
    AdamW opt;  // β1 0.9, β2 0.95, eps 1e-8, wd 0.1, decay on matrices only
    // Tolerance 1e-7 relative: the moments m, v are stored in fp32 (rounding 2^-24 ≈ 6e-8).
    adamw_step(m, opt, 0.1);
    // step 1: m̂ = g, v̂ = g², update = lr·g/(|g| + eps);  decay: p·(1 − lr·wd) for the matrix only
    double upd1 = 0.1 * 0.2 / (0.2 + 1e-8);
    CHECK(m.p(emb)[0] == doctest::Approx(0.5 * (1 - 0.1 * 0.1) - upd1).epsilon(1e-7));
    CHECK(m.p(norm)[0] == doctest::Approx(0.5 - upd1).epsilon(1e-7));
    // step 2 with g = -0.1: m = 0.9·0.02 + 0.1·(-0.1) = 0.008, v = 0.95·0.002 + 0.05·0.01 = 0.0024
    double p1 = m.p(emb)[0];
    m.g(emb)[0] = -0.1;
    adamw_step(m, opt, 0.1);
    double m_hat = 0.008 / (1 - 0.81), v_hat = 0.0024 / (1 - 0.9025);
    CHECK(m.p(emb)[0] == doctest::Approx(p1 * 0.99 - 0.1 * m_hat / (std::sqrt(v_hat) + 1e-8)).epsilon(1e-7));
    // DecayOn::All (FBI-LLM's choice) decays the vector too
    auto m2 = build_model<double>(one_block(), 1);
    m2.p(norm)[0] = 0.5; m2.g(norm)[0] = 0.2;
    AdamW all;
    all.decay_on = DecayOn::All;
    adamw_step(m2, all, 0.1);
    CHECK(m2.p(norm)[0] == doctest::Approx(0.5 * 0.99 - upd1).epsilon(1e-7));
}

TEST_CASE("O1 AdamW over every parameter (slices, threads) equals the per-element formula") {
    auto m = build_model<double>(one_block(), 3);
    Rng rng(5);
    for (double& g : m.grads) g = 0.01 * rng.normal();
    std::vector<double> p = m.params;
    std::vector<float> mom(p.size(), 0.f), var(p.size(), 0.f);
    AdamW opt;
    for (int step = 1; step <= 2; step++) {
        adamw_step(m, opt, 0.01);
        double bc1 = 1 - std::pow(0.9, step), bc2 = 1 - std::pow(0.95, step);
        size_t worst = 0;
        for (const TensorInfo& t : m.tensors)
            for (size_t i = t.offset; i < t.offset + t.size(); i++) {  // [O1], one element at a time
                double g = m.grads[i], wd = t.is_matrix ? 0.1 : 0.0;
                mom[i] = float(0.9 * mom[i] + 0.1 * g);
                var[i] = float(0.95 * var[i] + 0.05 * g * g);
                double decayed = p[i] * (1 - 0.01 * wd), step_size = 0.01 * (mom[i] / bc1) / (std::sqrt(var[i] / bc2) + 1e-8);
                p[i] = decayed - step_size;
                // a few units in the last place of the two terms (a compiler may fuse a multiply-add differently)
                if (std::fabs(m.params[i] - p[i]) > 4e-16 * (std::fabs(decayed) + std::fabs(step_size))) worst++;
            }
        CHECK(worst == 0);
        CHECK(opt.m == mom);
        CHECK(opt.v == var);
    }
}

TEST_CASE("O2 gradient-norm clipping bounds the global norm and returns the norm before clipping") {
    std::vector<double> g = {3, 0, 4};  // norm 5
    CHECK(clip_grad_norm(g, 1.0) == doctest::Approx(5.0));
    CHECK(g[0] == doctest::Approx(0.6));
    CHECK(g[2] == doctest::Approx(0.8));
    std::vector<double> small = {0.3, 0.4};  // norm 0.5 < 1: unchanged
    CHECK(clip_grad_norm(small, 1.0) == doctest::Approx(0.5));
    CHECK(small[0] == 0.3);
}

TEST_CASE("O3 warm-up + cosine schedule: values at warm-up, warm-up end, midpoint, end, and after") {
    Schedule sc;  // peak 1e-3, floor 1e-4, warmup 100, total 2000
    CHECK(lr_schedule(sc, 0) == 0.0);
    CHECK(lr_schedule(sc, 50) == doctest::Approx(0.5e-3));
    CHECK(lr_schedule(sc, 100) == doctest::Approx(1e-3));            // warm-up end: the peak
    CHECK(lr_schedule(sc, 1050) == doctest::Approx(0.55e-3));        // midpoint of the cosine: (peak + floor)/2
    CHECK(lr_schedule(sc, 2000) == doctest::Approx(1e-4));           // the end: the floor
    CHECK(lr_schedule(sc, 5000) == doctest::Approx(1e-4));           // and after
    CHECK(lr_schedule(sc, 1500) < lr_schedule(sc, 1000));            // decreasing
}

TEST_CASE("O4 batches are a pure function of (seed, step), and targets are inputs shifted by one") {
    std::vector<int> data(1000);
    for (int i = 0; i < 1000; i++) data[i] = i;
    std::vector<int> x1, y1, x2, y2;
    get_batch(x1, y1, data, 3, 8, 42, 17);
    get_batch(x2, y2, data, 3, 8, 42, 16);
    get_batch(x2, y2, data, 3, 8, 42, 17);
    CHECK(x1 == x2);
    for (size_t i = 0; i < x1.size(); i++) CHECK(y1[i] == x1[i] + 1);
    get_batch(x2, y2, data, 3, 8, 43, 17);
    CHECK(x1 != x2);
    std::vector<int> too_short(8);
    CHECK_THROWS_WITH(get_batch(x1, y1, too_short, 1, 8, 1, 0), doctest::Contains("shorter than one window"));
}

TEST_CASE("O5 epochs: each epoch visits every window once, one T apart from a random offset, in a new order") {
    for (const std::array<int, 3>& shape : {std::array<int, 3>{1000, 8, 3}, {1001, 7, 5}, {9, 8, 2}, {200, 1, 4}, {130, 64, 1}}) {
        const int n = shape[0], T = shape[1], B = shape[2];  // (not a structured binding: CAPTURE is a lambda)
        CAPTURE(n);
        CAPTURE(T);
        std::vector<int> data(static_cast<size_t>(n));
        for (int i = 0; i < n; i++) data[size_t(i)] = i;
        const long span = n - T, K = std::max<long>(1, span / T);  // K windows per epoch
        const long steps = (3 * K + B - 1) / B;                    // three epochs and a bit
        std::vector<long> starts;
        std::vector<int> x, y;
        for (long step = 0; step < steps; step++) {
            get_batch(x, y, data, B, T, 5, step);
            for (int b = 0; b < B; b++) {
                for (int t = 0; t < T; t++) REQUIRE(y[size_t(b) * T + t] == x[size_t(b) * T + t] + 1);
                starts.push_back(x[size_t(b) * T]);
            }
        }
        std::vector<std::vector<long>> epochs;
        for (long e = 0; e < 3; e++) {
            std::vector<long> ep(starts.begin() + e * K, starts.begin() + (e + 1) * K);
            std::vector<long> sorted = ep;
            std::sort(sorted.begin(), sorted.end());
            for (long k = 0; k < K; k++) CHECK(sorted[size_t(k)] == sorted[0] + k * T);  // one T apart, no repeats
            CHECK(sorted[0] >= 0);
            CHECK(sorted.back() + T <= n - 1);  // the last target exists
            epochs.push_back(ep);
        }
        if (K >= 8) {  // a new order each epoch (8! orders: equal by chance with probability < 3e-5)
            CHECK(epochs[0] != epochs[1]);
            CHECK(epochs[1] != epochs[2]);
        }
    }
    // A resumed run (or one split into micro-batches) sees the same windows: window i depends on (seed, i) only.
    std::vector<int> data(500);
    for (int i = 0; i < 500; i++) data[size_t(i)] = i;
    std::vector<int> x6, y6, x2, y2, x3, y3;
    get_batch(x6, y6, data, 6, 8, 9, 7);  // windows 42..47
    get_batch(x2, y2, data, 2, 8, 9, 21); // windows 42, 43
    get_batch(x3, y3, data, 3, 8, 9, 15); // windows 45..47
    CHECK(std::equal(x2.begin(), x2.end(), x6.begin()));
    CHECK(std::equal(x3.begin(), x3.end(), x6.begin() + 3 * 8));
}
