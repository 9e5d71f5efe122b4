// equations: every METHOD NOTES equation of fbi_llm.hpp evaluated by the HEADER's functions on small deterministic inputs, printed as
// JSON for notebooks/01_equations.ipynb, which recomputes each value independently (numpy and PyTorch).
//
//   build/equations [seed]          (default seed 42)  →  JSON on stdout
//
// Every section has two parts:  "in"  — the inputs, drawn here from fbi::Rng(seed) and printed with 17
// significant digits, so the notebook uses exactly the same doubles;  "out" — what the header computed.
// The notebook must only ever read "in" to compute its own values, and compare them with "out".
// Everything runs in double (fbi::ModelT<double>), so the notebook can compare at ~1e-12.
// A few inputs are set to exactly 0 on purpose: sign(0) = −1 ([F1]) must show in the outputs. Others sit
// exactly on rounding ties ([Q2]) or on FDB's decision points ([Q5]), where the tie rule shows.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "../../fbi_llm.hpp"
#include "../quantizers/b158.hpp"
#include "../quantizers/db.hpp"
#include "../json_out.hpp"
#include "../common.hpp"  // Args::parse_u64: the seed is checked like a flag

using namespace fbi;
using Vec = std::vector<double>;

using Obj = example::JsonObj<17>;  // 17 significant digits: doubles round-trip exactly
using example::hex64;
using example::section;

// ---- deterministic inputs ---------------------------------------------------------------------------------------
static Rng rng(42);
static Vec randn(size_t n, double scale = 1.0) {
    Vec v(n);
    for (double& x : v) x = scale * rng.normal();
    return v;
}
static Vec positive(size_t n, double lo, double hi) {  // e.g. α > 0
    Vec v(n);
    for (double& x : v) x = lo + (hi - lo) * rng.uniform();
    return v;
}

