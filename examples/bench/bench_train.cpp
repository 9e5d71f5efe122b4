// bench_train: throughput of one whole training step (train_step: forward, loss, backward, clipping, AdamW,
// flip count), for the FP teacher (CE) and the FBI student (AD, with the frozen teacher's forward), at 1 and 2
// threads, on three shapes: tiny (what `make train-tiny` trains), small (6 layers, width 192, context 128) and
// wide (width 384). Prints the median over repeated steps after warm-up, tokens/s, GFLOP/s against the FMA peak
// it measures here, where the time goes (StepTimes), the step's linear products timed alone, and, when
// bench_train_torch.py left its CSV, the same steps in PyTorch.
//   usage: bench_train [TORCH_CSV] [SHAPE ...]    SHAPE: tiny small wide (default: all three)
#include <fstream>
#include <map>
#include <sstream>

#include "../bench_util.hpp"
#include "../common.hpp"

using namespace fbi;
using example::median;

struct Shape {
    const char* name;
    Config cfg;
    int B, T;
};
static Shape make_shape(const char* name, int C, int L, int NH, int T, int B) {
    Config c;  // V = 65, TinyShakespeare's characters
    c.C = C, c.L = L, c.NH = NH, c.F = swiglu_width(C), c.T = T;
    return {name, c, B, T};
}

// Weights of every matrix product of the model: per layer q, k, v, o (C×C each) and gate, up, down (C×F), plus the head.
static double linear_weights(const Config& c) {
    return double(c.L) * (4.0 * c.C * c.C + 3.0 * c.C * c.F) + double(c.V) * c.C;
}

// FLOPs of one training step: 6 per weight per token (forward 2, backward 4) for every matmul weight, plus
// attention: QKᵀ and PV are 2·T·T·hs each per head forward (×3 with the backward; the causal half that is zero is
// computed too, so full T×T is counted). The student adds the teacher's forward (2 per weight per token).
static double step_flops(const Config& c, int B, int T, bool student) {
    double weights = linear_weights(c);
    double attn = double(c.L) * B * c.NH * 2.0 * (2.0 * T * T * (c.C / c.NH));
    double one = 6.0 * weights * B * T + 3.0 * attn;
    return student ? one * 4.0 / 3.0 : one;
}

// The machine's fp32 FMA peak per thread: 12 independent chains of fused multiply-adds on the widest vectors the
// build may use (an FMA has a latency of about 4 cycles and 2 issue per cycle, so 8+ chains keep both ports busy).
// Each chain starts from its own value: chains that start equal stay equal, and g++ -O3 then computes ONE chain
// and reuses it twelve times (a latency-bound loop that this formula would count as 1.6× the real peak).
static double fma_peak_gflops(int threads) {
    std::vector<double> per(size_t(std::max(1, threads)), 0.0);
#pragma omp parallel num_threads(threads)
    {
        int id = 0;
#ifdef _OPENMP
        id = omp_get_thread_num();
#endif
        const long iters = 20000000;
        double best = 0;
        for (int rep = 0; rep < 10; rep++) {  // the best of 10: a neighbour on a shared host can steal any one
            double t0 = now_seconds(), lanes = 0;
            float sink = 0;
#if defined(__AVX512F__)
            __m512 acc[12], m = _mm512_set1_ps(0.999999f), a = _mm512_set1_ps(1e-7f);
            for (int j = 0; j < 12; j++) acc[j] = _mm512_set1_ps(1.f + 0.001f * j);
            for (long i = 0; i < iters / 4; i++)
                for (auto& v : acc) v = _mm512_fmadd_ps(v, m, a);
            for (auto& v : acc) sink += _mm512_cvtss_f32(v);
            lanes = 16;
#elif defined(__FMA__)
            __m256 acc[12], m = _mm256_set1_ps(0.999999f), a = _mm256_set1_ps(1e-7f);
            for (int j = 0; j < 12; j++) acc[j] = _mm256_set1_ps(1.f + 0.001f * j);
            for (long i = 0; i < iters / 4; i++)
                for (auto& v : acc) v = _mm256_fmadd_ps(v, m, a);
            for (auto& v : acc) sink += _mm256_cvtss_f32(v);
            lanes = 8;
#else
            float acc[12];
            for (int j = 0; j < 12; j++) acc[j] = 1.f + 0.001f * j;
            for (long i = 0; i < iters / 4; i++)
                for (float& v : acc) v = std::fma(v, 0.999999f, 1e-7f);
            for (float v : acc) sink += v;
            lanes = 1;
#endif
            double dt = now_seconds() - t0;
            if (sink == 12345.f) std::printf(" ");  // keeps the chains alive
            best = std::max(best, 2.0 * lanes * 12 * double(iters / 4) / dt / 1e9);
        }
        per[size_t(id)] = best;
    }
    double total = 0;
    for (double g : per) total += g;
    return total;
}

