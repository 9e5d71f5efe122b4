// §7 training: NaN/inf stops before the update; resuming from a checkpoint reproduces the uninterrupted run.
#include "testing.hpp"

using namespace fbi;
using namespace fbi_test;

namespace {
std::vector<int> token_stream(size_t n, int V) { return random_tokens(n, V, 3); }
TrainOptions small_options() {
    TrainOptions o;
    o.B = 3; o.T = 8; o.schedule.warmup = 2; o.schedule.total = 10; o.schedule.peak = 1e-2; o.schedule.floor = 1e-3;
    return o;
}
}  // namespace

TEST_CASE("T1 a NaN in training stops with a clear error before the update; the parameters are untouched") {
    Model m = build_model<float>(small_config(Quant::FBI), 1);
    auto data = token_stream(500, 11);
    AdamW opt;
    FlipCounter flips;
    m.p(m.lm_head)[5] = std::numeric_limits<float>::quiet_NaN();
    std::vector<float> before = m.params;
    CHECK_THROWS_AS(train_step(m, (Model*)nullptr, opt, flips, data, small_options(), 0), const NonFiniteError&);
    CHECK_THROWS_WITH(train_step(m, (Model*)nullptr, opt, flips, data, small_options(), 0),
                      doctest::Contains("non-finite loss at step 1"));
    CHECK(std::memcmp(before.data(), m.params.data(), 4 * before.size()) == 0);
    CHECK(opt.t == 0);
}

TEST_CASE("T2 resume: stopping after step k and resuming from the checkpoint reproduces the same losses exactly") {
    for (Quant q : {Quant::FP, Quant::FBI}) {
        auto data = token_stream(2000, 11);
        Model teacher = build_model<float>(small_config(Quant::FP), 9);
        TrainOptions o = small_options();
        o.loss = q == Quant::FBI ? Loss::AD : Loss::CE;
        Model* t = q == Quant::FBI ? &teacher : nullptr;
        // uninterrupted: 8 steps
        Model a = build_model<float>(small_config(q), 5);
        AdamW opt_a;
        FlipCounter fa;
        std::vector<double> losses;
        for (long s = 0; s < 8; s++) losses.push_back(train_step(a, t, opt_a, fa, data, o, s).loss);
        // interrupted after 3 steps, saved, loaded, resumed for 5 more
        Model b = build_model<float>(small_config(q), 5);
        AdamW opt_b;
        FlipCounter fb;
        for (long s = 0; s < 3; s++) train_step(b, t, opt_b, fb, data, o, s);
        std::string path = test_file("test_resume.ckpt");
        save_checkpoint(path, make_checkpoint(b, "v", 3, &opt_b));
        Checkpoint ck = load_checkpoint(path);
        Model c = model_from_checkpoint(ck);
        AdamW opt_c = ck.opt;
        FlipCounter fc;
        for (long s = ck.step; s < 8; s++) CHECK(train_step(c, t, opt_c, fc, data, o, s).loss == losses[size_t(s)]);
        CHECK(c.params == a.params);
        std::remove(path.c_str());
    }
}

// train_tiny refuses a config that cannot fit before allocating it: its estimate (examples/common.hpp,
// model_floats) must count exactly the floats a model holds after ensure_activations.
#include "../examples/common.hpp"
namespace {
template <class V> double floats_in(const std::vector<V>& v) { return double(v.size()); }
double activation_floats(const Activations<float>& a) {
    double n = 0;
    for (const auto& r : a.resid) n += floats_in(r);
    for (const BlockActs<float>& s : a.blocks)
        for (const auto* v : {&s.rstd1, &s.ln1, &s.q, &s.k, &s.v, &s.att, &s.atty, &s.h, &s.rstd2, &s.ln2, &s.gate, &s.up,
                              &s.sig, &s.act, &s.ln1q, &s.attyq, &s.ln2q, &s.actq})
            n += floats_in(*v);
    for (const auto* v : {&a.lnf, &a.rstdf, &a.logits, &a.probs, &a.probs_teacher, &a.dresid, &a.dln, &a.dq, &a.dk, &a.dv,
                          &a.datty, &a.dact, &a.dgate, &a.dup, &a.dlogits})
        n += floats_in(*v);
    return n;
}
}  // namespace

TEST_CASE("T3 the memory estimate counts every float of a model and its activations (FP, FBI, b1.58, DB)") {
    for (Quant q : {Quant::FP, Quant::FBI, kB158, kDB}) {
        Config c = small_config(q);
        c.T = 12;
        Model m = build_model<float>(c, 1);
        const int B = 3, T = 12;
        ensure_activations(m, B, T);
        example::ModelFloats f = example::model_floats(c, B, T);
        CAPTURE(quant_name(q));
        CHECK(f.params == floats_in(m.params));
        CHECK(f.weights == floats_in(m.grads) + floats_in(m.w_eff) + floats_in(m.dw_eff) + floats_in(m.rope_cos) +
                               floats_in(m.rope_sin));
        CHECK(f.activations == activation_floats(m.acts));
        CHECK(f.activations > 0);
    }
}
