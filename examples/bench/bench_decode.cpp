// bench_decode.cpp — decode and prefill at the FBI-LLM release shapes: fp32 against bit-packed ([S7]), with the
// embedding E and LM head H in fp32, fp16 ([H1]) or int8 ([H2]).
// Run:   ./bench_decode [out.csv] [max_threads] [quick|full] [130m|1.3b]
//        (defaults: build/bench_decode.csv, 2, full, 130m; threads 1 .. max_threads). `quick`: fewer tokens and
//        repetitions (notebooks/03_inference.ipynb). `make bench` runs 130m and 1.3b.
//
// The model is randomly initialised ([M0], [F4]) with a release shape; speed depends only on shapes and storage.
//   130m: V=32000, C=768,  L=12, NH=12, F=2048 · 1.3b: V=32000, C=2048, L=24, NH=32, F=5632 · context T=2048
// Decoders, one token at a time with a KV cache (fbi::decode_step):
//   fp32             FloatLinear over the dequantized Ŵ = α·sign(W) + β (4 bytes per weight), fp32 E and H
//   packed H=fp32    PackedLinearFn, Kernel::Fast (the table-lookup kernel), E and H fp32
//   packed H=fp16    the same linears, E and H in fp16: what a packed file holds by default (the official
//                    evaluation casts every parameter to float16)
//   packed H=int8    the same linears, E and H int8 with one scale per row
// Parts, timed alone: stub = decode_step with linears that only write zeros (E, norms, RoPE, attention, H);
// head = the LM head GEMV alone (fbi::rows_gemv). Block linears = packed − stub; the rest = stub − head.
// Bound: the bytes a token must read (the 1-bit linears' layout, H, one row of E, the KV cache so far) over the
// read bandwidth measured in this process (a streaming sum, same thread count, best of 1 and 8 streams a thread): no decoder can beat it.
// Prefill (fbi::prefill, logits of the last row only): FloatRows (Eigen GEMM on Ŵ) against PackedRows (the 1-bit
// kernels row by row, the threads splitting the tokens), H fp16 for the packed one.
//
// Verified first (the program stops otherwise):
//   * popcount and fast give bit-identical logits (the integer sums are exact in both kernels);
//   * every packed variant's logits agree with fp32 logits: ‖Δ‖₂ / ‖logits‖₂ < 10%. The int8 activations of [P1]
//     are the main approximation: on these random-init models they move the logits by ≈ 2.7% (12 layers) to ≈ 4.7%
//     (24 layers), fp16 / int8 E and H add a little (the head's own cost is printed: "LM head alone"); a broken
//     kernel gives ~100%. (The kernels themselves are tested exactly in make test.)
//   * packed prefill logits equal packed decode logits within the int8 tolerance, fp32 prefill = fp32 decode.
// Timed: after a prompt of 8 tokens, N greedy tokens, each decode_step; ms/token is the mean of one repetition, and
// we report the median over repetitions. Two-thread timings need a second idle core.
// CSV (appended; header written when the file is new):
//   model,threads,row,ms_per_token,tokens_per_s,speedup_vs_fp32,bound_ms
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
double status_mib(const char* key) {  // VmRSS:, VmHWM: from /proc/self/status
    std::ifstream f("/proc/self/status");
    std::string line;
    while (std::getline(f, line))
        if (line.rfind(key, 0) == 0) return std::atof(line.c_str() + std::strlen(key)) / 1024.0;
    return 0;
}

const std::vector<int> kPrompt = {1, 17, 4242, 31999, 7, 123, 9000, 2};  // any ids in [0, V)

