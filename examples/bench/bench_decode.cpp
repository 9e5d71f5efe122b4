// bench_decode.cpp — end-to-end generation speed of an FBI-LLM-130M-shaped model, fp32 vs bit-packed ([S7]).
// Run:   ./bench_decode [out.csv] [max_threads] [quick]   (defaults: build/bench_decode.csv, 2; runs 1 .. max_threads)
//        `quick`: 32 tokens and fewer repetitions (≈ 20 s instead of ≈ 1 min; used by notebooks/03_inference.ipynb)
//
// The model is randomly initialised ([M0] init, [F4] α/β) with the FBI-LLM-130M shape: V=32000, C=768, L=12,
// NH=12, F=2048, T=256. Speed does not depend on what the weights are, only on their shapes and storage.
// Three decoders, each one token at a time with a KV cache (fbi::decode_step):
//   fp32      FloatLinear over the dequantized Ŵ = α·sign(W) + β of every block linear (4 bytes per weight)
//   popcount  PackedLinearFn, Kernel::Popcount (sign bits + int8 activation bit planes)
//   fast      PackedLinearFn, Kernel::Fast     (table lookup; AVX2 if the build has it)
// All three keep the embedding, the norms and the 32000×768 LM head in fp32 ([M1], [F2]).
//
// Verified first (the program aborts otherwise):
//   * popcount and fast give bit-identical logits (the integer sums are exact in both kernels);
//   * packed logits agree with fp32 logits within the int8-activation tolerance (max |Δ| < 5% of max |logit|,
//     the same bound as the test "P2"): the per-token int8 rounding of α⊙x is the only approximation.
// Timed: a prompt of 8 tokens (not timed), then 64 (quick: 32) greedy tokens, each decode_step timed; ms/token is the
// mean over the 64 tokens of one repetition, and we report the median over the repetitions.
// Where the packed time goes, measured separately:
//   stub          decode_step with linears that only write zeros: embedding, norms, RoPE, attention, LM head
//   lm_head_fp32  the 32000×768 fp32 GEMV alone, as decode_step runs it (fbi::matvec: Eigen GEMV, rows split
//                 over the threads; 98 MB read per token)
//   lm_head_packed_est  the same head packed to 1 bit and run with the fast kernel (a what-if: the model keeps
//                 its fp32 head; binarizing it would change the model) → "fast, head packed (est.)"
//                 = fast − lm_head_fp32 + lm_head_packed_est
// Both decoders use the same threads: the fp32 GEMVs (fbi::matvec) and the packed kernels split their rows over
// OpenMP threads above about a million weights, so "vs fp32" compares like with like at each thread count.
// Breakdown of the fast decoder: block linears = fast − stub, LM head = lm_head_fp32, rest = stub − lm_head_fp32.
// Sizes are printed for α, β stored as fp32 (exact) and as 16-level codebooks (pack_model(..., 4)); the
// codebook model is verified like the other (its decode speed is the same: the kernels see float α, β either way).
// In the CSV, speedup_vs_fp32 is (fp32 decoder ms/token) / (this row's ms) for every row, parts included.
// Two-thread timings need a second idle core: with other jobs running, every OpenMP barrier (≈ 60 per token)
// waits for a time slice and the packed decoders get many times slower than with one thread.
// CSV (appended; header written when the file is new): model,threads,kernel,ms_per_token,tokens_per_s,speedup_vs_fp32
#include <Eigen/Dense>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "../bench_util.hpp"
#include "../common.hpp"

using namespace fbi;
using example::cpu_model;
using example::load_average;
using example::median;

