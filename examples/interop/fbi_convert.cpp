// fbi_convert — between the header's files and Hugging Face / official FBI-LLM model directories.
//
//   fbi_convert import DIR [--ckpt X.ckpt] [--packed X.fbipack]   a downloaded model directory → a float checkpoint
//                                                                   and/or a packed 1-bit model (streaming)
//   fbi_convert export X.ckpt --out DIR [--folded]                 a checkpoint → config.json + model.safetensors
//                                                                   (official layout, or folded dense Ŵ) + fbi_vocab.json
//   fbi_convert logits SRC --tokens 1,2,3 --out F [--packed]       fp32 logits (T×V) of a directory or checkpoint
//   fbi_convert eval SRC --corpus TXT [--context 64] [--windows N] [--packed]
//                                                                   validation cross-entropy (the split train_tiny uses)
// With --packed, --emb and --head choose how the packed model keeps the embedding and the LM head: fp16 (the
// default, as the official evaluation runs them), fp32 or int8 ([H1], [H2]).
// SRC is a model directory or a .ckpt. Errors are one line naming the file, key or flag; nothing half-written stays.
#include "../../fbi_llm.hpp"
#include "../common.hpp"
#include "hf.hpp"

#include <sys/resource.h>

#include <iostream>

using namespace fbi;

static bool is_dir(const std::string& p) { struct stat st; return stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode); }
static double peak_rss_mb() { struct rusage u; getrusage(RUSAGE_SELF, &u); return u.ru_maxrss / 1024.0; }

// A float model (and its vocabulary) from a directory or a checkpoint.
static Model load_float(const std::string& src, std::string& vocab) {
    if (is_dir(src)) {
        interop::ModelDir m = interop::open_model_dir(src);
        vocab = m.vocab;
        return interop::import_model(m);
    }
    Checkpoint ck = load_checkpoint(src);
    vocab = ck.vocab;
    return model_from_checkpoint(ck);
}
static PackedModel load_packed(const std::string& src, const example::Args& a) {
    std::string vocab;
    PackedModel pm = is_dir(src) ? interop::import_packed(interop::open_model_dir(src)) : pack_model(load_float(src, vocab), vocab);
    set_row_formats(pm, a.row_format("emb", RowFormat::F16), a.row_format("head", RowFormat::F16));
    return pm;
}

static void write_floats(const std::string& path, const std::vector<float>& v) {
    auto p = reinterpret_cast<const unsigned char*>(v.data());
    write_file_atomic(path, std::vector<unsigned char>(p, p + 4 * v.size()));
}