// Decode the prompt, then n_new greedy tokens; ms per generated token for each repetition.
template <class LinearFn>
std::vector<double> time_decode(const DecodeView& d, LinearFn&& linear, const float* rc, const float* rs, int reps,
                                int n_new) {
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
        for (int i = 0; i < n_new; i++) {
            int next = int(std::max_element(logits.begin(), logits.end()) - logits.begin());
            decode_step(d, linear, cache, s, next, logits.data(), rc, rs);
        }
        ms.push_back(1e3 * (now_seconds() - t0) / n_new);
    }
    return ms;
}
// Logits of the first n prompt tokens, concatenated.
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
// The last row's logits after a prefill of `n` tokens; seconds in *sec.
template <class RowsFn>
std::vector<float> prefill_logits(const DecodeView& d, RowsFn&& rows, const float* rc, const float* rs, int n, double* sec) {
    std::vector<int> toks(n);
    for (int i = 0; i < n; i++) toks[i] = i < int(kPrompt.size()) ? kPrompt[i] : int((1 + 7919L * i) % d.cfg.V);
    KVCache cache;
    cache.reset(d.cfg.L, d.cfg.T, d.cfg.C);
    PrefillScratch s;
    std::vector<float> logits(d.cfg.V);
    double t0 = now_seconds();
    prefill(d, rows, cache, s, toks.data(), n, logits.data(), 1, rc, rs);
    *sec = now_seconds() - t0;
    return logits;
}
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
// Streaming read bandwidth (GB/s) of the current thread count over 512 MB, the threads splitting it. One core
// reads faster with many cache-line misses in flight, so each thread sums 8 far-apart streams of its part at once
// (a single Eigen sum gets about two thirds of this on the Xeon we measured); we report the faster of the two.
float stream_sum(const float* p, size_t n) {
    using Lane = Eigen::Array<float, 16, 1>;
    constexpr int S = 8;
    const size_t seg = n / S / 16 * 16;
    Lane acc[S];
    for (Lane& a : acc) a.setZero();
    for (size_t i = 0; i < seg; i += 16)
        for (int s = 0; s < S; s++) acc[s] += Eigen::Map<const Lane>(p + s * seg + i);
    float total = 0;
    for (const Lane& a : acc) total += a.sum();
    return total;
}
double read_bandwidth(const std::vector<float>& big) {
    volatile float sink = 0;
    const int rows = 1024;
    const long cols = long(big.size() / rows);
    double best_ms = 1e30;
    for (bool streams : {false, true}) {
        double ms = time_ms(
            [&] {
                std::vector<float> part(rows);
                for_row_blocks(rows, 1L << 30, [&](int r0, int r1) {
                    if (streams) part[r0] = stream_sum(big.data() + r0 * cols, size_t(r1 - r0) * cols);
                    else
                        for (int r = r0; r < r1; r++) part[r] = Eigen::Map<const Eigen::VectorXf>(big.data() + r * cols, cols).sum();
                });
                sink = part[0];
            },
            5);
        best_ms = std::min(best_ms, ms);
    }
    (void)sink;
    return 4.0 * double(big.size()) / (best_ms * 1e-3) / 1e9;
}
struct MaxRel { double worst = 0, scale = 0, rms = 0; };  // max |Δ|, max |ref|, ‖Δ‖₂ / ‖ref‖₂
MaxRel compare(const std::vector<float>& a, const std::vector<float>& ref) {
    MaxRel m;
    double d2 = 0, r2 = 0;
    for (size_t i = 0; i < a.size(); i++) {
        m.worst = std::max(m.worst, double(std::fabs(a[i] - ref[i])));
        m.scale = std::max(m.scale, double(std::fabs(ref[i])));
        d2 += double(a[i] - ref[i]) * (a[i] - ref[i]), r2 += double(ref[i]) * ref[i];
    }
    m.rms = std::sqrt(d2 / r2);
    return m;
}

}  // namespace

