// sample: generate text from a checkpoint with the KV-cache decoder.
//   build/sample --ckpt runs/tiny/student_ad_random.ckpt --prompt "ROMEO:" --n 300 --temperature 0.8 --seed 1
#include "../common.hpp"

using namespace fbi;
using namespace example;

int main(int argc, char** argv) try {
    Args args(argc, argv, "usage: sample --ckpt PATH [--prompt TEXT] [--n 300] [--temperature 0.8] [--seed 1]");
    args.only({"ckpt", "prompt", "n", "temperature", "seed"});
    check_thread_env();
    std::string path = args.str("ckpt", "");
    if (path.empty()) throw std::invalid_argument("--ckpt PATH is required");
    // every flag checked before the checkpoint is read
    const int n = args.integer("n", 300, 0, 1 << 24);
    const double temperature = args.real("temperature", 0.8, 0);  // 0 = greedy
    const uint64_t seed = args.u64("seed", 1);
    Checkpoint ck = load_checkpoint(path);
    CharTokenizer tok(ck.vocab);
    if (tok.size() != ck.cfg.V) throw std::runtime_error("checkpoint '" + path + "': vocabulary size does not match V");
    Model model = model_from_checkpoint(ck);
    // The prompt must fit the context: the decoder conditions on it whole (generation itself slides its window
    // past T, re-encoding the last T/2 tokens, but a prompt is never cut silently).
    std::string prompt_text = args.str("prompt", "\n");
    std::vector<int> prompt;
    try {
        prompt = tok.encode(prompt_text);
    } catch (const std::invalid_argument& e) {
        throw std::invalid_argument("--prompt: " + std::string(e.what()) + " (checkpoint '" + path + "')");
    }
    if (prompt.empty()) throw std::invalid_argument("--prompt is empty: give at least one character");
    if (int(prompt.size()) > ck.cfg.T)
        throw std::invalid_argument("--prompt has " + std::to_string(prompt.size()) +
                                    " characters, more than the model's context of T=" + std::to_string(ck.cfg.T) +
                                    " (checkpoint '" + path + "'); give at most " + std::to_string(ck.cfg.T));
    double t0 = now_seconds();
    std::vector<int> out = generate(model, prompt, n, temperature, seed);
    double dt = now_seconds() - t0;
    std::printf("%s\n", tok.decode(out).c_str());
    std::fprintf(stderr, "[%s, %s, step %ld: %d tokens in %.2fs, %.0f tokens/s, %s]\n", path.c_str(),
                 quant_name(ck.cfg.quant), ck.step, n, dt, n / dt, threading_summary().c_str());
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
}
