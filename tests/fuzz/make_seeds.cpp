// Writes the seed corpora: for fuzz_loaders small real checkpoints and packed models, for fuzz_interop a safetensors
// file, a torch.save archive, a pickle and a config.json (each prefixed with the byte that picks its reader), so the
// fuzzers start from valid files and mutate every field.   usage: make_seeds DIR [INTEROP_DIR]
#include <cstdio>
#include <cstring>
#include <string>

#include "../../fbi_llm.hpp"
#include "../../examples/quantizers/b158.hpp"
#include "../../examples/quantizers/codebook.hpp"
#include "../../examples/quantizers/db.hpp"
#include "../../examples/interop/hf.hpp"
#include "../interop_bytes.hpp"

using namespace fbi;

static Config tiny(Quant q, int V, int C, int L, int NH, int F, int T) {
    Config c;
    c.V = V; c.C = C; c.L = L; c.NH = NH; c.F = F; c.T = T; c.quant = q;
    return c;
}

int main(int argc, char** argv) try {
    if (argc != 2 && argc != 3) { std::fprintf(stderr, "usage: make_seeds DIR [INTEROP_DIR]\n"); return 2; }
    std::string dir = argv[1];
    int written = 0;
    auto checkpoint = [&](const std::string& name, const Config& c, const std::string& vocab, bool with_opt) {
        Model m = build_model<float>(c, 1);
        AdamW opt;
        if (with_opt) {  // one update, so the moments are non-zero
            for (float& g : m.grads) g = 0.01f;
            adamw_step(m, opt, 1e-3);
        }
        save_checkpoint(dir + "/" + name, make_checkpoint(m, vocab, with_opt ? 1 : 0, with_opt ? &opt : nullptr));
        written++;
    };
    auto packed = [&](const std::string& name, const Config& c, const std::string& vocab, int scale_bits = 32) {
        save_packed_model(dir + "/" + name, pack_model(build_model<float>(c, 2), vocab, scale_bits));
        written++;
    };
    checkpoint("fp_opt.ckpt", tiny(Quant::FP, 3, 4, 1, 1, 8, 4), "ab\n", true);
    checkpoint("fbi.ckpt", tiny(Quant::FBI, 5, 4, 1, 2, 8, 3), "abcde", false);
    checkpoint("fbi_opt_L2.ckpt", tiny(Quant::FBI, 2, 4, 2, 1, 4, 2), "", true);
    checkpoint("b158.ckpt", tiny(kB158, 3, 4, 1, 1, 8, 4), "xyz", false);
    checkpoint("db_opt.ckpt", tiny(kDB, 3, 4, 1, 1, 6, 3), "pq\n", true);
    packed("V3.fbipack", tiny(Quant::FBI, 3, 4, 1, 1, 8, 4), "xyz");
    packed("L2.fbipack", tiny(Quant::FBI, 5, 4, 2, 2, 12, 3), "\n !ab");
    packed("b158.fbipack", tiny(kB158, 3, 4, 1, 1, 8, 4), "abc");
    packed("db.fbipack", tiny(kDB, 4, 4, 1, 2, 10, 3), "wxyz");
    packed("fbi_cb2.fbipack", tiny(Quant::FBI, 3, 4, 1, 1, 10, 4), "xyz", 2);  // α, β as 4-level codebooks
    packed("db_cb1.fbipack", tiny(kDB, 4, 4, 1, 2, 10, 3), "wxyz", 1);
    if (argc == 3) {  // fuzz_interop: reader byte + file
        std::string idir = argv[2];
        auto seed = [&](const std::string& name, unsigned char kind, std::vector<unsigned char> bytes) {
            bytes.insert(bytes.begin(), kind);
            FILE* f = std::fopen((idir + "/" + name).c_str(), "wb");
            if (!f) throw std::runtime_error("cannot write " + idir + "/" + name);
            std::fwrite(bytes.data(), 1, bytes.size(), f);
            std::fclose(f);
            written++;
        };
        Model m = build_model<float>(tiny(Quant::FBI, 3, 4, 1, 1, 8, 4), 3);
        std::string hf = idir + "/hf.tmp";
        for (const char* f : {"config.json", "model.safetensors", "fbi_vocab.json"}) std::remove((hf + "/" + f).c_str());
        rmdir(hf.c_str());
        interop::export_hf(m, "abc", hf, false);
        auto file = [](const std::string& p) { interop::File f(p); return f.bytes(0, f.size); };
        seed("model.safetensors", 0, file(hf + "/model.safetensors"));
        seed("config.json", 3, file(hf + "/config.json"));
        for (const char* f : {"config.json", "model.safetensors", "fbi_vocab.json"}) std::remove((hf + "/" + f).c_str());
        rmdir(hf.c_str());
        seed("state_dict.bin", 1, interop_bytes::torch_bin(interop_bytes::state_dict_pickle()));
        seed("state_dict.pkl", 2, interop_bytes::state_dict_pickle());
    }
    std::printf("make_seeds: wrote %d seed files to %s\n", written, dir.c_str());
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "make_seeds: %s\n", e.what());
    return 1;
}