int main(int argc, char** argv) try {
    uint64_t seed = argc > 1 ? example::Args::parse_u64(argv[1], "argument 1 (seed)") : 42;
    rng = Rng(seed);
    Obj root;
    root.put("seed", int(seed)).put("generator", "\"examples/equations.cpp with fbi_llm.hpp, double precision\"");

    // ---- [L1] RMSNorm forward and backward (dy is a random upstream gradient: L = Σ dy ⊙ y) ----
    {
        const int N = 3, C = 8;
        Vec x = randn(N * C), g = positive(C, 0.5, 1.5), dy = randn(N * C);
        Vec y(N * C), rstd(N), dx(N * C, 0.0), dg(C, 0.0);
        rmsnorm_forward(y.data(), rstd.data(), x.data(), g.data(), N, C);
        rmsnorm_backward(dx.data(), dg.data(), dy.data(), x.data(), g.data(), rstd.data(), N, C);
        root.put("rmsnorm", section(Obj().put("eps", kNormEps).tensor("x", x, {N, C}).tensor("g", g, {C}).tensor("dy", dy, {N, C}),
                                    Obj().tensor("y", y, {N, C}).tensor("rstd", rstd, {N}).tensor("dx", dx, {N, C}).tensor("dg", dg, {C})));
    }

    // ---- [L2] RoPE (rotate half), its backward, and the relative-shift invariance of q·k ----
    {
        const int B = 1, T = 5, C = 8, NH = 2, hs = C / NH, shift = 7;
        Vec x = randn(T * C), dy = randn(T * C), q = randn(T * C), k = randn(T * C);
        Vec cos_t, sin_t;
        rope_tables(cos_t, sin_t, T + shift, hs);
        Vec y = x, dx = dy;
        rope_forward(y.data(), cos_t.data(), sin_t.data(), B, T, C, NH);
        rope_backward(dx.data(), cos_t.data(), sin_t.data(), B, T, C, NH);  // L = Σ dy ⊙ rope(x) ⇒ dx
        // the same q, k placed at positions 0..T−1 and at shift..shift+T−1: per-head scores q_t·k_s must agree
        Vec q0 = q, k0 = k, q1 = q, k1 = k;
        rope_forward(q0.data(), cos_t.data(), sin_t.data(), B, T, C, NH, 0);
        rope_forward(k0.data(), cos_t.data(), sin_t.data(), B, T, C, NH, 0);
        rope_forward(q1.data(), cos_t.data(), sin_t.data(), B, T, C, NH, shift);
        rope_forward(k1.data(), cos_t.data(), sin_t.data(), B, T, C, NH, shift);
        auto scores = [&](const Vec& qq, const Vec& kk) {  // NH × T × T dot products of the rotated vectors
            Vec s(NH * T * T, 0.0);
            for (int h = 0; h < NH; h++)
                for (int t = 0; t < T; t++)
                    for (int u = 0; u < T; u++)
                        for (int i = 0; i < hs; i++) s[(h * T + t) * T + u] += qq[t * C + h * hs + i] * kk[u * C + h * hs + i];
            return s;
        };
        root.put("rope", section(Obj().put("base", kRopeBase).put("NH", NH).put("shift", shift).tensor("x", x, {T, C})
                                     .tensor("dy", dy, {T, C}).tensor("q", q, {T, C}).tensor("k", k, {T, C}),
                                 Obj().tensor("y", y, {T, C}).tensor("dx", dx, {T, C}).tensor("q_rot0", q0, {T, C})
                                     .tensor("k_rot0", k0, {T, C}).tensor("q_rot_shift", q1, {T, C}).tensor("k_rot_shift", k1, {T, C})
                                     .tensor("scores0", scores(q0, k0), {NH, T, T}).tensor("scores_shift", scores(q1, k1), {NH, T, T})));
    }

    // ---- [L4] SwiGLU: act = silu(gate) ⊙ up, and its backward ----
    {
        const int n = 7;
        Vec gate = randn(n, 2.0), up = randn(n), dact = randn(n);
        Vec act(n), sig(n), dgate(n, 0.0), dup(n, 0.0);
        swiglu_forward(act.data(), sig.data(), gate.data(), up.data(), n);
        swiglu_backward(dgate.data(), dup.data(), dact.data(), sig.data(), gate.data(), up.data(), n);
        root.put("swiglu", section(Obj().tensor("gate", gate, {n}).tensor("up", up, {n}).tensor("dact", dact, {n}),
                                   Obj().tensor("act", act, {n}).tensor("dgate", dgate, {n}).tensor("dup", dup, {n})));
    }

    // ---- [L3] causal multi-head attention forward and backward ----
    {
        const int B = 2, T = 4, C = 8, NH = 2;
        Vec q = randn(B * T * C), k = randn(B * T * C), v = randn(B * T * C), dout = randn(B * T * C);
        Vec out(B * T * C), att(B * NH * T * T), dq(B * T * C, 0.0), dk(B * T * C, 0.0), dv(B * T * C, 0.0);
        attention_forward(out.data(), att.data(), q.data(), k.data(), v.data(), B, T, C, NH);
        attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), att.data(), q.data(), k.data(), v.data(), B, T, C, NH);
        root.put("attention", section(Obj().put("NH", NH).tensor("q", q, {B, T, C}).tensor("k", k, {B, T, C})
                                          .tensor("v", v, {B, T, C}).tensor("dout", dout, {B, T, C}),
                                      Obj().tensor("out", out, {B, T, C}).tensor("att", att, {B, NH, T, T})
                                          .tensor("dq", dq, {B, T, C}).tensor("dk", dk, {B, T, C}).tensor("dv", dv, {B, T, C})));
    }

    // ---- [F1]–[F3] and [F5]: one FBI-linear, m = 4 outputs, n = 5 inputs, N = 3 tokens ----
    // L = Σ g ⊙ y with a random upstream gradient g, so ∂L/∂y = g.
    {
        const int N = 3, m = 4, n = 5;
        Vec W = randn(m * n, 0.5);
        W[0 * n + 1] = 0.0;  // exact zeros: sign(0) = −1 (F1)
        W[2 * n + 3] = 0.0;
        W[3 * n + 0] = -0.0;
        Vec alpha = positive(n, 0.2, 1.0), beta = randn(n, 0.1), x = randn(N * n), g = randn(N * m);
        Vec Wb(m * n), w_hat(m * n), y(N * m), dx(N * n, 0.0), G(m * n, 0.0), dW(m * n, 0.0), dalpha(n, 0.0), dbeta(n, 0.0);
        for (int i = 0; i < m * n; i++) Wb[i] = sign_pm1(W[i]);                          // F1
        fbi_forward(w_hat.data(), W.data(), alpha.data(), beta.data(), m, n);              // F2
        matmul_forward(y.data(), x.data(), w_hat.data(), N, n, m);                         // F3
        matmul_backward(dx.data(), G.data(), g.data(), x.data(), w_hat.data(), N, n, m);   // G = ∂L/∂Ŵ, dx = g Ŵ
        fbi_backward(dW.data(), dalpha.data(), dbeta.data(), G.data(), W.data(), alpha.data(), m, n);  // F5
        double L = 0;
        for (int i = 0; i < N * m; i++) L += g[i] * y[i];
        root.put("fbi_linear", section(Obj().tensor("W", W, {m, n}).tensor("alpha", alpha, {n}).tensor("beta", beta, {n})
                                           .tensor("x", x, {N, n}).tensor("g", g, {N, m}),
                                       Obj().tensor("W_b", Wb, {m, n}).tensor("W_hat", w_hat, {m, n}).tensor("y", y, {N, m})
                                           .put("L", L).tensor("G", G, {m, n}).tensor("dW", dW, {m, n})
                                           .tensor("dalpha", dalpha, {n}).tensor("dbeta", dbeta, {n}).tensor("dx", dx, {N, n})));
    }

    // ---- [F4]: α, β initialisation from a latent W (m = 6, n = 4, scale 0.02 as at init) ----
    {
        const int m = 6, n = 4;
        Vec W = randn(m * n, 0.02), alpha(n), beta(n);
        fbi_init(alpha.data(), beta.data(), W.data(), m, n);
        root.put("fbi_init", section(Obj().tensor("W", W, {m, n}), Obj().tensor("alpha", alpha, {n}).tensor("beta", beta, {n})));
    }

    // ---- [F6]: flip-flop ratio over two tensors, three snapshots of the latent weights ----
    {
        const int n1 = 12, n2 = 5;
        Vec a0 = randn(n1), b0 = randn(n2);
        Vec a1 = a0, b1 = b0, a2, b2;
        for (int i = 0; i < n1; i++) a1[i] += 0.8 * rng.normal();
        for (int i = 0; i < n2; i++) b1[i] += 0.8 * rng.normal();
        a0[0] = 0.0; a1[0] = 1e-3;   // 0 counts as negative: 0 → +0.001 is a flip
        a0[1] = -0.5; a1[1] = 0.0;   // −0.5 → 0 is NOT a flip
        a2 = a1; b2 = b1;
        for (int i = 0; i < n1; i++) a2[i] += 1.5 * rng.normal();
        for (int i = 0; i < n2; i++) b2[i] += 1.5 * rng.normal();
        FlipCounter flips;
        auto upd = [&](const Vec& a, const Vec& b) {
            std::vector<const double*> p = {a.data(), b.data()};
            std::vector<size_t> s = {size_t(n1), size_t(n2)};
            return flips.update(p, s);
        };
        double r0 = upd(a0, b0), r1 = upd(a1, b1), r2 = upd(a2, b2);
        root.put("flip_ratio", section(Obj().tensor("a0", a0, {n1}).tensor("b0", b0, {n2}).tensor("a1", a1, {n1})
                                           .tensor("b1", b1, {n2}).tensor("a2", a2, {n1}).tensor("b2", b2, {n2}),
                                       Obj().put("first", r0).put("step1", r1).put("step2", r2)));
    }

    // ---- losses: CE [D0], AD [D1], the 0.5/0.5 mix [D2], and the gradient scale for accumulation ----
    {
        const int N = 4, V = 6;
        Vec zs = randn(N * V, 1.5), zt = randn(N * V, 1.5);
        std::vector<int> y(N);
        for (int& t : y) t = int(rng.below(V));
        Vec ps(N * V), pt(N * V), d_ce(N * V, 0.0), d_ad(N * V, 0.0), d_mix(N * V, 0.0), d_ad_half(N * V, 0.0);
        double ce = cross_entropy_forward(ps.data(), zs.data(), y.data(), N, V);
        cross_entropy_backward(d_ce.data(), ps.data(), y.data(), N, V, 1.0 / N);
        double ad = distill_forward(ps.data(), pt.data(), zs.data(), zt.data(), N, V);
        distill_backward(d_ad.data(), ps.data(), pt.data(), N, V, 1.0 / N);
        double mix = loss_forward_backward(Loss::Mix, d_mix.data(), ps.data(), pt.data(), zs.data(), zt.data(), y.data(), N, V, 1.0);
        double ad2 = loss_forward_backward(Loss::AD, d_ad_half.data(), ps.data(), pt.data(), zs.data(), zt.data(), y.data(), N, V, 0.5);
        // special cases: a teacher that is one-hot on y (logit gap 1000: exp(−1000) = 0 in double) → L_AD = L_CE;
        // a student equal to the teacher → ∂L_AD/∂z = 0 and L_AD = the teacher's mean entropy
        Vec z_onehot(N * V, 0.0), d_same(N * V, 0.0);
        for (int t = 0; t < N; t++) z_onehot[t * V + y[t]] = 1000.0;
        double ad_onehot = distill_forward(ps.data(), pt.data(), zs.data(), z_onehot.data(), N, V);
        double ad_same = distill_forward(ps.data(), pt.data(), zt.data(), zt.data(), N, V);
        distill_backward(d_same.data(), ps.data(), pt.data(), N, V, 1.0 / N);
        root.put("losses", section(Obj().tensor("z_s", zs, {N, V}).tensor("z_t", zt, {N, V}).ints("targets", y),
                                   Obj().put("ce", ce).tensor("dz_ce", d_ce, {N, V}).put("ad", ad).tensor("dz_ad", d_ad, {N, V})
                                       .put("mix", mix).tensor("dz_mix", d_mix, {N, V}).put("ad_via_dispatch", ad2)
                                       .tensor("dz_ad_scale_half", d_ad_half, {N, V}).put("ad_onehot_teacher", ad_onehot)
                                       .put("ad_student_equals_teacher", ad_same).tensor("dz_student_equals_teacher", d_same, {N, V})));
    }

    // ---- [O3] learning-rate schedule: warm-up then cosine to the floor ----
    {
        Schedule sc;
        sc.peak = 1e-3; sc.floor = 1e-4; sc.warmup = 100; sc.total = 2000;
        std::vector<int> steps = {0, 1, 50, 99, 100, 101, 500, 1050, 1999, 2000, 2500};
        Vec lr;
        for (int s : steps) lr.push_back(lr_schedule(sc, s));
        root.put("lr_schedule", section(Obj().put("peak", sc.peak).put("floor", sc.floor).put("warmup", sc.warmup)
                                            .put("total", sc.total).ints("steps", steps),
                                        Obj().tensor("lr", lr, {int(steps.size())})));
    }

    // ---- [O2] global grad-norm clipping at 1.0 ----
    {
        Vec gsmall = randn(6, 0.1), gbig = randn(6, 2.0), a = gsmall, b = gbig;
        double n_small = clip_grad_norm(a, 1.0), n_big = clip_grad_norm(b, 1.0);
        root.put("clip", section(Obj().put("max_norm", 1.0).tensor("g_small", gsmall, {6}).tensor("g_big", gbig, {6}),
                                 Obj().put("norm_small", n_small).tensor("clipped_small", a, {6}).put("norm_big", n_big)
                                     .tensor("clipped_big", b, {6})));
    }

    // ---- [O1] AdamW: two updates of a 2×3 matrix (decayed) and a 3-vector (not decayed: DecayOn::Matrices) ----
    {
        ModelT<double> md;  // only params, grads and the tensor table are used by adamw_step
        md.tensors.push_back({"w", 0, 2, 3, true});
        md.tensors.push_back({"g", 6, 1, 3, false});
        Vec p0 = randn(9), g1 = randn(9), g2 = randn(9);
        md.params = p0;
        AdamW opt;  // β1 0.9, β2 0.95, eps 1e-8, weight decay 0.1 on matrices
        double lr1 = 1e-2, lr2 = 5e-3;
        md.grads = g1;
        adamw_step(md, opt, lr1);
        Vec p1 = md.params;
        md.grads = g2;
        adamw_step(md, opt, lr2);
        Vec p2 = md.params;
        root.put("adamw", section(Obj().put("beta1", opt.beta1).put("beta2", opt.beta2).put("eps", opt.eps)
                                      .put("weight_decay", opt.weight_decay).put("lr1", lr1).put("lr2", lr2)
                                      .tensor("p0", p0, {9}).tensor("g1", g1, {9}).tensor("g2", g2, {9})
                                      .put("tensors", "[{\"name\": \"w\", \"offset\": 0, \"size\": 6, \"decay\": true}, "
                                                      "{\"name\": \"g\", \"offset\": 6, \"size\": 3, \"decay\": false}]"),
                                  Obj().tensor("p1", p1, {9}).tensor("p2", p2, {9})));
    }

    // ---- [Q1], [Q3] BitNet b1.58 weights: γ = mean|W|, code = RoundClip(W/(γ+ε), −1, 1), Ŵ = γ·code, identity STE ----
    // W has 32 = 2^5 entries, each a multiple of u = 2^-48 with Σ|W| < 32: every partial sum is exact, so γ is the
    // same double in any summation order (numpy's, torch's). Two entries ±t sit exactly on the rounding tie
    // W/(γ+ε) = ±0.5, where round-half-to-even gives code 0 (round-half-away-from-zero would give ±1).
    {
        const int m = 4, n = 8, a = 5, b = 21;  // a, b: the two tie entries
        const double u = std::ldexp(1.0, -48);
        Vec W = randn(m * n), G = randn(m * n);
        const double to_07 = 0.7 / absmean(W.data(), W.size());  // mean|W| ≈ 0.7 keeps γ inside [0.5, 1)
        for (double& w : W) w = std::nearbyint(w * to_07 / u) * u;
        W[3] = 0.0; W[12] = -0.0; W[a] = W[b] = 0.0;  // exact zeros (code 0); a, b are set below
        // For γ on the 2^-53 grid in [0.5, 1), fl(γ + ε) = γ + e·2^-53. The tie 2t = fl(γ + ε) with γ = (S0 + 2t)/32
        // (S0 = Σ|W| without ±t) gives t/u = (S0/u + e)/62: nudge W[0] by single u until that is an integer.
        const double e = std::ldexp((0.5 + kTernaryEps) - 0.5, 53);
        double S0 = 0;
        for (double w : W) S0 += std::fabs(w) / u;
        while (std::fmod(S0 + e, 62.0) != 0.0) { W[0] += W[0] > 0 ? u : -u; S0 += 1; }
        W[a] = (S0 + e) / 62 * u; W[b] = -W[a];
        Vec w_hat(m * n), code(m * n), dW(m * n, 0.0);
        const double gamma = ternary_forward(w_hat.data(), W.data(), m, n);
        for (int i = 0; i < m * n; i++) code[i] = ternary_code(W[i], gamma);
        quantizer(kB158).f64.backward(dW.data(), nullptr, nullptr, G.data(), W.data(), nullptr, nullptr, m, n);  // [Q3]
        if (W[a] / (gamma + kTernaryEps) != 0.5) { std::fprintf(stderr, "equations: b1.58 tie not exact\n"); return 1; }
        // a larger N(0, 1) draw for the proportions of the three codes
        const int M = 64, K = 256;
        Vec Wbig = randn(M * K), code_big(M * K);
        const double gamma_big = absmean(Wbig.data(), Wbig.size());
        for (int i = 0; i < M * K; i++) code_big[i] = ternary_code(Wbig[i], gamma_big);
        root.put("ternary", section(Obj().put("eps", kTernaryEps).tensor("W", W, {m, n}).tensor("G", G, {m, n})
                                        .tensor("W_big", Wbig, {M, K}),
                                    Obj().put("gamma", gamma).tensor("code", code, {m, n}).tensor("W_hat", w_hat, {m, n})
                                        .tensor("dW", dW, {m, n}).put("gamma_big", gamma_big).tensor("code_big", code_big, {M, K})));
    }

    // ---- [Q2] BitNet b1.58 activations, per token: s = 127/max(max|x|, 1e-5), q = clamp(round(s·x)), x̃ = q/s ----
    // Rows: random; max |x| = 127 (so s = 1 exactly) with values on .5 ties; all zero; every |x| below 1e-5.
    {
        const int N = 4, n = 8;
        Vec x = randn(N * n);
        const Vec ties = {127.0, 2.5, 3.5, -0.5, -1.5, 0.5, 126.5, -4.25};
        std::copy(ties.begin(), ties.end(), x.begin() + n);
        std::fill(x.begin() + 2 * n, x.begin() + 3 * n, 0.0);
        for (int j = 0; j < n; j++) x[3 * n + j] *= 1e-6;
        Vec s(N), xq(N * n);
        std::vector<int> q;
        std::vector<int8_t> q8(n);
        for (int t = 0; t < N; t++) {
            s[t] = quantize_int8_absmax(x.data() + t * n, n, q8.data());
            q.insert(q.end(), q8.begin(), q8.end());
        }
        act_quant_rows(xq.data(), x.data(), N, n);
        root.put("act_quant", section(Obj().tensor("x", x, {N, n}),
                                      Obj().tensor("s", s, {N}).ints("q", q).tensor("x_q", xq, {N, n})));
    }

    // ---- [Q4]–[Q6] DB-LLM FDB (UNCONFIRMED reading): init, codes B1 B2, Ŵ = α1·B1 + α2·B2, STE backward ----
    {
        const int m = 4, n = 16;
        Vec W = randn(m * n, 0.02), G = randn(m * n);
        for (int i = 0; i < m * n; i++) W[i] *= 1 + i / n;  // rows of different spread: each row its own step s
        Vec a1(m), a2(m), w_hat0(m * n);
        fdb_init(a1.data(), a2.data(), W.data(), m, n);
        fdb_forward(w_hat0.data(), W.data(), a1.data(), a2.data(), m, n);
        // scales moved away from their init (as during training); codes, Ŵ and the backward with them
        Vec c1 = a1, c2 = a2, B1(m * n), B2(m * n), w_hat(m * n), dW(m * n, 0.0), da1(m, 0.0), da2(m, 0.0);
        for (int i = 0; i < m; i++) { c1[i] *= 0.8 + 0.4 * rng.uniform(); c2[i] *= 0.8 + 0.4 * rng.uniform(); }
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) fdb_codes(W[i * n + j], c1[i], c2[i], B1[i * n + j], B2[i * n + j]);
        fdb_forward(w_hat.data(), W.data(), c1.data(), c2.data(), m, n);
        fdb_backward(dW.data(), da1.data(), da2.data(), G.data(), W.data(), c1.data(), c2.data(), m, n);
        // the decision points themselves, at s = 1 (α1 = 2, α2 = −1): which level H(0) = 1 picks on a tie
        const Vec wt = {-2, -1.5, -1, -0.5, -0.25, 0, 0.25, 0.5, 1, 1.5, 2, 2.5, 3};
        const int nt = int(wt.size());
        Vec t1(nt), t2(nt);
        for (int k = 0; k < nt; k++) fdb_codes(wt[k], 2.0, -1.0, t1[k], t2[k]);
        root.put("fdb", section(Obj().tensor("W", W, {m, n}).tensor("G", G, {m, n}).tensor("alpha1", c1, {m})
                                    .tensor("alpha2", c2, {m}).tensor("w_ties", wt, {nt}),
                                Obj().tensor("alpha1_init", a1, {m}).tensor("alpha2_init", a2, {m})
                                    .tensor("W_hat_init", w_hat0, {m, n}).tensor("B1", B1, {m, n}).tensor("B2", B2, {m, n})
                                    .tensor("W_hat", w_hat, {m, n}).tensor("dW", dW, {m, n}).tensor("dalpha1", da1, {m})
                                    .tensor("dalpha2", da2, {m}).tensor("B1_ties", t1, {nt}).tensor("B2_ties", t2, {nt})));
    }

    // ---- [D3] DAD (UNCONFIRMED reading): position weights w_t, L = Σ w_t CE(p^T_t, p^S_t) / Σ w_t, its gradient ----
    // Position 1: a certain teacher (entropy weight 0). Position 3: student = teacher (disagreement weight 0).
    {
        const int N = 5, V = 6;
        Vec zs = randn(N * V, 1.5), zt = randn(N * V, 1.5);
        for (int v = 0; v < V; v++) zt[1 * V + v] = v == 2 ? 1000.0 : 0.0;  // exp(−1000) = 0: p^T one-hot
        for (int v = 0; v < V; v++) zs[3 * V + v] = zt[3 * V + v];
        Vec ps(N * V), pt(N * V);
        softmax_rows(ps.data(), zs.data(), N, V);
        softmax_rows(pt.data(), zt.data(), N, V);
        Obj out;
        for (DadWeight d : {DadWeight::Uniform, DadWeight::Entropy, DadWeight::Disagreement}) {
            Vec w(N), dz(N * V, 0.0);
            dad_weights(d, w.data(), pt.data(), ps.data(), N, V);
            double L = distill_weighted_forward(ps.data(), pt.data(), zs.data(), zt.data(), w.data(), N, V);
            distill_weighted_backward(dz.data(), ps.data(), pt.data(), w.data(), N, V, 1.0);
            const std::string k = dad_weight_name(d);
            out.tensor("w_" + k, w, {N}).put("loss_" + k, L).tensor("dz_" + k, dz, {N, V});
        }
        // AD ([D1]) on the same logits; all-zero weights (falls back to w_t = 1); the registered DAD loss
        Vec d_ad(N * V, 0.0), w0(N, 0.0), d_zero(N * V, 0.0), d_disp(N * V, 0.0);
        std::vector<int> unused_targets(N, 0);
        double ad = distill_forward(ps.data(), pt.data(), zs.data(), zt.data(), N, V);
        distill_backward(d_ad.data(), ps.data(), pt.data(), N, V, 1.0 / N);
        double l0 = distill_weighted_forward(ps.data(), pt.data(), zs.data(), zt.data(), w0.data(), N, V);
        distill_weighted_backward(d_zero.data(), ps.data(), pt.data(), w0.data(), N, V, 1.0);
        double ld = loss_forward_backward(kLossDADDisagreement, d_disp.data(), ps.data(), pt.data(), zs.data(), zt.data(),
                                          unused_targets.data(), N, V, 1.0);
        out.put("ad", ad).tensor("dz_ad", d_ad, {N, V}).put("loss_zero_weights", l0).tensor("dz_zero_weights", d_zero, {N, V})
            .put("loss_dispatch_disagreement", ld).tensor("dz_dispatch_disagreement", d_disp, {N, V});
        root.put("dad", section(Obj().tensor("z_s", zs, {N, V}).tensor("z_t", zt, {N, V}), out));
    }

    // ---- the whole tiny model (1-bit, FBI): AD loss against given teacher logits, gradient of every parameter ----
    {
        Config cfg;
        cfg.V = 7; cfg.C = 8; cfg.L = 2; cfg.NH = 2; cfg.F = swiglu_width(cfg.C); cfg.T = 6; cfg.quant = Quant::FBI;
        const int B = 2, T = 5, N = B * T;
        ModelT<double> model = build_model<double>(cfg, seed + 1);
        // the init's 0.02 weights make every block nearly the identity; larger latent W, α, β exercise more
        for (double& p : model.params) p += 0.3 * rng.normal();
        model.params[model.tensors[model.blocks[0].lin[WQ].W].offset + 3] = 0.0;  // one exact zero latent weight
        std::vector<int> tokens(N), targets(N);
        for (int& t : tokens) t = int(rng.below(cfg.V));
        for (int& t : targets) t = int(rng.below(cfg.V));
        Vec zt = randn(size_t(N) * cfg.V, 2.0);
        model_forward(model, tokens.data(), B, T);
        zero_grad(model);
        zero(model.acts.dlogits);
        double L = loss_forward_backward(Loss::AD, model.acts.dlogits.data(), model.acts.probs.data(),
                                         model.acts.probs_teacher.data(), model.acts.logits.data(), zt.data(),
                                         targets.data(), N, cfg.V, 1.0);
        model_backward(model, tokens.data());
        std::string tens = "[";
        for (size_t i = 0; i < model.tensors.size(); i++) {
            const TensorInfo& t = model.tensors[i];
            tens += std::string(i ? ", " : "") + "{\"name\": \"" + t.name + "\", \"offset\": " + std::to_string(t.offset) +
                    ", \"rows\": " + std::to_string(t.rows) + ", \"cols\": " + std::to_string(t.cols) + "}";
        }
        Obj c;
        c.put("V", cfg.V).put("C", cfg.C).put("L", cfg.L).put("NH", cfg.NH).put("F", cfg.F).put("T", cfg.T);
        root.put("model", section(Obj().put("config", c).put("B", B).put("T", T).put("tensors", tens + "]")
                                      .tensor("params", model.params, {int(model.params.size())}).ints("tokens", tokens)
                                      .ints("targets", targets).tensor("z_teacher", zt, {B, T, cfg.V}),
                                  Obj().put("loss", L).tensor("logits", model.acts.logits, {B, T, cfg.V})
                                      .tensor("grads", model.grads, {int(model.grads.size())})));
    }

    std::printf("%s\n", root.str().c_str());
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
}
