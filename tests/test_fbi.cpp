// FBI-linear [F1]–[F6] and the losses [D0]–[D2]. Worked examples a student can follow by hand.
#include "testing.hpp"

using namespace fbi;
using namespace fbi_test;

TEST_CASE("F1 sign(W) is ±1 with sign(0) = -1") {
    CHECK(sign_pm1(0.3) == 1.0);
    CHECK(sign_pm1(-0.3) == -1.0);
    CHECK(sign_pm1(0.0) == -1.0);
    CHECK(sign_pm1(-0.0) == -1.0);
    CHECK(sign_pm1(1e-30f) == 1.0f);
}

TEST_CASE("F2 Ŵ = α·sign(W) + β per input column; with α = 1, β = 0 it is sign(W)") {
    // W is 2×3 (m = 2 outputs, n = 3 input columns)
    std::vector<double> W = {0.5, -0.2, 0.0,
                             -1.0, 0.1, 2.0};
    std::vector<double> ones(3, 1.0), zeros(3, 0.0), w_hat(6);
    fbi_forward(w_hat.data(), W.data(), ones.data(), zeros.data(), 2, 3);
    CHECK(w_hat == std::vector<double>{1, -1, -1, -1, 1, 1});
    std::vector<double> alpha = {2, 3, 4}, beta = {0.5, -0.5, 1};
    fbi_forward(w_hat.data(), W.data(), alpha.data(), beta.data(), 2, 3);
    CHECK(w_hat == std::vector<double>{2.5, -3.5, -3, -1.5, 2.5, 5});
}

TEST_CASE("F3 y = x Ŵᵀ equals the fused form Σ_j sign(W_ij)(α_j x_j) + Σ_j β_j x_j") {
    const int m = 4, n = 5;
    auto W = randn(m * n, 1), alpha = randn(n, 2), beta = randn(n, 3), x = randn(n, 4);
    std::vector<double> w_hat(m * n), y(m);
    fbi_forward(w_hat.data(), W.data(), alpha.data(), beta.data(), m, n);
    matmul_forward(y.data(), x.data(), w_hat.data(), 1, n, m);
    double beta_x = dot(beta, x);  // one scalar per token, shared by every output row
    for (int i = 0; i < m; i++) {
        double fused = beta_x;
        for (int j = 0; j < n; j++) fused += sign_pm1(W[i * n + j]) * (alpha[j] * x[j]);
        CHECK(y[i] == doctest::Approx(fused).epsilon(1e-12));
    }
}

TEST_CASE("F4 α, β initialisation: column mean and column mean absolute deviation (hand-computed)") {
    // columns: j=0 → {1, 3, -1}: mean 1, |dev| = {0, 2, 2} → α = 4/3;   j=1 → {0, 0, 6}: mean 2, |dev| = {2,2,4} → α = 8/3
    std::vector<double> W = {1, 0,
                             3, 0,
                             -1, 6};
    std::vector<double> alpha(2), beta(2);
    fbi_init(alpha.data(), beta.data(), W.data(), 3, 2);
    CHECK(beta[0] == doctest::Approx(1.0));
    CHECK(beta[1] == doctest::Approx(2.0));
    CHECK(alpha[0] == doctest::Approx(4.0 / 3));
    CHECK(alpha[1] == doctest::Approx(8.0 / 3));
}

TEST_CASE("F5 STE: ∂L/∂W = α_j G_ij exactly; ∂L/∂α, ∂L/∂β, ∂L/∂x by finite differences") {
    const int N = 3, m = 4, n = 5;
    auto W = randn(m * n, 5), alpha = randn(n, 6), beta = randn(n, 7), x = randn(N * n, 8), r = randn(N * m, 9);
    std::vector<double> w_hat(m * n), y(N * m);
    auto loss = [&] {  // L = Σ r ⊙ (x Ŵᵀ)
        fbi_forward(w_hat.data(), W.data(), alpha.data(), beta.data(), m, n);
        matmul_forward(y.data(), x.data(), w_hat.data(), N, n, m);
        return dot(y, r);
    };
    loss();
    std::vector<double> dx(N * n, 0.0), G(m * n, 0.0), dW(m * n, 0.0), dalpha(n, 0.0), dbeta(n, 0.0);
    matmul_backward(dx.data(), G.data(), r.data(), x.data(), w_hat.data(), N, n, m);  // G = ∂L/∂Ŵ, dx = r Ŵ
    fbi_backward(dW.data(), dalpha.data(), dbeta.data(), G.data(), W.data(), alpha.data(), m, n);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            CHECK(dW[i * n + j] == alpha[j] * G[i * n + j]);  // exact: the formula, not an approximation
            double g = 0;  // G_ij = Σ_tokens r_ti x_tj
            for (int t = 0; t < N; t++) g += r[t * m + i] * x[t * n + j];
            CHECK(G[i * n + j] == doctest::Approx(g).epsilon(1e-12));
        }
    check_grad("fbi dalpha", alpha, dalpha, loss);
    check_grad("fbi dbeta", beta, dbeta, loss);
    check_grad("fbi dx", x, dx, loss);
}

