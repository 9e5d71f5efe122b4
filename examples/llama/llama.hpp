// examples/llama/llama.hpp — what generate and perplexity share to run a released FBI-LLM (or any model directory
// in the Hugging Face LLaMA layout) through the header: the LLaMA-2 sentencepiece tokenizer, opening a model as the
// dense float model or as the packed 1-bit model (imported once and cached), and memory figures.
//
// The header stays tokenizer-agnostic (token ids in, logits out); the tokenizer lives here, through Debian's
// libsentencepiece-dev. LLaMA-2's tokenizer.model: 32000 pieces, <unk> = 0, <s> = 1 (BOS), </s> = 2 (EOS).
//
// The packed cache. The first packed run imports the directory's weights, packs every block linear to 1 bit
// (interop::import_packed, one tensor in memory at a time) and writes DIR/fbi_llm.fbipack; when DIR is not writable,
// $XDG_CACHE_HOME/fbi_llm/ (else ~/.cache/fbi_llm/) holds it under the directory's name. --cache FILE chooses.
// The file records what it was made from (each weight file's size and modification time, and config.json's): a
// changed source makes a new one. Written atomically, so an interrupted import leaves no half-written cache.
#pragma once
#include "../../fbi_llm.hpp"
#include "../interop/hf.hpp"

#include <sentencepiece_processor.h>
#include <sys/stat.h>

#include <fstream>
#include <sstream>

namespace llama {

// ---- tokenizer ---------------------------------------------------------------------------------------------------------
struct Tokenizer {
    sentencepiece::SentencePieceProcessor sp;
    std::string path;
    int bos = 1, eos = 2;
    // Loads `file` and checks it is a vocabulary for a model with V token ids.
    void load(const std::string& file, int V) {
        path = file;
        struct stat st;
        if (stat(file.c_str(), &st) != 0)
            throw std::invalid_argument(file + ": no tokenizer here (give --tokenizer FILE: the model's sentencepiece tokenizer.model)");
        if (st.st_size > (256L << 20)) throw std::invalid_argument(file + ": " + std::to_string(st.st_size) + " bytes is not a tokenizer.model");
        auto status = sp.Load(file);
        if (!status.ok()) throw std::invalid_argument(file + ": not a sentencepiece model (" + status.ToString() + ")");
        if (sp.GetPieceSize() != V)
            throw std::invalid_argument(file + ": a tokenizer of " + std::to_string(sp.GetPieceSize()) +
                                        " pieces, the model's config.json has vocab_size " + std::to_string(V));
        bos = sp.bos_id(), eos = sp.eos_id();
    }
    // BOS, then the text's pieces: what the official evaluation's LlamaTokenizer gives for one string.
    std::vector<int> encode(const std::string& text, bool add_bos = true) const {
        std::vector<int> ids;
        auto status = sp.Encode(text, &ids);
        if (!status.ok()) throw std::runtime_error(path + ": cannot tokenize (" + status.ToString() + ")");
        if (add_bos && bos >= 0) ids.insert(ids.begin(), bos);
        return ids;
    }
    std::string decode(const std::vector<int>& ids) const {
        std::string text;
        auto status = sp.Decode(ids, &text);
        if (!status.ok()) throw std::runtime_error(path + ": cannot decode (" + status.ToString() + ")");
        return text;
    }
};

// ---- text files ----------------------------------------------------------------------------------------------------
inline bool valid_utf8(const std::string& s, size_t& bad_at) {
    for (size_t i = 0; i < s.size();) {
        unsigned char c = s[i];
        int n = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : -1;
        if (n < 0 || i + n >= s.size() + (n == 0)) { bad_at = i; return false; }
        for (int k = 1; k <= n; k++)
            if ((static_cast<unsigned char>(s[i + k]) >> 6) != 2) { bad_at = i; return false; }
        i += n + 1;
    }
    return true;
}
inline std::string read_text(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw std::invalid_argument(path + ": cannot open the text file");
    std::stringstream ss;
    ss << f.rdbuf();
    std::string text = ss.str();
    size_t bad = 0;
    if (text.empty()) throw std::invalid_argument(path + ": the text file is empty");
    if (!valid_utf8(text, bad)) throw std::invalid_argument(path + ": not UTF-8 text (invalid byte at offset " + std::to_string(bad) + ")");
    return text;
}

// ---- memory --------------------------------------------------------------------------------------------------------
// Resident set now and its peak (VmRSS, VmHWM of /proc/self/status), in MiB; 0 where /proc is absent.
inline double status_mib(const char* key) {
    std::ifstream f("/proc/self/status");
    std::string line;
    while (std::getline(f, line))
        if (line.compare(0, std::strlen(key), key) == 0) return std::atof(line.c_str() + std::strlen(key)) / 1024.0;
    return 0;
}
inline std::string memory_line() {
    char buf[96];
    std::snprintf(buf, sizeof buf, "RSS %.0f MiB (peak %.0f MiB)", status_mib("VmRSS:"), status_mib("VmHWM:"));
    return buf;
}

// ---- the model, float or packed ------------------------------------------------------------------------------------
struct Loaded {
    fbi::Config cfg;
    std::unique_ptr<fbi::Model> model;       // --float
    std::unique_ptr<fbi::PackedModel> pm;    // packed
    fbi::DecodeView view;
    const float* rope_cos = nullptr;
    const float* rope_sin = nullptr;
    std::string cache_path, how;  // the packed file, and how it was had ("reused", "made in 12.3 s")
};

inline bool is_dir(const std::string& p) { struct stat st; return stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode); }
inline bool writable_dir(const std::string& d) { return access(d.c_str(), W_OK) == 0; }

