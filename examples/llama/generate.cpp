// generate — text from a downloaded FBI-LLM (Hugging Face layout) through the header, 1-bit kernels by default.
//
//   build/generate --model DIR --prompt "The capital of France is" [--max-tokens 128] [--temperature 0.8]
//                  [--top-p 0.9] [--seed 1] [--float] [--kernel fast|popcount|reference] [--tokenizer FILE]
//                  [--cache FILE] [--prefill kernels|unpack|decode] [--ids]
//   build/generate --model DIR --tokens 1,450,7483 ...      token ids instead of a prompt (no tokenizer needed)
//
// The prompt (BOS first) goes through the prefill in one pass, then one token at a time with the KV cache, printed
// as it comes. --float runs the dense fp32 model (Ŵ = α·sign(W) + β as matrices) instead of the packed one.
// At the end: tokens/s of prefill and decode, and memory (RSS). Packed runs cache the 1-bit file (llama.hpp says
// where). Errors are one line naming the file or flag, exit code 1.
#include "../../fbi_llm.hpp"
#include "../common.hpp"
#include "../kernels/fast_kernels.hpp"
#include "llama.hpp"

using namespace fbi;

int main(int argc, char** argv) try {
    const std::string usage =
        "usage: generate --model DIR (--prompt TEXT | --tokens 1,2,3) [--max-tokens 128] [--temperature 0.8] [--top-p 0.9]\n"
        "                [--seed 1] [--float] [--kernel fast|popcount|reference] [--tokenizer FILE] [--cache FILE]\n"
        "                [--prefill kernels|unpack|decode] [--ids]";
    example::Args a(argc, argv, usage, {"float", "ids"});
    a.only({"model", "prompt", "tokens", "max-tokens", "temperature", "top-p", "seed", "float", "kernel", "tokenizer",
            "cache", "prefill", "ids"});
    std::string dir = a.str("model", "");
    if (dir.empty()) throw std::invalid_argument("--model DIR is required (a downloaded model directory)");
    if (a.has("prompt") == a.has("tokens")) throw std::invalid_argument("give one of --prompt TEXT or --tokens 1,2,3");
    int max_tokens = a.integer("max-tokens", 128, 0, 1 << 20);
    double temperature = a.real("temperature", 0.8, 0), top_p = a.real("top-p", 0.9, 0, true);
    if (top_p > 1) throw std::invalid_argument("--top-p must be in (0, 1], got '" + a.str("top-p", "") + "'");
    uint64_t seed = uint64_t(a.integer("seed", 1, 0, 1L << 30));
    bool dense = a.has("float"), show_ids = a.has("ids");
    Kernel kernel = llama::kernel_from_name(a.str("kernel", "fast"));
    std::string prefill_rows = a.str("prefill", "kernels");
    if (prefill_rows != "kernels" && prefill_rows != "unpack" && prefill_rows != "decode")
        throw std::invalid_argument("--prefill '" + prefill_rows + "': kernels, unpack or decode");

    // The tokenizer first: a wrong or missing one is found before minutes of importing.
    if (!llama::is_dir(dir)) throw std::invalid_argument(dir + ": not a directory (--model takes a downloaded model directory)");
    fbi::Config probe = interop::config_from_hf(interop::read_json(dir + "/config.json"), dir + "/config.json", false);
    llama::Tokenizer tok;
    bool have_tok = a.has("prompt") || a.has("tokenizer") || interop::exists(dir + "/tokenizer.model");
    if (have_tok) tok.load(a.str("tokenizer", dir + "/tokenizer.model"), probe.V);
    std::vector<int> prompt = a.has("prompt") ? tok.encode(a.str("prompt", "")) : example::parse_token_ids(a.str("tokens", ""), probe.V);
    if (int(prompt.size()) >= probe.T)
        throw std::invalid_argument("--prompt: " + std::to_string(prompt.size()) + " tokens (with BOS) leave no room in the context of " +
                                    std::to_string(probe.T) + " (config.json max_position_embeddings)");

    double t0 = now_seconds();
    llama::Loaded L = llama::open_model(dir, dense, a.str("cache", ""), kernel == Kernel::Fast && prefill_rows != "unpack");
    double t_load = now_seconds() - t0;
    const Config& c = L.cfg;
    std::fprintf(stderr, "%s: %s, %s%s; loaded in %.1f s; %d threads; %s\n", dir.c_str(), describe(c).c_str(),
                 dense ? "dense fp32" : (std::string("packed 1-bit, kernel ") + kernel_name(effective_kernel(kernel))).c_str(),
                 dense ? "" : (", cache " + L.cache_path + " (" + L.how + ")").c_str(), t_load, num_threads(),
                 llama::memory_line().c_str());

    KVCache cache;
    cache.reset(c.L, c.T, c.C);
    PrefillScratch ps;
    llama::Stepper stepper(L, kernel);
    std::vector<float> logits(c.V);
    double t1 = now_seconds();
    if (prefill_rows == "decode" || prompt.size() == 1) {
        for (int t : prompt) stepper.step(cache, t, logits.data());
    } else {
        llama::run_prefill(L, cache, ps, prompt.data(), int(prompt.size()), logits.data(), 1, kernel, prefill_rows);
    }
    ps = PrefillScratch{};  // the prompt's buffers are not needed while decoding
    double t_prefill = now_seconds() - t1;

    std::vector<int> out = prompt, made;
    std::string shown = have_tok ? tok.decode(out) : "";
    if (have_tok) std::printf("%s", shown.c_str());
    std::fflush(stdout);
    Rng rng(seed);
    double t2 = now_seconds();
    const char* why = "--max-tokens reached";
    int steps = 0;
    for (int i = 0; i < max_tokens; i++) {
        int next = sample_token_top_p(logits.data(), c.V, temperature, top_p, rng);
        out.push_back(next), made.push_back(next);
        if (have_tok && next == tok.eos) { why = "end of text (EOS)"; break; }
        if (have_tok) {  // print what the new token adds to the decoded text (pieces can join into one character)
            std::string now = tok.decode(out);
            if (now.size() >= shown.size() && now.compare(0, shown.size(), shown) == 0) std::printf("%s", now.c_str() + shown.size());
            shown = now;
            std::fflush(stdout);
        }
        if (cache.pos == c.T) { why = "context full"; break; }
        stepper.step(cache, next, logits.data());
        steps++;
    }
    double t_decode = now_seconds() - t2;
    std::printf("\n");
    if (show_ids) {
        std::printf("ids:");
        for (int t : made) std::printf(" %d", t);
        std::printf("\n");
    }
    std::fprintf(stderr, "prompt %zu tokens: prefill %.1f tokens/s (%s) · %zu new tokens: decode %.2f tokens/s · %s · stop: %s\n",
                 prompt.size(), prompt.size() / std::max(t_prefill, 1e-9), dense ? "float GEMM" : prefill_rows.c_str(), made.size(),
                 steps / std::max(t_decode, 1e-9), llama::memory_line().c_str(), why);
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "generate: %s\n", e.what());
    return 1;
}