TEST_CASE("F6 flip-flop ratio: 0 for unchanged weights, 1 for negated, exact fraction otherwise") {
    std::vector<float> a = {0.5f, -0.1f, 0.2f, -0.3f}, b = {0.1f, 0.7f, -0.4f};
    FlipCounter fc;
    std::vector<const float*> ptrs = {a.data(), b.data()};
    std::vector<size_t> sizes = {a.size(), b.size()};
    CHECK(fc.update(ptrs, sizes) == 0.0);  // first call only records
    CHECK(fc.update(ptrs, sizes) == 0.0);  // unchanged
    for (float& w : a) w = -w;
    for (float& w : b) w = -w;
    CHECK(fc.update(ptrs, sizes) == 1.0);  // every sign flipped
    a[0] = 0.0f;                           // -0.5 → 0: sign(0) = -1, no flip
    b[2] = -0.4f;                          // 0.4 → -0.4: one flip out of 7 weights
    CHECK(fc.update(ptrs, sizes) == doctest::Approx(1.0 / 7));
}

// ---- losses [D0]–[D2] -------------------------------------------------------------------------------------------

TEST_CASE("D0 cross-entropy: value on a hand example, gradient by finite differences") {
    // one position, logits {0, ln 3}: softmax = {1/4, 3/4}; target 1 → loss = -ln(3/4)
    std::vector<double> z = {0.0, std::log(3.0)}, p(2);
    int y = 1;
    CHECK(cross_entropy_forward(p.data(), z.data(), &y, 1, 2) == doctest::Approx(-std::log(0.75)));
    const int N = 3, V = 5;
    auto logits = randn(N * V, 10);
    std::vector<int> targets = {0, 4, 2};
    std::vector<double> probs(N * V), dlogits(N * V, 0.0);
    auto loss = [&] { return cross_entropy_forward(probs.data(), logits.data(), targets.data(), N, V); };
    loss();
    cross_entropy_backward(dlogits.data(), probs.data(), targets.data(), N, V, 1.0 / N);
    check_grad("ce dlogits", logits, dlogits, loss);
}

TEST_CASE("D1 AD loss: one-hot teacher = CE; gradient (softmax(z^S) - p^T)/N by finite differences; zero at z^S = z^T") {
    const int N = 4, V = 6;
    auto zs = randn(N * V, 11), zt = randn(N * V, 12);
    std::vector<double> ps(N * V), pt(N * V), ps2(N * V);
    // (a) a teacher whose softmax is (numerically) one-hot on the targets gives exactly the CE
    std::vector<int> targets = {3, 0, 5, 1};
    std::vector<double> onehot_logits(N * V, -1000.0);
    for (int t = 0; t < N; t++) onehot_logits[t * V + targets[t]] = 0.0;
    double ad = distill_forward(ps.data(), pt.data(), zs.data(), onehot_logits.data(), N, V);
    double ce = cross_entropy_forward(ps2.data(), zs.data(), targets.data(), N, V);
    CHECK(ad == doctest::Approx(ce).epsilon(1e-12));
    // (b) gradient by finite differences
    auto loss = [&] { return distill_forward(ps.data(), pt.data(), zs.data(), zt.data(), N, V); };
    loss();
    std::vector<double> d(N * V, 0.0);
    distill_backward(d.data(), ps.data(), pt.data(), N, V, 1.0 / N);
    check_grad("ad dlogits", zs, d, loss);
    // (c) student = teacher: gradient 0, value = the teacher's mean entropy
    double same = distill_forward(ps.data(), pt.data(), zt.data(), zt.data(), N, V);
    std::vector<double> d0(N * V, 0.0);
    distill_backward(d0.data(), ps.data(), pt.data(), N, V, 1.0 / N);
    for (double g : d0) CHECK(g == 0.0);
    double entropy = 0;
    for (int i = 0; i < N * V; i++) entropy -= pt[i] * std::log(pt[i]);
    CHECK(same == doctest::Approx(entropy / N).epsilon(1e-12));
}

TEST_CASE("D2 mixed loss = 0.5 CE + 0.5 AD, with the matching gradient; micro-batches scale the gradient") {
    const int N = 3, V = 4;
    auto zs = randn(N * V, 13), zt = randn(N * V, 14);
    std::vector<int> y = {1, 2, 3};
    std::vector<double> ps(N * V), pt(N * V), d_mix(N * V, 0.0), d_ce(N * V, 0.0), d_ad(N * V, 0.0);
    double mix = loss_forward_backward(Loss::Mix, d_mix.data(), ps.data(), pt.data(), zs.data(), zt.data(), y.data(), N, V, 1.0);
    double ce = loss_forward_backward(Loss::CE, d_ce.data(), ps.data(), pt.data(), zs.data(), zt.data(), y.data(), N, V, 1.0);
    double ad = loss_forward_backward(Loss::AD, d_ad.data(), ps.data(), pt.data(), zs.data(), zt.data(), y.data(), N, V, 1.0);
    CHECK(mix == doctest::Approx(0.5 * ce + 0.5 * ad).epsilon(1e-12));
    for (int i = 0; i < N * V; i++) CHECK(d_mix[i] == doctest::Approx(0.5 * d_ce[i] + 0.5 * d_ad[i]).epsilon(1e-12));
    std::vector<double> d_quarter(N * V, 0.0);
    loss_forward_backward(Loss::AD, d_quarter.data(), ps.data(), pt.data(), zs.data(), zt.data(), y.data(), N, V, 0.25);
    for (int i = 0; i < N * V; i++) CHECK(d_quarter[i] == doctest::Approx(0.25 * d_ad[i]).epsilon(1e-12));
}