// What the cache was made from: config.json and every weight file, with sizes and modification times.
inline std::string source_fingerprint(const interop::ModelDir& m) {
    std::set<std::string> files = {m.dir + "/config.json"};
    for (const auto& kv : m.tensors) files.insert(kv.second.file);
    std::string f = "fbi_llm packed cache of";
    for (const std::string& p : files) {
        struct stat st;
        if (stat(p.c_str(), &st) != 0) throw std::runtime_error(p + ": vanished while opening the model");
        f += " " + p.substr(p.rfind('/') + 1) + ":" + std::to_string(st.st_size) + ":" + std::to_string(long(st.st_mtime));
    }
    return f;
}
inline std::string default_cache(const std::string& dir) {
    if (writable_dir(dir)) return dir + "/fbi_llm.fbipack";
    const char* xdg = std::getenv("XDG_CACHE_HOME");
    const char* home = std::getenv("HOME");
    std::string base = xdg && *xdg ? xdg : std::string(home ? home : ".") + "/.cache";
    std::string d = base + "/fbi_llm";
    mkdir(base.c_str(), 0755);
    mkdir(d.c_str(), 0755);
    std::string name = dir;
    while (name.size() > 1 && name.back() == '/') name.pop_back();
    name = name.substr(name.rfind('/') + 1);
    return d + "/" + name + ".fbipack";
}

// The packed model of DIR: the cache when it was made from these very files, else imported, packed and cached
// first. Always read back from the cache file, parsed as it is read; fast_only keeps only the fast kernel's layout
// of the masks (drop_portable_masks: a 7B model's 1-bit weights take 0.8 GB instead of 1.6 GB).
inline void open_packed(Loaded& L, const interop::ModelDir& m, const std::string& cache, bool fast_only) {
    std::string want = source_fingerprint(m) + " (E, H fp16)";  // caches packed before E and H were fp16 are made again
    L.cache_path = cache.empty() ? default_cache(m.dir) : cache;
    struct stat st;
    if (stat(L.cache_path.c_str(), &st) == 0) {
        try {
            fbi::PackedModel pm = fbi::load_packed_model(L.cache_path, fast_only);
            if (pm.vocab == want) {
                L.pm = std::make_unique<fbi::PackedModel>(std::move(pm));
                L.how = "reused";
                return;
            }
            std::fprintf(stderr, "cache %s was made from other files: packing again\n", L.cache_path.c_str());
        } catch (const std::exception& e) {
            std::fprintf(stderr, "cache unusable (%s): packing again\n", e.what());
        }
    }
    double t0 = fbi::now_seconds();
    std::fprintf(stderr, "importing %s and packing it to 1 bit per block weight (once) ...\n", m.dir.c_str());
    {
        fbi::PackedModel pm = interop::import_packed(m, nullptr, /*fast_layout=*/false);
        fbi::set_row_formats(pm, fbi::RowFormat::F16, fbi::RowFormat::F16);  // [H1]: as the official evaluation runs
        pm.vocab = want;  // the header's opaque vocabulary bytes hold the fingerprint (the tokenizer is tokenizer.model)
        fbi::save_packed_model(L.cache_path, pm);
    }
    char buf[96];
    std::snprintf(buf, sizeof buf, "made in %.1f s, peak RSS %.0f MiB", fbi::now_seconds() - t0, status_mib("VmHWM:"));
    L.how = buf;
    L.pm = std::make_unique<fbi::PackedModel>(fbi::load_packed_model(L.cache_path, fast_only));
}