// The step's linear products alone: matmul_forward and matmul_backward at the shape of every linear (the LM head
// too), the student's adding the teacher's forward ones, on buffers the size of the step's. No element-wise work
// can take a step below this, so step − products is all that fused passes, threads and the like can win.
static double products_ms(const Shape& sh, bool student, int reps) {
    const Config& c = sh.cfg;
    const int N = sh.B * sh.T;
    std::vector<std::array<int, 2>> lin;  // (n in, m out) of every product a forward makes
    for (int l = 0; l < c.L; l++)
        for (int id = 0; id < N_LINEAR; id++) {
            int m, n;
            linear_shape(c, id, m, n);
            lin.push_back({n, m});
        }
    lin.push_back({c.C, c.V});
    size_t widest = size_t(std::max({c.C, c.F, c.V}));
    std::vector<float> in(N * widest), out(N * widest), din(N * widest), W(widest * widest), dW(widest * widest);
    for (size_t i = 0; i < in.size(); i++) in[i] = out[i] = float((i % 97) * 0.01 - 0.5);
    for (size_t i = 0; i < W.size(); i++) W[i] = float((i % 89) * 0.001 - 0.04);
    std::vector<double> ms;
    for (int r = 0; r < reps + 2; r++) {
        double t0 = now_seconds();
        for (int pass = 0; pass < (student ? 2 : 1); pass++)  // the forward (and the teacher's)
            for (auto [n, m] : lin) matmul_forward(out.data(), in.data(), W.data(), N, n, m);
        for (auto [n, m] : lin) matmul_backward(din.data(), dW.data(), out.data(), in.data(), W.data(), N, n, m);
        if (r >= 2) ms.push_back(1e3 * (now_seconds() - t0));
    }
    return median(ms);
}

// PyTorch's figures from bench_train_torch.py's CSV: (shape, run, threads) → tokens/s.
static std::map<std::string, double> read_torch(const std::string& path) {
    std::map<std::string, double> out;
    std::ifstream f(path);
    std::string line;
    std::getline(f, line);  // header
    while (std::getline(f, line)) {
        std::stringstream ss(line);
        std::string shape, run, threads, ms, tps;
        if (std::getline(ss, shape, ',') && std::getline(ss, run, ',') && std::getline(ss, threads, ',') &&
            std::getline(ss, ms, ',') && std::getline(ss, tps))
            out[shape + "," + run + "," + threads] = std::atof(tps.c_str());
    }
    return out;
}

// Before timing: instrumenting a step with StepTimes changes nothing, and the losses are finite.
static void verify(const Shape& sh, const std::vector<int>& data) {
    for (bool student : {false, true}) {
        Config sc = sh.cfg;
        sc.quant = student ? Quant::FBI : Quant::FP;
        Model teacher = build_model<float>(sh.cfg, 1), a = build_model<float>(sc, 2), b = a;
        AdamW oa, ob;
        FlipCounter fa, fb;
        TrainOptions o;
        o.B = sh.B, o.T = sh.T, o.loss = student ? Loss::AD : Loss::CE;
        StepTimes times;
        for (long s = 0; s < 2; s++) {
            double la = train_step(a, student ? &teacher : nullptr, oa, fa, data, o, s).loss;
            double lb = train_step(b, student ? &teacher : nullptr, ob, fb, data, o, s, &times).loss;
            if (!std::isfinite(la) || la != lb || a.params != b.params) {
                std::fprintf(stderr, "bench_train: verification failed at shape %s (%s), step %ld: %.17g %.17g\n", sh.name,
                             student ? "student" : "teacher", s + 1, la, lb);
                std::exit(1);
            }
        }
    }
}

