// compare.cpp — the four students of `make compare`, side by side (FBI [F1]–[F5], b1.58 [Q1]–[Q3], DB [Q4]–[Q6] + [D3], packed [P1], [S7], [S8]).
// `make compare` first runs train_tiny once per student against the same teacher, with the same data, steps,
// batch and schedule (fp32 + AD, FBI + AD, b1.58 + AD, DB + DAD); each run writes DIR/summary_<tag>.json.
// This program reads those summaries and measures, in one process so the numbers compare:
//   * GEMV speed-up vs Eigen fp32 at 4096×4096, one token, one thread, per quantizer (random weights; the
//     packed timings include the per-token int8 quantization and table construction; verified first against
//     the reference kernel, bit for bit);
//   * decode tokens/s of each trained model at its own (tiny) shape: KV cache, greedy, 256 tokens, median of 3.
// It prints one table and writes DIR/compare.csv and DIR/compare.md.
#include "../bench_util.hpp"
#include "../common.hpp"

using namespace fbi;
using namespace example;

static const char* kUsage =
    "usage: compare [--dir runs/compare] [--gemv 4096]\n"
    "  reads DIR/summary_{fp32_ad_random, ad_random, b1.58_ad_random, db_dad_random}.json (from train_tiny),\n"
    "  and DIR/summary_db_ad_random.json when it is there (an ablation row: DB with plain AD)";

// ---- reading our own JSON summaries: "key": number or "key": "string" on one line ------------------------------
static std::string json_raw(const std::string& json, const std::string& key, const std::string& file) {
    size_t at = json.find("\"" + key + "\": ");
    if (at == std::string::npos) throw std::runtime_error(file + ": no \"" + key + "\" (written by an older train_tiny?)");
    at += key.size() + 4;
    return json.substr(at, json.find_first_of(",\n}", at) - at);
}
static double json_number(const std::string& json, const std::string& key, const std::string& file) {
    return std::stod(json_raw(json, key, file));
}
static std::string json_string(const std::string& json, const std::string& key, const std::string& file) {
    std::string v = json_raw(json, key, file);
    return v.size() >= 2 ? v.substr(1, v.size() - 2) : v;  // paths only: no escapes to undo
}

struct Row {
    std::string method, quant, loss;
    double bits = 32, bytes = 0, ce_float = 0, ce_packed = -1, gemv_speedup = 1, tok_s = 0;
};

// ---- GEMV at 4096² for one quantizer: median µs per token, after checking the fast kernel against the reference ----
static double gemv_us(Quant q, int n, Rng& rng) {
    std::vector<float> W(size_t(n) * n), x(n), y(n), y_ref(n);
    for (float& w : W) w = float(0.02 * rng.normal());
    for (float& v : x) v = float(rng.normal());
    if (q == Quant::FP) return time_us([&] { matvec(y.data(), W.data(), x.data(), n, n); }).median_us;
    std::vector<float> a(n), b(n);
    if (auto init = quantizer(q).f32.init) init(a.data(), b.data(), W.data(), n, n);  // FBI: α, β; DB: α1, α2
    PackedModel pm;
    pm.lin.resize(1);
    pack_linear(pm.lin[0][WQ], q, W.data(), a.data(), b.data(), n, n);
    PackedLinearFn fast(&pm, Kernel::Fast), ref(&pm, Kernel::Reference);
    fast(0, WQ, x.data(), y.data());
    ref(0, WQ, x.data(), y_ref.data());
    if (std::memcmp(y.data(), y_ref.data(), 4 * size_t(n)) != 0)
        throw std::runtime_error(std::string("GEMV check failed for ") + quant_name(q) + ": fast kernel != reference");
    return time_us([&] { fast(0, WQ, x.data(), y.data()); }).median_us;
}

// ---- decode tokens/s: median of 3 greedy generations of 256 tokens -------------------------------------------
template <class Gen>
static double decode_tok_s(Gen&& gen) {
    std::vector<double> r;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = now_seconds();
        gen();
        r.push_back(256 / (now_seconds() - t0));
    }
    return median(r);
}