inline Loaded open_model(const std::string& dir, bool dense, const std::string& cache, bool fast_only) {
    if (!is_dir(dir)) throw std::invalid_argument(dir + ": not a directory (--model takes a downloaded model directory)");
    interop::ModelDir m = interop::open_model_dir(dir);
    Loaded L;
    if (dense) {
        L.model = std::make_unique<fbi::Model>(interop::import_model(m, nullptr, /*with_grads=*/false));
        fbi::quantize_all(*L.model);
        L.cfg = L.model->cfg;
        L.view = fbi::decode_view(*L.model);
        L.rope_cos = L.model->rope_cos.data(), L.rope_sin = L.model->rope_sin.data();
    } else {
        open_packed(L, m, cache, fast_only);
        L.cfg = L.pm->cfg;
        L.view = fbi::decode_view(*L.pm);
        L.rope_cos = L.pm->rope_cos.data(), L.rope_sin = L.pm->rope_sin.data();
    }
    return L;
}

inline fbi::Kernel kernel_from_name(const std::string& s) {
    if (s == "fast") return fbi::Kernel::Fast;
    if (s == "popcount") return fbi::Kernel::Popcount;
    if (s == "reference") return fbi::Kernel::Reference;
    throw std::invalid_argument("--kernel '" + s + "': fast, popcount or reference");
}

// n tokens through the model's prefill (rows: "kernels" = the 1-bit kernels row by row, "unpack" = fp32 GEMM on
// Ŵ unpacked from the bits; the float model always uses its GEMM); logits of the last `logit_rows` rows.
inline void run_prefill(const Loaded& L, fbi::KVCache& cache, fbi::PrefillScratch& s, const int* tokens, int n,
                        float* logits, int logit_rows, fbi::Kernel kernel, const std::string& rows) {
    if (L.model)
        return fbi::prefill(L.view, fbi::FloatRows{L.model.get(), {}}, cache, s, tokens, n, logits, logit_rows, L.rope_cos, L.rope_sin);
    if (rows == "unpack")
        return fbi::prefill(L.view, fbi::UnpackedRows{L.pm.get(), {}}, cache, s, tokens, n, logits, logit_rows, L.rope_cos, L.rope_sin);
    fbi::prefill(L.view, fbi::PackedRows{L.pm.get(), kernel}, cache, s, tokens, n, logits, logit_rows, L.rope_cos, L.rope_sin);
}

// One token through the decoder (float or packed), with its scratch kept between calls.
struct Stepper {
    const Loaded& L;
    fbi::FloatLinear dense;
    fbi::PackedLinearFn packed;
    fbi::DecodeScratch s;
    Stepper(const Loaded& l, fbi::Kernel k) : L(l), dense(l.model.get()), packed(l.pm.get(), k) { s.resize(l.cfg); }
    void step(fbi::KVCache& cache, int token, float* logits) {
        if (L.model) fbi::decode_step(L.view, dense, cache, s, token, logits, L.rope_cos, L.rope_sin);
        else fbi::decode_step(L.view, packed, cache, s, token, logits, L.rope_cos, L.rope_sin);
    }
};

}  // namespace llama
