// §5 model: initialisation, whole-model gradients, causality, overfitting, KV-cache decoding, bad input.
#include "testing.hpp"

using namespace fbi;
using namespace fbi_test;


TEST_CASE("M0 init: matrices ~ N(0, 0.02²), norm gains 1") {
    Config c;  // the tiny training config
    auto m = build_model<float>(c, 42);
    int t = m.find("block0.w_gate");
    REQUIRE(t >= 0);
    const float* w = m.p(t);
    size_t n = m.tensors[t].size();
    double mean = 0, var = 0;
    for (size_t i = 0; i < n; i++) mean += w[i];
    mean /= n;
    for (size_t i = 0; i < n; i++) var += (w[i] - mean) * (w[i] - mean);
    double sd = std::sqrt(var / n);
    CHECK(std::fabs(mean) < 4 * 0.02 / std::sqrt(double(n)));  // 4 standard errors
    CHECK(sd == doctest::Approx(0.02).epsilon(0.02));
    const float* g = m.p(m.find("block3.mlp_norm"));
    for (int i = 0; i < c.C; i++) CHECK(g[i] == 1.0f);
    CHECK(c.F == swiglu_width(c.C));
    CHECK(swiglu_width(768) == 2048);  // FBI-LLM 130M's MLP width
}

TEST_CASE("M1 whole-model backward matches finite differences (full precision, every tensor)") {
    GradCase gc(Quant::FP, 3);
    auto& m = gc.m;
    auto f = [&] { return gc.loss(); };
    for (size_t t = 0; t < m.tensors.size(); t++) {
        const TensorInfo& ti = m.tensors[t];
        double worst = worst_fd_error(m, t, gc.analytic, f, 6, 100 + t);  // 6 random entries of each tensor
        INFO(ti.name << " worst relative error " << worst);
        CHECK(worst < 1e-6);
    }
}

TEST_CASE("M1 whole-model backward, FBI student: α, β, norms, embedding, head by finite differences; W by F5") {
    GradCase gc(Quant::FBI, 7);
    auto& m = gc.m;
    auto f = [&] { return gc.loss(); };
    // latent W by the STE formula ([F5]): ∂L/∂W_ij = α_j G_ij
    check_latent_grads(gc, [&](const LinearRef& lin, int, int j, double G) { return m.p(lin.scale[0])[j] * G; });
    for (size_t t = 0; t < m.tensors.size(); t++) {
        const TensorInfo& ti = m.tensors[t];
        bool latent = ti.is_matrix && ti.name.find("block") == 0;
        if (latent) continue;
        double worst = worst_fd_error(m, t, gc.analytic, f, 6, 200 + t);
        INFO(ti.name << " worst relative error " << worst << " loss " << f());
        CHECK(worst < 1e-6);
    }
}

TEST_CASE("M2 causality: changing token t never changes logits at positions < t") {
    for (Quant q : {Quant::FP, Quant::FBI, kB158, kDB}) {
        Config c = tiny_config(q);
        auto m = build_model<float>(c, 11);
        const int T = 6;
        auto x = random_tokens(T, c.V, 12);
        model_forward(m, x.data(), 1, T);
        std::vector<float> before = m.acts.logits;
        for (int t = 0; t < T; t++) {
            auto x2 = x;
            x2[t] = (x[t] + 1) % c.V;
            model_forward(m, x2.data(), 1, T);
            for (int i = 0; i < t * c.V; i++) REQUIRE(m.acts.logits[i] == before[i]);
            bool changed = false;
            for (int i = t * c.V; i < (t + 1) * c.V; i++) changed |= m.acts.logits[i] != before[i];
            CHECK(changed);  // and position t itself does see its token
        }
    }
}

TEST_CASE("M3 overfitting one fixed batch drives the loss down at least 10×") {
    Config c = tiny_config(Quant::FP);
    c.C = 32; c.NH = 2; c.F = swiglu_width(32); c.T = 16; c.V = 16;
    auto m = build_model<float>(c, 13);
    const int B = 4, T = 16;
    auto x = random_tokens(B * T, c.V, 14), y = random_tokens(B * T, c.V, 15);
    AdamW opt;
    opt.weight_decay = 0;
    double first = 0, last = 0;
    for (int step = 0; step < 300; step++) {
        model_forward(m, x.data(), B, T);
        auto& a = m.acts;
        zero(a.dlogits);
        last = loss_forward_backward(Loss::CE, a.dlogits.data(), a.probs.data(), a.probs_teacher.data(),
                                     a.logits.data(), (const float*)nullptr, y.data(), B * T, c.V, 1.0);
        if (step == 0) first = last;
        zero_grad(m);
        model_backward(m, x.data());
        clip_grad_norm(m.grads, 1.0);
        adamw_step(m, opt, 3e-3);
    }
    INFO("loss " << first << " -> " << last);
    CHECK(first == doctest::Approx(std::log(16.0)).epsilon(0.05));  // uniform prediction at init
    CHECK(last < first / 10);
}

