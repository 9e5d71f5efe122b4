// perplexity — the FBI-LLM paper's perplexity protocol on a downloaded model directory, through the header.
//
//   build/perplexity --model DIR --text FILE [--windows N] [--window 2048] [--float] [--kernel fast|popcount|reference]
//                    [--prefill kernels|unpack|decode] [--chunk 256] [--tokenizer FILE] [--cache FILE]
//
// The protocol of the official evaluation (its evaluate_ckpt_ppl): the whole text is tokenized once with BOS first;
// the ids are cut into numel // 2048 windows of 2048 tokens, side by side, the remainder dropped; each window
// starts with an empty cache, so its first token is never predicted; a window's loss is its mean next-token
// cross-entropy over its 2047 predictions, and
//     perplexity = exp( (1/windows) Σ_w mean_t CE_w,t )
// (the official code multiplies each window's mean by 2048 and divides the sum by windows × 2048: the same number).
// The texts (README, "Run the released FBI-LLM"): WikiText-2 test lines joined with "\n\n"; PTB test sentences
// joined with " "; C4: the first 1,100 validation documents joined with " " and --windows 256.
//
// --prefill: how a window's tokens go through the model. kernels (default): the 1-bit kernels on many tokens per
// call; unpack: each linear's Ŵ unpacked from the bits to fp32, one GEMM per chunk (the float model's numbers);
// decode: one token at a time, as generation does. --float runs the dense fp32 model.
#include "../../fbi_llm.hpp"
#include "../common.hpp"
#include "../kernels/fast_kernels.hpp"
#include "llama.hpp"

#include <unistd.h>  // isatty

using namespace fbi;

