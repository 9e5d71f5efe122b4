// §2 layers: every backward against central finite differences, in double precision.
// Each test builds L = Σ r ⊙ out (r random), so dL/dout = r, runs the layer's backward with dout = r, and
// compares every input/parameter gradient with the finite difference of L.
#include "testing.hpp"

using namespace fbi;
using namespace fbi_test;

TEST_CASE("L1 rmsnorm backward matches finite differences") {
    const int N = 3, C = 7;
    auto x = randn(N * C, 1), g = randn(C, 2), r = randn(N * C, 3);
    std::vector<double> out(N * C), rstd(N);
    auto loss = [&] { rmsnorm_forward(out.data(), rstd.data(), x.data(), g.data(), N, C); return dot(out, r); };
    loss();
    std::vector<double> dx(N * C, 0.0), dg(C, 0.0);
    rmsnorm_backward(dx.data(), dg.data(), r.data(), x.data(), g.data(), rstd.data(), N, C);
    check_grad("rmsnorm dx", x, dx, loss);
    check_grad("rmsnorm dg", g, dg, loss);
}

TEST_CASE("L1 rmsnorm output has unit root-mean-square when g = 1") {
    const int C = 16;
    auto x = randn(C, 4, 5.0);
    std::vector<double> g(C, 1.0), y(C), rstd(1);
    rmsnorm_forward(y.data(), rstd.data(), x.data(), g.data(), 1, C);
    double ms = dot(y, y) / C, ms_x = dot(x, x) / C;
    CHECK(ms == doctest::Approx(ms_x / (ms_x + kNormEps)).epsilon(1e-12));  // = 1 up to eps
}

TEST_CASE("L2 rope backward matches finite differences") {
    const int B = 2, T = 5, C = 8, NH = 2;
    std::vector<double> cs, sn;
    rope_tables(cs, sn, 16, C / NH);
    auto x = randn(B * T * C, 5), r = randn(B * T * C, 6);
    for (int pos0 : {0, 3}) {
        auto loss = [&] {
            std::vector<double> y = x;
            rope_forward(y.data(), cs.data(), sn.data(), B, T, C, NH, pos0);
            return dot(y, r);
        };
        std::vector<double> dx = r;
        rope_backward(dx.data(), cs.data(), sn.data(), B, T, C, NH, pos0);
        check_grad("rope dx", x, dx, loss);
    }
}

TEST_CASE("L2 RoPE shift: rotating q and k by a common position shift leaves q·k unchanged") {
    const int C = 8, NH = 1, hs = 8;
    std::vector<double> cs, sn;
    rope_tables(cs, sn, 64, hs);
    auto q0 = randn(C, 7), k0 = randn(C, 8);
    auto rotated_dot = [&](int pq, int pk) {
        std::vector<double> q = q0, k = k0;
        rope_forward(q.data(), cs.data(), sn.data(), 1, 1, C, NH, pq);
        rope_forward(k.data(), cs.data(), sn.data(), 1, 1, C, NH, pk);
        return dot(q, k);
    };
    double base = rotated_dot(5, 2);  // relative offset 3
    for (int shift : {1, 7, 30, 58}) CHECK(rotated_dot(5 + shift, 2 + shift) == doctest::Approx(base).epsilon(1e-12));
    CHECK(std::fabs(rotated_dot(5, 2) - rotated_dot(2, 5)) > 1e-6);  // but the offset itself matters
    // and "rotate half" pairs feature i with i + hs/2: at position 1, feature 0 mixes with feature 4 only
    std::vector<double> e0(C, 0.0);
    e0[0] = 1;
    rope_forward(e0.data(), cs.data(), sn.data(), 1, 1, C, NH, 1);
    CHECK(e0[0] == doctest::Approx(std::cos(1.0)));
    CHECK(e0[4] == doctest::Approx(std::sin(1.0)));
    for (int i : {1, 2, 3, 5, 6, 7}) CHECK(e0[i] == 0.0);
}

TEST_CASE("L3 attention backward matches finite differences") {
    const int B = 2, T = 4, C = 6, NH = 2;
    auto q = randn(B * T * C, 9), k = randn(B * T * C, 10), v = randn(B * T * C, 11), r = randn(B * T * C, 12);
    std::vector<double> out(B * T * C), att(B * NH * T * T);
    auto loss = [&] {
        attention_forward(out.data(), att.data(), q.data(), k.data(), v.data(), B, T, C, NH);
        return dot(out, r);
    };
    loss();
    std::vector<double> dq(q.size(), 0.0), dk(k.size(), 0.0), dv(v.size(), 0.0);
    attention_backward(dq.data(), dk.data(), dv.data(), r.data(), att.data(), q.data(), k.data(), v.data(), B, T, C, NH);
    check_grad("attention dq", q, dq, loss);
    check_grad("attention dk", k, dk, loss);
    check_grad("attention dv", v, dv, loss);
}