TEST_CASE("M4 KV-cache decoding gives the same logits as the full forward") {
    for (Quant q : {Quant::FP, Quant::FBI, kB158, kDB}) {
        Config c = tiny_config(q);
        auto m = build_model<float>(c, 16);
        for (float& p : m.params) p *= 10;  // large enough weights that every block (and b1.58's int8 rounding) matters
        auto x = random_tokens(c.T, c.V, 17);
        model_forward(m, x.data(), 1, c.T);
        KVCache cache;
        cache.reset(c.L, c.T, c.C);
        DecodeScratch s;
        s.resize(c);
        std::vector<float> logits(c.V);
        DecodeView d = decode_view(m);
        for (int t = 0; t < c.T; t++) {
            decode_step(d, FloatLinear{&m}, cache, s, x[t], logits.data(), m.rope_cos.data(), m.rope_sin.data());
            for (int v = 0; v < c.V; v++) CHECK(logits[v] == doctest::Approx(m.acts.logits[t * c.V + v]).epsilon(1e-4));
        }
        CHECK_THROWS_WITH(decode_step(d, FloatLinear{&m}, cache, s, x[0], logits.data(), m.rope_cos.data(), m.rope_sin.data()),
                          doctest::Contains("KV cache full"));
    }
}

TEST_CASE("M5 bad input: token id out of range and sequence longer than the context are clear errors") {
    Config c = tiny_config(Quant::FP);
    auto m = build_model<float>(c, 18);
    std::vector<int> x = {1, 2, 7, 3};
    CHECK_THROWS_WITH(model_forward(m, x.data(), 1, 4), doctest::Contains("token id 7 at position 2 is outside the vocabulary [0, 7)"));
    x[2] = -1;
    CHECK_THROWS_WITH(model_forward(m, x.data(), 1, 4), doctest::Contains("token id -1"));
    std::vector<int> long_x(10, 0);
    CHECK_THROWS_WITH(model_forward(m, long_x.data(), 1, 10), doctest::Contains("exceeds the model's context T=6"));
    CHECK_THROWS_WITH(generate(m, std::vector<int>(7, 1), 3, 1.0, 1), doctest::Contains("longer than the context"));
    CHECK_THROWS_WITH(generate(m, std::vector<int>{9}, 3, 1.0, 1), doctest::Contains("outside [0, 7)"));
    Config bad = c;
    bad.NH = 3;
    CHECK_THROWS_WITH(build_model<float>(bad, 1), doctest::Contains("C must be divisible by NH"));
}

TEST_CASE("M6 generation runs past the context with a sliding window and is reproducible") {
    Config c = tiny_config(Quant::FBI);
    auto m = build_model<float>(c, 19);
    auto a = generate(m, {1, 2}, 20, 1.0, 5), b = generate(m, {1, 2}, 20, 1.0, 5);
    CHECK(a.size() == 22);
    CHECK(a == b);
    for (int t : a) CHECK((t >= 0 && t < c.V));
}

TEST_CASE("M9 inference mode: Keep::Logits gives the Keep::All logits bit for bit in one block's buffers; no backward after it") {
    for (Quant q : {Quant::FP, Quant::FBI, kB158, kDB}) {
        CAPTURE(quant_name(q));
        Config c = tiny_config(q);
        const int B = 2, T = 5;
        auto x = random_tokens(B * T, c.V, 31);
        auto kept = build_model<float>(c, 19), light = build_model<float>(c, 19);
        model_forward(kept, x.data(), B, T);
        model_forward(light, x.data(), B, T, Keep::Logits);
        CHECK(light.acts.blocks.size() == 1);
        CHECK(light.acts.resid.size() == 2);
        CHECK(kept.acts.blocks.size() == size_t(c.L));
        REQUIRE(light.acts.logits.size() == kept.acts.logits.size());
        for (size_t i = 0; i < kept.acts.logits.size(); i++) REQUIRE(light.acts.logits[i] == kept.acts.logits[i]);
        zero(light.acts.dlogits);
        CHECK_THROWS_WITH(model_backward(light, x.data()), doctest::Contains("kept only the logits (Keep::Logits)"));
        // A model that kept everything keeps its buffers through an inference-mode forward (an evaluation in the
        // middle of training) and its next Keep::All forward and backward work as before.
        model_forward(kept, x.data(), B, T, Keep::Logits);
        CHECK(kept.acts.blocks.size() == size_t(c.L));
        model_forward(light, x.data(), B, T);  // grows to every block's buffers
        CHECK(light.acts.blocks.size() == size_t(c.L));
        zero(light.acts.dlogits);
        light.acts.dlogits[3] = 1;
        zero_grad(light);
        model_backward(light, x.data());
        double norm = 0;
        for (float g : light.grads) norm += double(g) * g;
        CHECK(norm > 0);
    }
}