namespace {


void set_threads(int t) {
#ifdef _OPENMP
    omp_set_num_threads(t);
#else
    (void)t;
#endif
}

const std::vector<int> kPrompt = {1, 17, 4242, 31999, 7, 123, 9000, 2};  // any ids in [0, V)
int kNewTokens = 64;  // 32 with `quick`

// Decode the prompt, then kNewTokens greedy tokens; returns ms per generated token for each repetition.
template <class LinearFn>
std::vector<double> time_decode(const DecodeView& d, LinearFn&& linear, const float* rc, const float* rs, int reps) {
    const Config& c = d.cfg;
    KVCache cache;
    DecodeScratch s;
    s.resize(c);
    std::vector<float> logits(c.V);
    std::vector<double> ms;
    for (int r = 0; r < reps; r++) {
        cache.reset(c.L, c.T, c.C);
        for (int tok : kPrompt) decode_step(d, linear, cache, s, tok, logits.data(), rc, rs);
        double t0 = now_seconds();
        for (int i = 0; i < kNewTokens; i++) {
            int next = int(std::max_element(logits.begin(), logits.end()) - logits.begin());
            decode_step(d, linear, cache, s, next, logits.data(), rc, rs);
        }
        ms.push_back(1e3 * (now_seconds() - t0) / kNewTokens);
    }
    return ms;
}

// Logits of the first `n` prompt tokens, concatenated.
template <class LinearFn>
std::vector<float> first_logits(const DecodeView& d, LinearFn&& linear, const float* rc, const float* rs, int n) {
    KVCache cache;
    cache.reset(d.cfg.L, d.cfg.T, d.cfg.C);
    DecodeScratch s;
    s.resize(d.cfg);
    std::vector<float> logits(d.cfg.V), out;
    for (int i = 0; i < n; i++) {
        decode_step(d, linear, cache, s, kPrompt[i], logits.data(), rc, rs);
        out.insert(out.end(), logits.begin(), logits.end());
    }
    return out;
}

// Median wall time of f in ms.
double time_ms(const std::function<void()>& f, int reps) {
    f();
    std::vector<double> t;
    for (int r = 0; r < reps; r++) {
        double t0 = now_seconds();
        f();
        t.push_back(1e3 * (now_seconds() - t0));
    }
    return median(t);
}

volatile float g_sink;

}  // namespace