int main(int argc, char** argv) try {
    const std::string usage =
        "usage: fbi_convert import DIR [--ckpt X.ckpt] [--packed X.fbipack [--emb fp16] [--head fp16]]\n"
        "       fbi_convert export X.ckpt --out DIR [--folded]\n"
        "       fbi_convert logits SRC --tokens 1,2,3 --out F [--packed [--emb fp16] [--head fp16]]\n"
        "       fbi_convert eval SRC --corpus TXT [--context 64] [--windows N] [--packed [--emb fp16] [--head fp16]]\n"
        "  (SRC: a directory or a .ckpt; --emb, --head: fp16 (default), fp32 or int8)";
    if (argc < 3) { std::fprintf(stderr, "%s\n", usage.c_str()); return 2; }
    const std::string cmd = argv[1], src = argv[2];
    example::Args a = cmd == "import" ? example::Args(argc - 2, argv + 2, usage)  // import: --packed names a file
                                        : example::Args(argc - 2, argv + 2, usage, {"folded", "packed"});
    double t0 = now_seconds();
    if (cmd == "import") {
        a.only({"ckpt", "packed", "emb", "head"});
        std::string ckpt = a.str("ckpt", ""), packed = a.str("packed", "");
        if (ckpt.empty() && packed.empty()) throw std::invalid_argument("import: give --ckpt and/or --packed (what to write)");
        interop::ModelDir m = interop::open_model_dir(src);
        std::printf("%s: %s, %zu tensors, %s\n", src.c_str(), m.fbi ? "FBI-LLM" : "plain LLaMA", m.tensors.size(),
                    describe(interop::config_from_hf(m.config, src + "/config.json", m.fbi)).c_str());
        interop::ImportReport r;
        if (!packed.empty()) {
            PackedModel pm = interop::import_packed(m, &r);
            set_row_formats(pm, a.row_format("emb", RowFormat::F16), a.row_format("head", RowFormat::F16));
            save_packed_model(packed, pm);
            std::printf("wrote %s: %.2f bits per weight; %.1f s, peak RSS %.0f MB\n", packed.c_str(), packed_bits_per_weight(pm),
                        now_seconds() - t0, peak_rss_mb());
        }
        if (!ckpt.empty()) {
            Model model = interop::import_model(m, &r);
            save_checkpoint(ckpt, make_checkpoint(model, m.vocab, 0, nullptr));
            std::printf("wrote %s; %.1f s, peak RSS %.0f MB\n", ckpt.c_str(), now_seconds() - t0, peak_rss_mb());
        }
        if (r.zero_latents)
            std::printf("note: %llu latent weights are exactly 0: torch.sign gives 0 there, the header's sign gives -1 ([F1])\n",
                        (unsigned long long)r.zero_latents);
    } else if (cmd == "export") {
        a.only({"out", "folded"});
        std::string out = a.str("out", "");
        bool folded = a.has("folded");
        if (out.empty()) throw std::invalid_argument("export: --out DIR is required");
        Checkpoint ck = load_checkpoint(src);
        interop::export_hf(model_from_checkpoint(ck), ck.vocab, out, folded);
        std::printf("wrote %s/{config.json, model.safetensors, fbi_vocab.json} (%s layout, %s)\n", out.c_str(),
                    folded ? "folded" : "official", describe(ck.cfg).c_str());
    } else if (cmd == "logits") {
        a.only({"tokens", "out", "packed", "emb", "head"});
        std::string tokens = a.str("tokens", ""), out = a.str("out", "");
        bool packed = a.has("packed");
        if (out.empty()) throw std::invalid_argument("logits: --out FILE is required");
        std::vector<int> t = example::parse_token_ids(tokens);
        std::vector<float> logits;
        if (packed) {  // the packed decoder, token by token
            PackedModel pm = load_packed(src, a);
            KVCache cache;
            cache.reset(pm.cfg.L, pm.cfg.T, pm.cfg.C);
            DecodeScratch s;
            s.resize(pm.cfg);
            std::vector<float> z(pm.cfg.V);
            PackedLinearFn lin(&pm);
            for (int tok : t) {
                decode_step(decode_view(pm), lin, cache, s, tok, z.data(), pm.rope_cos.data(), pm.rope_sin.data());
                logits.insert(logits.end(), z.begin(), z.end());
            }
        } else {
            std::string vocab;
            Model model = load_float(src, vocab);
            model_forward(model, t.data(), 1, int(t.size()));
            logits = model.acts.logits;
        }
        write_floats(out, logits);
        std::printf("wrote %s: %zu × %zu logits\n", out.c_str(), t.size(), logits.size() / t.size());
    } else if (cmd == "eval") {
        a.only({"corpus", "context", "windows", "packed", "emb", "head"});
        std::string corpus = a.str("corpus", "");
        int T = a.integer("context", 64, 1, 1 << 16);
        long windows = a.integer("windows", 0, 0, 1 << 30);
        bool packed = a.has("packed");
        std::string vocab;
        Model model = load_float(src, vocab);
        if (vocab.empty()) throw std::invalid_argument("eval: '" + src + "' has no character vocabulary (fbi_vocab.json)");
        example::CharTokenizer tok(vocab);
        std::vector<int> all = tok.encode(example::load_corpus(corpus, T + 1, T)), train, val;
        example::split_90_10(all, train, val);
        double ce;
        if (packed) {
            PackedModel pm = pack_model(model, vocab);
            set_row_formats(pm, a.row_format("emb", RowFormat::F16), a.row_format("head", RowFormat::F16));
            ce = evaluate_decoder(decode_view(pm), PackedLinearFn(&pm), pm.rope_cos.data(), pm.rope_sin.data(), val, T, windows);
        } else {
            ce = evaluate(model, val, 16, T, windows);
        }
        std::printf("val_ce %.9f\n", ce);
    } else {
        throw std::invalid_argument("unknown command '" + cmd + "' (import, export, logits, eval)");
    }
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "fbi_convert: %s\n", e.what());
    return 1;
}
