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
        std::string path = "build/test_resume.ckpt";
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