static std::string clock_str(double s) {
    char b[32];
    long t = long(s + 0.5);
    if (t >= 3600) std::snprintf(b, sizeof b, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else std::snprintf(b, sizeof b, "%ldm%02lds", t / 60, t % 60);
    return b;
}

// log Σ_v exp(z_v) summed in double: over 32000 logits a float sum drifts by ~1e-4 nats.
static double log_sum_exp_double(const float* z, int V) {
    double mx = *std::max_element(z, z + V), sum = 0;
    for (int v = 0; v < V; v++) sum += std::exp(double(z[v]) - mx);
    return mx + std::log(sum);
}

int main(int argc, char** argv) try {
    const std::string usage =
        "usage: perplexity --model DIR --text FILE [--windows N] [--window 2048] [--float] [--kernel fast|popcount|reference]\n"
        "                  [--prefill kernels|unpack|decode] [--chunk 256] [--tokenizer FILE] [--cache FILE]";
    example::Args a(argc, argv, usage, {"float"});
    a.only({"model", "text", "windows", "window", "float", "kernel", "prefill", "chunk", "tokenizer", "cache"});
    std::string dir = a.str("model", ""), text_path = a.str("text", "");
    if (dir.empty()) throw std::invalid_argument("--model DIR is required (a downloaded model directory)");
    if (text_path.empty()) throw std::invalid_argument("--text FILE is required (README: where the evaluation texts come from)");
    long max_windows = a.integer("windows", 0, 0, 1 << 30);
    int chunk = a.integer("chunk", 256, 1, 1 << 16);
    bool dense = a.has("float");
    Kernel kernel = llama::kernel_from_name(a.str("kernel", "fast"));
    std::string rows = a.str("prefill", "kernels");
    if (rows != "kernels" && rows != "unpack" && rows != "decode") throw std::invalid_argument("--prefill '" + rows + "': kernels, unpack or decode");
    if (dense && rows == "unpack") rows = "kernels";  // the float model has one prefill: its GEMM

    if (!llama::is_dir(dir)) throw std::invalid_argument(dir + ": not a directory (--model takes a downloaded model directory)");
    Config probe = interop::config_from_hf(interop::read_json(dir + "/config.json"), dir + "/config.json", false);
    int W = a.integer("window", std::min(2048, probe.T), 2, probe.T);
    llama::Tokenizer tok;
    tok.load(a.str("tokenizer", dir + "/tokenizer.model"), probe.V);
    std::string text = llama::read_text(text_path);
    double t0 = now_seconds();
    std::vector<int> ids = tok.encode(text);
    long windows = long(ids.size()) / W;
    if (windows == 0)
        throw std::invalid_argument(text_path + ": " + std::to_string(ids.size()) + " tokens, fewer than one window of " + std::to_string(W));
    if (max_windows > windows)
        throw std::invalid_argument("--windows " + std::to_string(max_windows) + ": " + text_path + " has only " +
                                    std::to_string(windows) + " windows of " + std::to_string(W) + " tokens");
    long count = max_windows ? max_windows : windows;
    std::fprintf(stderr, "%s: %zu bytes → %zu tokens in %.1f s → %ld windows of %d%s\n", text_path.c_str(), text.size(),
                 ids.size(), now_seconds() - t0, windows, W, max_windows ? (", the first " + std::to_string(count)).c_str() : "");

    t0 = now_seconds();
    llama::Loaded L = llama::open_model(dir, dense, a.str("cache", ""), kernel == Kernel::Fast && rows != "unpack");
    const Config& c = L.cfg;
    std::fprintf(stderr, "%s: %s, %s; loaded in %.1f s; %d threads; %s\n", dir.c_str(), describe(c).c_str(),
                 dense ? "dense fp32" : ("packed 1-bit, kernel " + std::string(kernel_name(effective_kernel(kernel))) + ", prefill " + rows +
                                         ", cache " + L.cache_path + " (" + L.how + ")").c_str(),
                 now_seconds() - t0, num_threads(), llama::memory_line().c_str());

    KVCache cache;
    PrefillScratch ps;
    llama::Stepper stepper(L, kernel);
    std::vector<float> logits(size_t(rows == "decode" ? 1 : std::min(chunk, W)) * c.V);
    bool tty = isatty(fileno(stderr));
    double sum_nll = 0, start = now_seconds();
    for (long w = 0; w < count; w++) {
        const int* win = ids.data() + size_t(w) * W;
        cache.reset(c.L, c.T, c.C);
        double nll = 0;
        for (int t0w = 0; t0w < W; ) {  // rows t0w … t0w+n−1 of the window; row t predicts token t+1
            int n = rows == "decode" ? 1 : std::min(chunk, W - t0w);
            if (rows == "decode") stepper.step(cache, win[t0w], logits.data());
            else llama::run_prefill(L, cache, ps, win + t0w, n, logits.data(), n, kernel, rows);
            for (int r = 0; r < n; r++) {
                int t = t0w + r;
                if (t + 1 >= W) break;
                const float* z = logits.data() + size_t(r) * c.V;
                nll += log_sum_exp_double(z, c.V) - double(z[win[t + 1]]);
            }
            t0w += n;
            if (tty && (t0w % 256 == 0 || t0w == W)) {
                double done = double(w) + double(t0w) / W, el = now_seconds() - start;
                std::fprintf(stderr, "\r  window %ld/%ld  %4d/%d tokens  %.1f tokens/s  ETA %s   ", w + 1, count, t0w, W,
                             done * W / el, clock_str(el / done * (count - done)).c_str());
            }
        }
        nll /= (W - 1);
        sum_nll += nll;
        double el = now_seconds() - start;
        std::fprintf(stderr, "%swindow %ld/%ld: mean CE %.4f, perplexity so far %.3f · %.1f tokens/s · ETA %s · %s\n",
                     tty ? "\r" : "", w + 1, count, nll, std::exp(sum_nll / (w + 1)), (w + 1) * double(W) / el,
                     clock_str(el / (w + 1) * (count - w - 1)).c_str(), llama::memory_line().c_str());
    }
    double mean = sum_nll / count;
    std::printf("mean_nll %.9f\nperplexity %.4f over %ld windows of %d tokens (%s%s)\n", mean, std::exp(mean), count, W,
                dense ? "dense fp32" : "packed 1-bit, prefill ", dense ? "" : rows.c_str());
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "perplexity: %s\n", e.what());
    return 1;
}
