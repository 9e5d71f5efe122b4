// bench_train: throughput of one training step at the tiny config (4 layers, 4 heads, width 128, context 64,
// batch 12), for the FP teacher (CE) and the FBI student (AD, with the teacher's forward), at 1 and 2 threads.
// Reports the median over repeated steps after warm-up, tokens/s and the achieved GFLOP/s.
#include "../bench_util.hpp"
#include "../common.hpp"

using namespace fbi;
using example::median;

// FLOPs of one training step: 6 per weight per token (forward 2, backward 4) for every matmul weight,
// plus attention: QKᵀ and PV are 2·T·T·hs each per head forward (×3 with the backward; causal halves are
// computed in full by the Eigen code, so full T×T is counted).
static double step_flops(const Config& c, int B, int T) {
    double weights = double(c.L) * (4.0 * c.C * c.C + 3.0 * c.C * c.F) + double(c.V) * c.C;
    double attn = double(c.L) * B * c.NH * 2.0 * (2.0 * T * T * (c.C / c.NH));
    return 6.0 * weights * B * T + 3.0 * attn;
}

int main() {
    Config cfg;  // the tiny config; V = 65 as for TinyShakespeare
    const int B = 12, T = 64, warmup = 5, reps = 30;
    std::printf("bench_train | %s | %s | load %s\n", example::cpu_model().c_str(), threading_summary().c_str(),
                example::load_average().c_str());
    std::vector<int> data(100000);
    Rng rng(1);
    for (int& t : data) t = int(rng.below(uint64_t(cfg.V)));
    std::printf("%-28s %7s %10s %11s %9s\n", "run", "threads", "ms/step", "tokens/s", "GFLOP/s");
    for (int threads : {1, 2}) {
#ifdef _OPENMP
        omp_set_num_threads(threads);
#else
        if (threads > 1) break;
#endif
        for (int which = 0; which < 2; which++) {
            bool student = which == 1;
            Config sc = cfg;
            sc.quant = student ? Quant::FBI : Quant::FP;
            Model teacher = build_model<float>(cfg, 1), model = build_model<float>(sc, 2);
            AdamW adam;
            FlipCounter flips;
            TrainOptions o;
            o.loss = student ? Loss::AD : Loss::CE;
            std::vector<double> ms;
            for (int s = 0; s < warmup + reps; s++) {
                double t0 = now_seconds();
                train_step(model, student ? &teacher : nullptr, adam, flips, data, o, s);
                if (s >= warmup) ms.push_back(1e3 * (now_seconds() - t0));
            }
            double med = median(ms), flops = step_flops(cfg, B, T) * (student ? 4.0 / 3.0 : 1.0);
            std::printf("%-28s %7d %10.2f %11.0f %9.1f\n", student ? "FBI student (AD + teacher fwd)" : "FP teacher (CE)",
                        threads, med, B * T / (med * 1e-3), flops / (med * 1e-3) / 1e9);
        }
    }
    return 0;
}