static void run_shape(const Shape& sh, const std::vector<int>& data, const std::map<std::string, double>& torch,
                      const double peak[3]) {
    const int warmup = 5, reps = sh.cfg.C >= 384 || sh.T >= 128 ? 15 : 30;
    verify(sh, data);
    std::printf("\n%s: %s, B=%d T=%d (%d tokens/step); verified: StepTimes leaves the step unchanged, losses finite\n",
                sh.name, describe(sh.cfg).c_str(), sh.B, sh.T, sh.B * sh.T);
    std::printf("%-31s %3s %9s %9s %8s %6s %9s %8s | %s\n", "run", "thr", "ms/step", "tokens/s", "GFLOP/s", "%peak",
                "PyTorch", "vs PyT", "where the time goes, ms/step: batch fwd teacher loss bwd clip adamw flips"
                " | linear products alone: ms, GFLOP/s");
    for (int threads : {1, 2}) {
#ifdef _OPENMP
        omp_set_num_threads(threads);
#else
        if (threads > 1) break;
#endif
        for (bool student : {false, true}) {
            Config sc = sh.cfg;
            sc.quant = student ? Quant::FBI : Quant::FP;
            Model teacher = build_model<float>(sh.cfg, 1), model = build_model<float>(sc, 2);
            AdamW adam;
            FlipCounter flips;
            TrainOptions o;
            o.B = sh.B, o.T = sh.T, o.loss = student ? Loss::AD : Loss::CE;
            std::vector<double> ms;
            StepTimes times;
            for (int s = 0; s < warmup + reps; s++) {
                StepTimes one;
                double t0 = now_seconds();
                train_step(model, student ? &teacher : nullptr, adam, flips, data, o, s, &one);
                if (s < warmup) continue;
                ms.push_back(1e3 * (now_seconds() - t0));
                for (double StepTimes::*f : {&StepTimes::batch, &StepTimes::forward, &StepTimes::teacher, &StepTimes::loss,
                                             &StepTimes::backward, &StepTimes::clip, &StepTimes::optimizer, &StepTimes::flips})
                    times.*f += one.*f;
            }
            double med = median(ms), tps = sh.B * sh.T / (med * 1e-3);
            double gflops = step_flops(sh.cfg, sh.B, sh.T, student) / (med * 1e-3) / 1e9;
            auto it = torch.find(std::string(sh.name) + "," + (student ? "student" : "teacher") + "," + std::to_string(threads));
            char pyt[32] = "-", ratio[32] = "-";
            if (it != torch.end()) {
                std::snprintf(pyt, sizeof pyt, "%.0f", it->second);
                std::snprintf(ratio, sizeof ratio, "%.2fx", tps / it->second);
            }
            auto per = [&](double v) { return 1e3 * v / reps; };
            double prod = products_ms(sh, student, reps);
            double prod_flops = (student ? 8.0 : 6.0) * sh.B * sh.T * linear_weights(sh.cfg);
            std::printf("%-31s %3d %9.2f %9.0f %8.1f %5.0f%% %9s %8s | %5.1f %5.1f %5.1f %5.1f %5.1f %5.1f %5.1f %5.1f"
                        " | %6.2f %6.1f\n",
                        student ? "FBI student (AD + teacher fwd)" : "FP teacher (CE)", threads, med, tps, gflops,
                        100 * gflops / peak[threads], pyt, ratio, per(times.batch), per(times.forward),
                        per(times.teacher), per(times.loss), per(times.backward), per(times.clip),
                        per(times.optimizer), per(times.flips), prod, prod_flops / (prod * 1e-3) / 1e9);
            std::fflush(stdout);
        }
    }
}

int main(int argc, char** argv) {
    std::string torch_csv = argc > 1 ? argv[1] : "";
    std::vector<std::string> want;
    for (int i = 2; i < argc; i++) want.push_back(argv[i]);
    std::vector<Shape> shapes = {make_shape("tiny", 128, 4, 4, 64, 12), make_shape("small", 192, 6, 6, 128, 16),
                                 make_shape("wide", 384, 4, 6, 64, 12)};
    for (const std::string& w : want)
        if (std::none_of(shapes.begin(), shapes.end(), [&](const Shape& s) { return w == s.name; })) {
            std::fprintf(stderr, "bench_train: unknown shape '%s' (tiny, small, wide)\n", w.c_str());
            return 2;
        }
    std::map<std::string, double> torch = torch_csv.empty() ? std::map<std::string, double>{} : read_torch(torch_csv);
    double peak[3] = {0, fma_peak_gflops(1), fma_peak_gflops(2)};
    std::printf("bench_train | %s | SIMD %s| %s | %s | load %s\n", example::cpu_model().c_str(), example::simd_flags().c_str(),
                threading_summary().c_str(), products_summary().c_str(), example::load_average().c_str());
    std::printf("FMA peak (12 independent fp32 FMA chains): %.1f GFLOP/s on 1 thread, %.1f on 2\n", peak[1], peak[2]);
    std::printf("PyTorch  : %s\n", torch.empty() ? "no figures (make bench-train runs bench_train_torch.py when python3-torch is there)"
                                                 : ("from " + torch_csv + ", measured just before").c_str());
    std::vector<int> data(100000);
    Rng rng(1);
    for (int& t : data) t = int(rng.below(65));
    for (const Shape& sh : shapes)
        if (want.empty() || std::find(want.begin(), want.end(), sh.name) != want.end()) run_shape(sh, data, torch, peak);
    return 0;
}