int main(int argc, char** argv) try {
    Args args(argc, argv, kUsage);
    args.only({"dir", "gemv"});
    check_thread_env();
    std::string dir = args.str("dir", "runs/compare");
    int n = args.integer("gemv", 4096, 64, 1 << 15);
    std::printf("fbi_llm compare | %s | %s | load %s\n", cpu_model().c_str(), threading_summary().c_str(),
                load_average().c_str());

    struct Run { const char* tag; const char* method; bool optional; };
    const Run runs[] = {{"fp32_ad_random", "fp32 student", false},
                        {"ad_random", "FBI (1-bit)", false},
                        {"b1.58_ad_random", "BitNet b1.58", false},
                        {"db_dad_random", "DB-LLM FDB + DAD (unconfirmed)", false},
                        // an ablation row when its run is there: train_tiny --student-quant db --student-loss ad
                        {"db_ad_random", "DB-LLM FDB + AD (ablation)", true}};
    std::vector<Row> rows;
    std::vector<int> prompt = {0};  // the first character of the vocabulary ('\n' for TinyShakespeare)
    Row teacher_row;
    for (const Run& run : runs) {
        std::string file = dir + "/summary_" + run.tag + ".json";
        if (run.optional && !std::ifstream(file)) continue;
        std::vector<unsigned char> raw = read_file_bytes(file);
        std::string json(raw.begin(), raw.end());
        if (rows.empty()) {  // the teacher, once (every run used the same one)
            teacher_row.method = "teacher";
            teacher_row.quant = "fp32";
            teacher_row.loss = "ce";
            teacher_row.bytes = json_number(json, "teacher_bytes_fp32", file);
            teacher_row.ce_float = json_number(json, "teacher_val_ce", file);
            Model teacher = model_from_checkpoint(load_checkpoint(json_string(json, "teacher_checkpoint", file)));
            teacher_row.tok_s = decode_tok_s([&] { generate(teacher, prompt, 256, 0.0, 1); });
        }
        Row r;
        r.method = run.method;
        r.quant = json_string(json, "student_quant", file);
        r.loss = json_string(json, "student_loss", file);
        r.ce_float = json_number(json, "student_val_ce", file);
        r.bytes = json_number(json, "packed_file_bytes", file);
        r.bits = json_number(json, "packed_bits_per_weight", file);
        std::string packed_file = json_string(json, "packed_file", file);
        if (packed_file.empty()) {
            Model student = model_from_checkpoint(load_checkpoint(json_string(json, "student_checkpoint", file)));
            r.tok_s = decode_tok_s([&] { generate(student, prompt, 256, 0.0, 1); });
        } else {
            r.ce_packed = json_number(json, "student_packed_val_ce", file);
            PackedModel pm = load_packed_model(packed_file);
            r.tok_s = decode_tok_s([&] { generate(pm, prompt, 256, 0.0, 1); });
        }
        rows.push_back(r);
    }

    // GEMV speed-ups, one thread, in this process
    int threads = num_threads();
#ifdef _OPENMP
    omp_set_num_threads(1);
#endif
    Rng rng(2024);
    double fp32_us = gemv_us(Quant::FP, n, rng);
    for (Row& r : rows) r.gemv_speedup = r.quant == "fp32" ? 1.0 : fp32_us / gemv_us(quant_from_name(r.quant), n, rng);
#ifdef _OPENMP
    omp_set_num_threads(threads);
#endif
    rows.insert(rows.begin(), teacher_row);

    // ---- the table: stdout, markdown, CSV ----
    char line[512];
    std::string md = "| method | quantizer | loss | bits/weight | bytes (packed) | val CE float | val CE packed | "
                     "GEMV " + std::to_string(n) + "² speed-up vs fp32 | decode tok/s |\n"
                     "|---|---|---|---:|---:|---:|---:|---:|---:|\n";
    std::string csv = "method,quant,loss,bits_per_weight,bytes,val_ce_float,val_ce_packed,gemv_speedup,decode_tok_s\n";
    std::printf("\n%-31s %-6s %-4s %8s %10s %9s %9s %9s %9s\n", "method", "quant", "loss", "bits/w", "bytes",
                "CE float", "CE packed", "GEMV x", "tok/s");
    for (const Row& r : rows) {
        std::string packed = r.ce_packed < 0 ? "—" : (std::snprintf(line, sizeof line, "%.4f", r.ce_packed), line);
        std::printf("%-31s %-6s %-4s %8.3f %10.0f %9.4f %9s %8.1fx %9.0f\n", r.method.c_str(), r.quant.c_str(),
                    r.loss.c_str(), r.bits, r.bytes, r.ce_float, packed.c_str(), r.gemv_speedup, r.tok_s);
        std::snprintf(line, sizeof line, "| %s | %s | %s | %.3f | %.0f | %.4f | %s | %.1f× | %.0f |\n", r.method.c_str(),
                      r.quant.c_str(), r.loss.c_str(), r.bits, r.bytes, r.ce_float, packed.c_str(), r.gemv_speedup, r.tok_s);
        md += line;
        std::snprintf(line, sizeof line, "%s,%s,%s,%.5f,%.0f,%.6f,%.6f,%.3f,%.1f\n", r.method.c_str(), r.quant.c_str(),
                      r.loss.c_str(), r.bits, r.bytes, r.ce_float, r.ce_packed, r.gemv_speedup, r.tok_s);
        csv += line;
    }
    std::snprintf(line, sizeof line,
                  "\nGEMV: %d×%d, one token, 1 thread, Eigen fp32 %.0f µs (median); packed timings include int8 "
                  "quantization and tables. Decode: %d thread(s), greedy, 256 tokens, median of 3. %s\n",
                  n, n, fp32_us, threads, cpu_model().c_str());
    md += line;
    std::printf("%s", line);
    write_file_atomic(dir + "/compare.md", std::vector<unsigned char>(md.begin(), md.end()));
    write_file_atomic(dir + "/compare.csv", std::vector<unsigned char>(csv.begin(), csv.end()));
    std::printf("wrote %s/compare.md and %s/compare.csv\n", dir.c_str(), dir.c_str());
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
}