int main(int argc, char** argv) try {
    const std::string csv_path = argc > 1 ? argv[1] : "build/bench_decode.csv";
    example::check_thread_env();
    int max_threads = int(example::positional(argc, argv, 2, "max threads", 2, 1, 1024));
    if (argc > 3 && std::string(argv[3]) != "quick")
        throw std::invalid_argument("argument 3 must be 'quick' or absent, got '" + std::string(argv[3]) + "'");
    const bool quick = argc > 3;
    if (quick) kNewTokens = 32;
    const int reps_fp32 = quick ? 1 : 3, reps_packed = quick ? 3 : 5;
#ifndef _OPENMP
    max_threads = 1;
#endif
    std::printf("machine : %s\n", cpu_model().c_str());
#ifdef _OPENMP
    std::printf("OpenMP  : on (max %d threads); rows split over the threads above %ld weights (fp32 GEMV, fbi::matvec) "
                "and %ld weights (packed kernels)\n", omp_get_max_threads(), 16 * kParallelMinWork, kParallelMinWeights);
#else
    std::printf("OpenMP  : off (1 thread only)\n");
#endif
#if defined(__AVX2__)
    std::printf("SIMD    : AVX2 yes → Kernel::Fast = gemv_tl_avx2\n");
#else
    std::printf("SIMD    : AVX2 no → Kernel::Fast = gemv_tl (portable)\n");
#endif
    std::printf("load    : %s (timings are unreliable when other jobs run)\n", load_average().c_str());

    Config cfg;
    cfg.V = 32000; cfg.C = 768; cfg.L = 12; cfg.NH = 12; cfg.F = 2048; cfg.T = 256; cfg.quant = Quant::FBI;
    std::printf("model   : FBI-LLM-130M shape, %s, random init\n", describe(cfg).c_str());
    double t0 = now_seconds();
    Model model = build_model<float>(cfg, 1234);
    quantize_all(model);  // Ŵ = α·sign(W) + β for FloatLinear
    PackedModel pm = pack_model(model, "");
    PackedModel pm4 = pack_model(model, "", 4);  // α, β through 16-level codebooks
    std::printf("built   : float model + packed models in %.1f s\n", now_seconds() - t0);

    // ---- sizes ----
    double block_weights = 0, packed_block_bytes = 0;
    for (const auto& block : pm.lin)
        for (const PackedLinear& p : block) {
            block_weights += double(p.m) * p.n;
            packed_block_bytes += 8.0 * p.mask[0].bits.size() + double(scale_bytes(p.scale[0].size(), pm.scale_bits) +
                                                                      scale_bytes(p.scale[1].size(), pm.scale_bits));
        }
    const double fp32_other = 4.0 * (2.0 * cfg.V * cfg.C + (2.0 * cfg.L + 1) * cfg.C);  // emb, head, norms
    const double fp32_bytes = fp32_other + 4.0 * block_weights;
    const double packed_bytes = double(packed_model_bytes(pm).size());
    std::printf("sizes   : fp32 model %.1f MB (block linears %.1f MB) | packed file %.1f MB (block linears %.1f MB, "
                "%.3f bits/weight) → %.1f× smaller overall, %.1f× for the block linears\n",
                fp32_bytes / 1e6, 4.0 * block_weights / 1e6, packed_bytes / 1e6, packed_block_bytes / 1e6,
                packed_bits_per_weight(pm), fp32_bytes / packed_bytes, 4.0 * block_weights / packed_block_bytes);
    std::printf("          fp32 embedding + LM head: %.1f MB of the packed file (%.0f%%)\n", fp32_other / 1e6,
                100.0 * fp32_other / packed_bytes);
    std::printf("          α, β as 16-level codebooks (4-bit codes): packed file %.1f MB, %.4f bits/weight (fp32 α, β: "
                "%.4f)\n\n", double(packed_model_bytes(pm4).size()) / 1e6, packed_bits_per_weight(pm4),
                packed_bits_per_weight(pm));

    const DecodeView dv_fp = decode_view(model), dv_pk = decode_view(pm);
    const float *rc = pm.rope_cos.data(), *rs = pm.rope_sin.data();
    FloatLinear fp32_fn{&model};
    PackedLinearFn pop_fn(&pm, Kernel::Popcount), fast_fn(&pm, Kernel::Fast);
    auto stub_fn = [&](int l, int id, const float*, float* y) { std::fill(y, y + pm.lin[l][id].m, 0.0f); };

    // ---- verify ----
    set_threads(1);
    {
        const int n = 4;
        auto lf = first_logits(dv_fp, fp32_fn, rc, rs, n);
        auto lp = first_logits(dv_pk, pop_fn, rc, rs, n);
        auto lt = first_logits(dv_pk, fast_fn, rc, rs, n);
        auto l4 = first_logits(decode_view(pm4), PackedLinearFn(&pm4, Kernel::Fast), rc, rs, n);
        if (std::memcmp(lp.data(), lt.data(), 4 * lp.size()) != 0) {
            std::fprintf(stderr, "MISMATCH: popcount and fast logits differ (they must be bit-identical)\n");
            return 1;
        }
        double worst = 0, worst4 = 0, scale = 0;
        for (size_t i = 0; i < lf.size(); i++) {
            worst = std::max(worst, double(std::fabs(lp[i] - lf[i])));
            worst4 = std::max(worst4, double(std::fabs(l4[i] - lf[i])));
            scale = std::max(scale, double(std::fabs(lf[i])));
        }
        std::printf("verify  : popcount == fast bit for bit over %d tokens × %d logits ✓; packed vs fp32 max|Δlogit| "
                    "= %.3g (max|logit| %.3g, %.2f%%; with codebook α, β %.2f%%; bound 5%%)", n, cfg.V, worst, scale,
                    100 * worst / scale, 100 * worst4 / scale);
        if (!(worst < 0.05 * scale) || !(worst > 0) || !(worst4 < 0.05 * scale)) {
            std::fprintf(stderr, "\nMISMATCH: packed logits are not within the int8-activation tolerance of fp32\n");
            return 1;
        }
        std::printf(" ✓\n\n");
    }

    // ---- time ----
    std::FILE* probe = std::fopen(csv_path.c_str(), "r");
    const bool fresh = !probe || std::fgetc(probe) == EOF;
    if (probe) std::fclose(probe);
    std::FILE* csv = std::fopen(csv_path.c_str(), "a");
    if (!csv) {
        std::perror(csv_path.c_str());
        return 1;
    }
    if (fresh) std::fprintf(csv, "model,threads,kernel,ms_per_token,tokens_per_s,speedup_vs_fp32\n");
    const char* model_name = "fbi-130m";

    // A 1-bit copy of the head, for the what-if only (the decoders above never use it).
    const PackedTL head_tl = pack_tl(pack_signs(pm.lm_head.data(), cfg.V, cfg.C));
    std::vector<float> xh(cfg.C), yh(cfg.V);
    {
        Rng rng(7);
        for (float& v : xh) v = float(rng.normal());
    }
    std::vector<int8_t> qh(cfg.C);
    std::vector<int32_t> acc(cfg.V);

    std::printf("%3s  %-26s %10s %9s %10s   %s\n", "thr", "decoder", "ms/token", "tokens/s", "vs fp32", "(per-rep ms/token)");
    for (int threads = 1; threads <= max_threads; threads++) {
        set_threads(threads);
        double fp32_ms = 0;
        auto row = [&](const char* kernel, double ms, const std::vector<double>& reps) {
            if (std::string(kernel) == "fp32") fp32_ms = ms;
            std::string detail;
            for (double r : reps) detail += (detail.empty() ? "" : " ") + std::to_string(r).substr(0, 6);
            std::printf("%3d  %-26s %10.2f %9.1f %9.2f×   %s\n", threads, kernel, ms, 1e3 / ms, fp32_ms / ms,
                        detail.c_str());
            std::fprintf(csv, "%s,%d,%s,%.4f,%.2f,%.3f\n", model_name, threads, kernel, ms, 1e3 / ms, fp32_ms / ms);
            std::fflush(stdout);
            std::fflush(csv);
        };
        auto full = [&](const char* name, auto&& fn, const DecodeView& d, int reps) {
            auto r = time_decode(d, fn, rc, rs, reps);
            row(name, median(r), r);
            return median(r);
        };
        full("fp32", fp32_fn, dv_fp, reps_fp32);
        full("popcount", pop_fn, dv_pk, reps_packed);
        const double fast_ms = full("fast", fast_fn, dv_pk, reps_packed);
        const double stub_ms = full("stub", stub_fn, dv_pk, reps_packed);  // everything but the block linears
        const double head_ms = time_ms(
            [&] {
                matvec(yh.data(), pm.lm_head.data(), xh.data(), cfg.V, cfg.C);
                g_sink = yh[0];
            },
            21);
        row("lm_head_fp32", head_ms, {});
        const double head_packed_ms = time_ms(
            [&] {
                float s = quantize_int8_absmax(xh.data(), cfg.C, qh.data());
                gemv_tl_fast(head_tl, make_act_tables(qh.data(), cfg.C), acc.data());
                g_sink = float(acc[0]) / s;
            },
            51);
        row("lm_head_packed_est", head_packed_ms, {});
        row("fast_head_packed_est", fast_ms - head_ms + head_packed_ms, {});
        std::printf("     where the fast packed decoder's %.2f ms/token go: block linears %.2f ms (fast − stub), fp32 LM "
                    "head %.2f ms, the rest (embedding, norms, RoPE, attention) %.2f ms (stub − head)\n",
                    fast_ms, fast_ms - stub_ms, head_ms, stub_ms - head_ms);
        std::printf("\n");
    }
    std::fclose(csv);
    std::printf("load    : %s\n", load_average().c_str());
    std::printf("wrote   %s (appended)\n", csv_path.c_str());
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
}