TEST_CASE("L3 attention rows are causal probability distributions") {
    const int B = 1, T = 5, C = 4, NH = 1;
    auto q = randn(T * C, 13), k = randn(T * C, 14), v = randn(T * C, 15);
    std::vector<double> out(T * C), att(T * T);
    attention_forward(out.data(), att.data(), q.data(), k.data(), v.data(), B, T, C, NH);
    for (int i = 0; i < T; i++) {
        double sum = 0;
        for (int j = 0; j < T; j++) sum += att[i * T + j];
        CHECK(sum == doctest::Approx(1.0).epsilon(1e-12));
        for (int j = i + 1; j < T; j++) CHECK(att[i * T + j] == 0.0);
    }
    for (int c = 0; c < C; c++) CHECK(out[c] == doctest::Approx(v[c]));  // position 0 sees only itself
}

TEST_CASE("L4 swiglu backward matches finite differences") {
    const size_t n = 20;
    auto gate = randn(n, 16, 2.0), up = randn(n, 17), r = randn(n, 18);
    std::vector<double> act(n), sig(n);
    auto loss = [&] { swiglu_forward(act.data(), sig.data(), gate.data(), up.data(), n); return dot(act, r); };
    loss();
    std::vector<double> dgate(n, 0.0), dup(n, 0.0);
    swiglu_backward(dgate.data(), dup.data(), r.data(), sig.data(), gate.data(), up.data(), n);
    check_grad("swiglu dgate", gate, dgate, loss);
    check_grad("swiglu dup", up, dup, loss);
}

// exp_into is the exp of softmax ([L3]) and SwiGLU ([L4]): within a few units in the last place of std::exp, and
// the same bits wherever its buffer starts (so that a resumed run, with buffers elsewhere, repeats the first).
template <class R>
void check_exp_into(double ulps) {
    const long n = 203;  // not a multiple of any vector width: the padded tail is used
    std::vector<R> x(n + 16), y(n), base(n);
    Rng rng(21);
    for (R& v : x) v = R(120 * rng.uniform() - 60);  // exp from 1e-26 to 1e26: normal floats
    exp_into(base.data(), x.data(), n);
    for (long i = 0; i < n; i++) {
        R ref = std::exp(x[size_t(i)]);
        CHECK(std::fabs(base[size_t(i)] - ref) <= ulps * std::numeric_limits<R>::epsilon() * ref);
    }
    for (int shift = 1; shift <= 15; shift++) {  // the same values, at another address
        std::vector<R> moved(n + 16);
        std::copy(x.begin(), x.begin() + n, moved.begin() + shift);
        exp_into(y.data(), moved.data() + shift, n);
        CHECK(y == base);
        exp_into(moved.data() + shift, moved.data() + shift, n);  // in place
        CHECK(std::equal(base.begin(), base.end(), moved.begin() + shift));
    }
}
TEST_CASE("L4 exp_into (softmax's and SwiGLU's exp): close to std::exp, independent of the buffer's address") {
    check_exp_into<float>(3.0);
    check_exp_into<double>(3.0);
    float gate[2] = {-100.f, 100.f}, up[2] = {1.f, 1.f}, act[2], sig[2];  // exp(±100) overflows a float
    swiglu_forward(act, sig, gate, up, 2);
    CHECK(sig[0] >= 0.f);
    CHECK(sig[0] < 1e-30f);
    CHECK(sig[1] == 1.f);
    CHECK(act[1] == 100.f);
    CHECK(std::isfinite(act[0]));
}

TEST_CASE("L5 matmul backward matches finite differences") {
    const int N = 5, n = 4, m = 3;
    auto in = randn(N * n, 19), W = randn(m * n, 20), r = randn(N * m, 21);
    std::vector<double> out(N * m);
    auto loss = [&] { matmul_forward(out.data(), in.data(), W.data(), N, n, m); return dot(out, r); };
    loss();
    CHECK(out[1 * m + 2] == doctest::Approx(in[4] * W[8] + in[5] * W[9] + in[6] * W[10] + in[7] * W[11]));  // y = x Wᵀ
    std::vector<double> din(N * n, 0.0), dW(m * n, 0.0);
    matmul_backward(din.data(), dW.data(), r.data(), in.data(), W.data(), N, n, m);
    check_grad("matmul din", in, din, loss);
    check_grad("matmul dW", W, dW, loss);
}

TEST_CASE("L6 embedding backward matches finite differences (repeated tokens accumulate)") {
    const int V = 5, C = 3, N = 4;
    int tokens[N] = {2, 0, 2, 4};
    auto E = randn(V * C, 22), r = randn(N * C, 23);
    std::vector<double> out(N * C);
    auto loss = [&] { embedding_forward(out.data(), tokens, E.data(), N, C); return dot(out, r); };
    std::vector<double> dE(V * C, 0.0);
    embedding_backward(dE.data(), r.data(), tokens, N, C);
    check_grad("embedding dE", E, dE, loss);
}