int main(int argc, char** argv) try {
    const std::string csv_path = argc > 1 ? argv[1] : "build/bench_decode.csv";
    example::check_thread_env();
    int max_threads = int(example::positional(argc, argv, 2, "max threads", 2, 1, 1024));
    const std::string mode = argc > 3 ? argv[3] : "full", shape = argc > 4 ? argv[4] : "130m";
    if (mode != "quick" && mode != "full") throw std::invalid_argument("argument 3 must be 'quick' or 'full', got '" + mode + "'");
    if (shape != "130m" && shape != "1.3b") throw std::invalid_argument("argument 4 must be '130m' or '1.3b', got '" + shape + "'");
    const bool quick = mode == "quick", big = shape == "1.3b";
    const int n_new = quick ? 32 : big ? 32 : 64, n_new_fp32 = big ? 8 : n_new;
    const int reps_fp32 = quick || big ? 1 : 3, reps_packed = quick ? 3 : 5;
#ifndef _OPENMP
    max_threads = 1;
#endif
    std::printf("machine : %s, %s\n", cpu_model().c_str(), example::load_average().c_str());
    std::printf("SIMD    : %s\n", example::simd_flags().c_str());
    std::printf("kernels : block linears %s; fp16 / int8 rows %s\n", fast_kernel() ? fast_kernel()->name.c_str() : "popcount",
                fast_kernel() && fast_kernel()->rows_f16 ? "rows_f16_simd / rows_i8_simd" : "portable loops");
    std::printf("threads : 1 .. %d (%s); fp32 %s\n", max_threads, threading_summary().c_str(), products_summary().c_str());

    Config cfg;
    cfg.V = 32000, cfg.T = 2048, cfg.quant = Quant::FBI;
    if (big) cfg.C = 2048, cfg.L = 24, cfg.NH = 32, cfg.F = 5632;
    else cfg.C = 768, cfg.L = 12, cfg.NH = 12, cfg.F = 2048;
    const char* model_name = big ? "fbi-1.3b" : "fbi-130m";
    std::printf("model   : FBI-LLM-%s shape, %s, random init\n", big ? "1.3B" : "130M", describe(cfg).c_str());
    double t0 = now_seconds();
    Model model;
    layout_model(model, cfg, /*with_grads=*/false);
    {
        Rng rng(1234);
        for (const TensorInfo& t : model.tensors) {
            float* x = model.params.data() + t.offset;
            if (t.is_matrix) for (size_t i = 0; i < t.size(); i++) x[i] = float(0.02 * rng.normal());  // [M0]
            else std::fill(x, x + t.size(), 1.f);
        }
        init_scales(model);  // [F4]
    }
    quantize_all(model);  // Ŵ = α·sign(W) + β for FloatLinear
    PackedModel pm = pack_model(model, "");
    drop_portable_masks(pm);  // the fast kernel's layout only (as generate --packed loads a model)
    const RowMatrix E16 = convert_rows(pm.tok_emb, RowFormat::F16), H16 = convert_rows(pm.lm_head, RowFormat::F16);
    const RowMatrix E8 = convert_rows(pm.tok_emb, RowFormat::I8), H8 = convert_rows(pm.lm_head, RowFormat::I8);
    std::printf("built   : in %.1f s, RSS %.0f MiB\n", now_seconds() - t0, status_mib("VmRSS:"));

    // ---- sizes ----
    double block_weights = 0, block_bytes = 0;  // block bytes: the packed file's masks and fp32 α, β
    for (const auto& layer : pm.lin)
        for (const PackedLinear& p : layer) {
            block_weights += double(p.m) * p.n;
            block_bytes += 8.0 * p.m * words_for(p.n) + 8.0 * p.n;
        }
    const double V = cfg.V, C = cfg.C, norms = 4.0 * (2.0 * cfg.L + 1) * C;
    const double fp32_bytes = 4.0 * block_weights + 8.0 * V * C + norms;       // the file: all of E and H
    const double fp32_token_bytes = 4.0 * block_weights + 4.0 * (V + 1) * C + norms;  // a token: H and one row of E
    RowFormat formats[3] = {RowFormat::F32, RowFormat::F16, RowFormat::I8};
    auto file_bytes = [&](RowFormat f) {  // the packed file (§11): header, E, norms, linears, H, checksum
        return 8 + 4 * 3 + (f == RowFormat::F32 ? 0 : 8) + 6 * 4 + 8 + 2.0 * rows_bytes(f, cfg.V, cfg.C) + norms + block_bytes + 8;
    };
    std::printf("sizes   : fp32 model %.1f MB; block linears %.3f bits/weight (1 + 64/m: fp32 α, β per column)\n",
                fp32_bytes / 1e6, packed_bits_per_weight(pm));
    for (RowFormat f : formats)
        std::printf("          packed file with E, H %s: %8.1f MB (E + H %.1f MB) → %.1f× smaller than fp32\n",
                    row_format_name(f), file_bytes(f) / 1e6, 2.0 * rows_bytes(f, cfg.V, cfg.C) / 1e6, fp32_bytes / file_bytes(f));

    DecodeView dv_fp = decode_view(model), dv[3];
    dv[0] = decode_view(pm);
    dv[1] = dv[0], dv[1].tok_emb = rows_view(E16), dv[1].lm_head = rows_view(H16);
    dv[2] = dv[0], dv[2].tok_emb = rows_view(E8), dv[2].lm_head = rows_view(H8);
    const float *rc = pm.rope_cos.data(), *rs = pm.rope_sin.data();
    FloatLinear fp32_fn{&model};
    PackedLinearFn fast_fn(&pm, Kernel::Fast);
    auto stub_fn = [&](int l, int id, const float*, float* y) { std::fill(y, y + pm.lin[l][id].m, 0.0f); };

    // ---- verify ----
    set_threads(1);
    {
        const int n = big ? 2 : 4;
        auto lf = first_logits(dv_fp, fp32_fn, rc, rs, n);
        std::vector<float> lp[3];
        for (int k = 0; k < 3; k++) lp[k] = first_logits(dv[k], fast_fn, rc, rs, n);
        std::printf("verify  : %d tokens × %d logits, packed vs fp32 decoder, ‖Δlogit‖₂ / ‖logit‖₂ (bound 10%%; a broken "
                    "kernel gives ~100%%) and max|Δ| / max|logit|:", n, cfg.V);
        for (int k = 0; k < 3; k++) {
            MaxRel m = compare(lp[k], lf);
            std::printf(" H=%s %.2f%% (max %.2f%%)", row_format_name(formats[k]), 100 * m.rms, 100 * m.worst / m.scale);
            if (!(m.rms < 0.10) || !(m.worst > 0)) {
                std::fprintf(stderr, "\nMISMATCH: packed logits (H %s) are not within 10%% of fp32\n", row_format_name(formats[k]));
                return 1;
            }
        }
        // The head's own cost: the same final hidden states (decode with H fp32), through H in each format. (Whole
        // logits above also move because E changes the input, and the int8 activation rounding then flips.)
        std::printf(" ✓\n          LM head alone, the same %d final hidden states through H=fp16 / H=int8 vs H=fp32:", n);
        {
            KVCache cache;
            cache.reset(cfg.L, cfg.T, cfg.C);
            DecodeScratch s;
            s.resize(cfg);
            RowsScratch hs;
            std::vector<float> z(cfg.V), zf(cfg.V);
            double worst[3] = {0, 0, 0}, sum[3] = {0, 0, 0}, scale = 0;
            int same_top[3] = {0, 0, 0};
            for (int i = 0; i < n; i++) {
                decode_step(dv[0], fast_fn, cache, s, kPrompt[i], zf.data(), rc, rs);  // s.ln: the head's input
                for (int k = 1; k < 3; k++) {
                    rows_gemv(dv[k].lm_head, s.ln.data(), z.data(), hs);
                    for (int v = 0; v < cfg.V; v++) {
                        worst[k] = std::max(worst[k], double(std::fabs(z[v] - zf[v])));
                        sum[k] += std::fabs(z[v] - zf[v]);
                        scale = std::max(scale, double(std::fabs(zf[v])));
                    }
                    same_top[k] += std::max_element(z.begin(), z.end()) - z.begin() == std::max_element(zf.begin(), zf.end()) - zf.begin();
                }
            }
            for (int k = 1; k < 3; k++)
                std::printf(" %s max|Δ| %.2g (%.3f%% of max|logit|), mean|Δ| %.2g, top-1 same %d/%d;", row_format_name(formats[k]),
                            worst[k], 100 * worst[k] / scale, sum[k] / (double(n) * cfg.V), same_top[k], n);
        }
        double s1, s2;
        MaxRel pf = compare(prefill_logits(dv_fp, FloatRows{&model}, rc, rs, n, &s1), std::vector<float>(lf.end() - cfg.V, lf.end()));
        MaxRel pp = compare(prefill_logits(dv[1], PackedRows{&pm}, rc, rs, n, &s2), std::vector<float>(lp[1].end() - cfg.V, lp[1].end()));
        std::printf("\n          prefill vs decode, last row: fp32 %.2g, packed %.2g (of max|logit| %.2g)", pf.worst, pp.worst, pf.scale);
        if (!(pf.worst < 1e-3 * pf.scale) || !(pp.worst < 0.05 * pp.scale)) {
            std::fprintf(stderr, "\nMISMATCH: prefill logits differ from decode logits\n");
            return 1;
        }
        std::printf(" ✓\n\n");
    }

    // ---- time ----
    std::FILE* probe = std::fopen(csv_path.c_str(), "r");
    const bool fresh = !probe || std::fgetc(probe) == EOF;
    if (probe) std::fclose(probe);
    std::FILE* csv = std::fopen(csv_path.c_str(), "a");
    if (!csv) throw std::runtime_error("cannot open '" + csv_path + "' for appending");
    if (fresh) std::fprintf(csv, "model,threads,row,ms_per_token,tokens_per_s,speedup_vs_fp32,bound_ms\n");
    std::vector<float> stream(size_t(1) << 27);  // 512 MB for the bandwidth probe
    for (size_t i = 0; i < stream.size(); i++) stream[i] = float(i & 1023);
    std::vector<float> xh(cfg.C), yh(cfg.V);
    {
        Rng rng(7);
        for (float& v : xh) v = float(rng.normal());
    }
    double tl_bytes = block_weights / 8;  // the fast kernel reads 1 bit per weight
    const double kv_bytes = 2.0 * cfg.L * C * 4 * (kPrompt.size() + n_new / 2.0);  // K and V so far, mean over the run

    std::printf("%3s  %-24s %9s %9s %9s %9s  %s\n", "thr", "decoder", "ms/token", "tokens/s", "vs fp32", "bound ms",
                "(per-rep ms/token)");
    for (int threads = 1; threads <= max_threads; threads++) {
        set_threads(threads);
        const double gbs = read_bandwidth(stream);
        std::printf("%3d  read bandwidth %.1f GB/s (streaming sum, best of 1 and 8 streams a thread, %d thread%s)\n", threads, gbs, threads, threads > 1 ? "s" : "");
        double fp32_ms = 0;
        auto row = [&](const std::string& name, double ms, double bound_bytes, const std::vector<double>& reps) {
            if (name == "fp32") fp32_ms = ms;
            const double bound = bound_bytes / (gbs * 1e9) * 1e3;
            std::string detail;
            for (double r : reps) detail += (detail.empty() ? "" : " ") + std::to_string(r).substr(0, 6);
            std::printf("%3d  %-24s %9.2f %9.1f %8.2f× %9.2f  %s\n", threads, name.c_str(), ms, 1e3 / ms, fp32_ms / ms,
                        bound, detail.c_str());
            std::fprintf(csv, "%s,%d,%s,%.4f,%.2f,%.3f,%.4f\n", model_name, threads, name.c_str() + name.find_first_not_of(' '),
                         ms, 1e3 / ms, fp32_ms / ms, bound);
            std::fflush(stdout), std::fflush(csv);
        };
        auto full = [&](const std::string& name, auto&& fn, const DecodeView& d, int reps, int n, double bound_bytes) {
            auto r = time_decode(d, fn, rc, rs, reps, n);
            row(name, median(r), bound_bytes, r);
            return median(r);
        };
        full("fp32", fp32_fn, dv_fp, reps_fp32, n_new_fp32, fp32_token_bytes + kv_bytes);
        double packed_ms[3], stub_ms[3], head_ms[3];
        for (int k = 0; k < 3; k++) {
            const std::string f = row_format_name(formats[k]);
            const double head_bytes = double(rows_bytes(formats[k], cfg.V, cfg.C)), emb_row = head_bytes / V;
            packed_ms[k] = full("packed H=" + f, fast_fn, dv[k], reps_packed, n_new, tl_bytes + head_bytes + emb_row + kv_bytes);
            stub_ms[k] = full("  stub H=" + f, stub_fn, dv[k], reps_packed, n_new, head_bytes + emb_row + kv_bytes);
            RowsScratch hs;
            head_ms[k] = time_ms([&] { rows_gemv(dv[k].lm_head, xh.data(), yh.data(), hs); }, 21);
            row("  head H=" + f, head_ms[k], head_bytes, {});
        }
        for (int k = 0; k < 3; k++)
            std::printf("     H=%s: %.2f ms/token = block linears %.2f + LM head %.2f + the rest (E, norms, RoPE, attention) %.2f\n",
                        row_format_name(formats[k]), packed_ms[k], packed_ms[k] - stub_ms[k], head_ms[k], stub_ms[k] - head_ms[k]);
        // prefill: prompt tokens per second
        for (int n : {64, 512}) {
            double s_fp = 0, s_pk = 0;
            const int reps = big ? 1 : 3;
            std::vector<double> tf, tp;
            for (int r = 0; r < reps; r++) {
                prefill_logits(dv_fp, FloatRows{&model}, rc, rs, n, &s_fp), tf.push_back(s_fp);
                prefill_logits(dv[1], PackedRows{&pm}, rc, rs, n, &s_pk), tp.push_back(s_pk);
            }
            s_fp = median(tf), s_pk = median(tp);
            std::printf("%3d  prefill %3d tokens: fp32 (FloatRows) %.0f tokens/s, packed H=fp16 (PackedRows) %.0f tokens/s (%.2f×)\n",
                        threads, n, n / s_fp, n / s_pk, s_fp / s_pk);
            std::fprintf(csv, "%s,%d,prefill%d fp32,%.4f,%.2f,1,0\n", model_name, threads, n, 1e3 * s_fp / n, n / s_fp);
            std::fprintf(csv, "%s,%d,prefill%d packed H=fp16,%.4f,%.2f,%.3f,0\n", model_name, threads, n, 1e3 * s_pk / n,
                         n / s_pk, s_fp / s_pk);
        }
        std::printf("\n");
    }
    std::fclose(csv);
    std::printf("memory  : peak RSS %.0f MiB (fp32 model + packed model + 512 MB bandwidth probe); resident per decoder: "
                "fp32 %.0f MB, packed H=fp16 %.0f MB, H=int8 %.0f MB\n", status_mib("VmHWM:"), fp32_bytes / 1e6,
                (block_bytes + 2.0 * rows_bytes(RowFormat::F16, cfg.V, cfg.C)) / 1e6,
                (block_bytes + 2.0 * rows_bytes(RowFormat::I8, cfg.V, cfg.C)) / 1e6);
    std::printf("load    : %s\n", load_average().c_str());
    std::printf("wrote   %s (appended)\n", csv_path.c_str());
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "bench_decode: %s\n", e.what());
    return 1;
}
