// Shared by the examples: a character tokenizer, corpus loading with clear errors, tiny argument parsing,
// progress lines and CSV logs. The header (fbi_llm.hpp) knows nothing of text; all of that lives here.
#pragma once
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <cmath>
#include <cstdlib>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "../fbi_llm.hpp"
#include "kernels/fast_kernels.hpp"  // Kernel::Fast = the table-lookup kernel (AVX2 where the flags allow)
#include "quantizers/b158.hpp"       // --student-quant b1.58
#include "quantizers/codebook.hpp"   // --scale-bits 1..8
#include "quantizers/db.hpp"         // --student-quant db, --student-loss dad

namespace example {

// ---- UTF-8: how a corpus is recognised as text, and how a character is shown in an error --------------------
// Length of the well-formed UTF-8 sequence starting at text[i] (1..4), or 0 if there is none (RFC 3629:
// no overlong forms, no surrogates, nothing above U+10FFFF).
inline size_t utf8_length(const std::string& text, size_t i) {
    auto at = [&](size_t k) { return k < text.size() ? (unsigned char)text[k] : 0u; };
    unsigned c = at(i);
    auto cont = [&](size_t k, unsigned lo = 0x80, unsigned hi = 0xBF) { return at(k) >= lo && at(k) <= hi; };
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) return cont(i + 1) ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        unsigned lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
        return cont(i + 1, lo, hi) && cont(i + 2) ? 3 : 0;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        unsigned lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
        return cont(i + 1, lo, hi) && cont(i + 2) && cont(i + 3) ? 4 : 0;
    }
    return 0;
}
inline std::string hex_bytes(const std::string& s) {
    std::string out;
    for (unsigned char c : s) {
        char b[4];
        std::snprintf(b, sizeof b, "%s%02x", out.empty() ? "" : " ", c);
        out += b;
    }
    return out;
}

// ---- character tokenizer: the sorted set of characters of the corpus (TinyShakespeare: 65 of them) ---------
struct CharTokenizer {
    std::string chars;  // id → character; stored in checkpoints as the opaque "vocab"
    int id_of[256];

    explicit CharTokenizer(const std::string& vocab = "") { set(vocab); }
    void set(const std::string& vocab) {
        chars = vocab;
        std::fill(id_of, id_of + 256, -1);
        for (size_t i = 0; i < chars.size(); i++) id_of[(unsigned char)chars[i]] = int(i);
    }
    static CharTokenizer from_text(const std::string& text) {
        bool seen[256] = {false};
        for (unsigned char c : text) seen[c] = true;
        std::string vocab;
        for (int c = 0; c < 256; c++)
            if (seen[c]) vocab.push_back(char(c));
        return CharTokenizer(vocab);
    }
    int size() const { return int(chars.size()); }
    std::vector<int> encode(const std::string& text) const {
        std::vector<int> ids(text.size());
        for (size_t i = 0; i < text.size(); i++) {
            int id = id_of[(unsigned char)text[i]];
            if (id < 0) {
                unsigned char c = (unsigned char)text[i];
                char shown[64];
                size_t n = c >= 0x80 ? utf8_length(text, i) : 0;
                if (c >= 32 && c < 127) std::snprintf(shown, sizeof shown, "'%c'", c);
                else if (n > 1)  // a multi-byte UTF-8 character: the tokenizer sees its bytes one by one
                    std::snprintf(shown, sizeof shown, "'%s' (UTF-8 bytes %s)", text.substr(i, n).c_str(),
                                  hex_bytes(text.substr(i, n)).c_str());
                else std::snprintf(shown, sizeof shown, "byte 0x%02x", c);
                throw std::invalid_argument(std::string("character ") + shown + " at position " + std::to_string(i) +
                                            " is not in the model's vocabulary of " + std::to_string(size()) +
                                            " characters");
            }
            ids[i] = id;
        }
        return ids;
    }
    std::string decode(const std::vector<int>& ids) const {
        std::string s;
        for (int id : ids) s.push_back(chars.at(size_t(id)));
        return s;
    }
};

// ---- the corpus ---------------------------------------------------------------------------------------------
// Reads a text file; refuses a missing, unreadable, empty, binary or too-short one with a message that says
// which, and where. Text means UTF-8 without NUL bytes (ASCII is UTF-8). `min_length` characters are needed;
// `context` (T), when given, lets the message say when the file is shorter than even one window of T+1.
// "1,450,7483" → token ids, each in [0, V) (V = 0: any id up to 2^30); a one-line error names --tokens.
inline std::vector<int> parse_token_ids(const std::string& s, long V = 0) {
    std::vector<int> t;
    size_t at = 0;
    while (at <= s.size() && !s.empty()) {
        size_t end = s.find(',', at);
        std::string x = s.substr(at, end == std::string::npos ? std::string::npos : end - at);
        char* e = nullptr;
        long v = std::strtol(x.c_str(), &e, 10);
        if (x.empty() || *e || v < 0 || v > (1L << 30) || (V > 0 && v >= V))
            throw std::invalid_argument("--tokens: '" + x + "' is not a token id" +
                                        (V > 0 ? " in [0, " + std::to_string(V) + ")" : std::string()));
        t.push_back(int(v));
        if (end == std::string::npos) break;
        at = end + 1;
    }
    if (t.empty()) throw std::invalid_argument("--tokens: give at least one token id (1,450,7483)");
    return t;
}

// A subword vocabulary from a token file of examples/llama/spm_tokenize (make train-tiny TOKENIZER=bpe): each id's
// surface bytes, and the corpus already encoded. train_tiny needs no sentencepiece: decoding is concatenation.
//   "FBITOKS\0" | u32 version 1 | u32 V | V × (u32 length, bytes) | u64 n | n × u32 ids | u64 FNV-1a of all before
struct PieceTokenizer {
    std::vector<std::string> pieces;
    int size() const { return int(pieces.size()); }
    std::string decode(const std::vector<int>& ids) const {
        std::string t;
        for (int id : ids) t += pieces[size_t(id)];
        return t;
    }
    // The vocabulary as checkpoints store it (opaque to the header): "pieces\n" then length-prefixed surfaces.
    std::string blob() const {
        std::string b = "fbi_llm pieces v1\n";
        for (const std::string& p : pieces) b += std::to_string(p.size()) + ":" + p;
        return b;
    }
    // The id whose surface is exactly `s` (a sample's prompt), or 0.
    int id_of(const std::string& s) const {
        for (size_t i = 0; i < pieces.size(); i++)
            if (pieces[i] == s) return int(i);
        return 0;
    }
};
inline std::vector<int> load_token_file(const std::string& path, PieceTokenizer& tok) {
    std::vector<unsigned char> bytes = fbi::read_file_bytes(path);
    fbi::ByteReader r(bytes, 0, "token file '" + path + "'");
    char magic[8];
    r.raw(magic, 8);
    if (std::memcmp(magic, "FBITOKS", 8) != 0) throw std::invalid_argument(r.what + ": not a token file (make it with build/spm_tokenize)");
    if (r.get<uint32_t>() != 1) throw std::invalid_argument(r.what + ": unknown version");
    if (bytes.size() < 24 || !r.checksum_ok()) throw std::invalid_argument(r.what + ": truncated or corrupted (checksum mismatch)");
    uint32_t V = r.get<uint32_t>();
    if (V < 1 || V > (1u << 20)) throw std::invalid_argument(r.what + ": vocabulary of " + std::to_string(V) + " pieces is implausible");
    tok.pieces.assign(V, "");
    for (std::string& p : tok.pieces) {
        uint32_t n = r.get<uint32_t>();
        if (n > 1024 || n > bytes.size() - r.at) throw std::invalid_argument(r.what + ": a piece of " + std::to_string(n) + " bytes (corrupted)");
        p.resize(n);
        r.raw(&p[0], n);
    }
    uint64_t n = r.get<uint64_t>();
    if (n != (bytes.size() - r.at - 8) / 4 || (bytes.size() - r.at - 8) % 4)
        throw std::invalid_argument(r.what + ": " + std::to_string(n) + " ids do not match the file's size");
    std::vector<int> ids(n);
    for (int& id : ids) {
        uint32_t v = r.get<uint32_t>();
        if (v >= V) throw std::invalid_argument(r.what + ": id " + std::to_string(v) + " outside the vocabulary of " + std::to_string(V));
        id = int(v);
    }
    return ids;
}

inline std::string load_corpus(const std::string& path, int min_length, int context = 0) {
    const std::string name = "corpus '" + path + "'";
    struct stat st;
    if (stat(path.c_str(), &st) != 0) {
        int err = errno;
        throw std::runtime_error(name + (err == ENOENT ? " not found" : std::string(": ") + std::strerror(err)) +
                                 " (run `make data`, or set TINYSHAKESPEARE=/path)");
    }
    if (S_ISDIR(st.st_mode)) throw std::runtime_error(name + " is a directory, not a text file");
    std::ifstream f(path, std::ios::binary);
    if (!f) throw std::runtime_error("cannot open " + name + ": " + std::strerror(errno));
    std::stringstream ss;
    ss << f.rdbuf();
    std::string text = ss.str();
    if (text.empty()) throw std::runtime_error(name + " is empty");
    // where a byte sits, for the messages below: "byte 1234 (line 56)"
    auto where = [&](size_t i) {
        return "byte " + std::to_string(i) + " (line " +
               std::to_string(1 + std::count(text.begin(), text.begin() + long(i), '\n')) + ")";
    };
    size_t nul = text.find('\0');
    if (nul != std::string::npos)
        throw std::runtime_error(name + " is not text: it contains NUL bytes (the first at " + where(nul) + ")");
    for (size_t i = 0; i < text.size();) {
        size_t n = utf8_length(text, i);
        if (n == 0)
            throw std::runtime_error(name + " is not UTF-8 text: invalid byte 0x" + hex_bytes(text.substr(i, 1)) +
                                     " at " + where(i) + " (convert it, e.g. iconv -f latin1 -t utf-8)");
        i += n;
    }
    if (context > 0 && text.size() < size_t(context) + 1)
        throw std::runtime_error(name + " has " + std::to_string(text.size()) +
                                 " characters, shorter than one context window (T+1 = " + std::to_string(context + 1) +
                                 " characters for --context " + std::to_string(context) + ")");
    if (text.size() < size_t(min_length))
        throw std::runtime_error(name + " has " + std::to_string(text.size()) + " characters, fewer than the " +
                                 std::to_string(min_length) + " needed" +
                                 (context > 0 ? " for --context " + std::to_string(context) : std::string()) +
                                 " (the last 10% is the validation split; both splits must hold whole windows)");
    return text;
}

// 90% train, 10% validation: the first 90% of the characters, then the rest (as nanoGPT does).
inline void split_90_10(const std::vector<int>& all, std::vector<int>& train, std::vector<int>& val) {
    size_t n = all.size() * 9 / 10;
    train.assign(all.begin(), all.begin() + n);
    val.assign(all.begin() + n, all.end());
}

// ---- arguments: --key value (and --switch), with defaults, ranges and a usage message ----------------------------
// Every getter checks its value before any work starts, and an error names the flag, what it must be and what it got.
struct Args {
    std::map<std::string, std::string> kv;
    Args(int argc, char** argv, const std::string& usage, std::initializer_list<const char*> switches = {}) {
        for (int i = 1; i < argc; i++) {
            std::string a = argv[i];
            if (a == "-h" || a == "--help") { std::printf("%s\n", usage.c_str()); std::exit(0); }
            bool is_switch = false;  // a switch takes no value: --fresh
            for (const char* sw : switches) is_switch = is_switch || a == std::string("--") + sw;
            if (is_switch) { kv[a.substr(2)] = "1"; continue; }
            if (a.rfind("--", 0) != 0 || i + 1 >= argc) {
                std::fprintf(stderr, "bad argument '%s'\n%s\n", a.c_str(), usage.c_str());
                std::exit(2);
            }
            kv[a.substr(2)] = argv[++i];
        }
    }
    // Every flag given must be one of `known`: a misspelt or removed flag is an error, not silently ignored.
    void only(std::initializer_list<const char*> known) const {
        for (const auto& given : kv) {
            bool ok = false;
            for (const char* n : known) ok = ok || given.first == n;
            if (!ok) throw std::invalid_argument("unknown flag --" + given.first + " (--help lists the flags)");
        }
    }
    bool has(const std::string& k) const { return kv.count(k) != 0; }
    std::string str(const std::string& k, const std::string& def) const { auto it = kv.find(k); return it == kv.end() ? def : it->second; }
    double num(const std::string& k, double def) const {
        auto it = kv.find(k);
        if (it == kv.end()) return def;
        try { size_t used; double v = std::stod(it->second, &used); if (used == it->second.size()) return v; } catch (...) {}
        throw std::invalid_argument("--" + k + " expects a number, got '" + it->second + "'");
    }
    // A finite number >= lo (> lo when `above`): learning rates (> 0), floors and weight decay (>= 0), temperatures.
    double real(const std::string& k, double def, double lo, bool above = false) const {
        double v = num(k, def);
        if (!std::isfinite(v) || v < lo || (above && v == lo))
            throw std::invalid_argument("--" + k + " must be a finite number " + (above ? "> " : ">= ") + shown(lo) +
                                        ", got '" + str(k, "") + "'");
        return v;
    }
    // A whole number in [lo, hi]: sizes (>= 1), steps and intervals (>= 0).
    int integer(const std::string& k, int def, long lo, long hi) const {
        double v = num(k, def);
        if (!(v >= double(lo) && v <= double(hi)) || v != std::floor(v))
            throw std::invalid_argument("--" + k + " must be a whole number from " + std::to_string(lo) + " to " +
                                        std::to_string(hi) + ", got '" + str(k, "") + "'");
        return int(v);
    }
    // fp32, fp16 or int8: how a packed file stores the embedding and the LM head ([H1], [H2]).
    fbi::RowFormat row_format(const std::string& k, fbi::RowFormat def) const {
        const std::string v = str(k, fbi::row_format_name(def));
        for (fbi::RowFormat f : {fbi::RowFormat::F32, fbi::RowFormat::F16, fbi::RowFormat::I8})
            if (v == fbi::row_format_name(f)) return f;
        throw std::invalid_argument("--" + k + " must be fp32, fp16 or int8, got '" + v + "'");
    }
    // An unsigned 64-bit integer written in decimal digits (seeds: every value is exact, none wraps around).
    uint64_t u64(const std::string& k, uint64_t def) const {
        auto it = kv.find(k);
        if (it == kv.end()) return def;
        return parse_u64(it->second, "--" + k);
    }
    static std::string shown(double x) { char b[32]; std::snprintf(b, sizeof b, "%g", x); return b; }
    static uint64_t parse_u64(const std::string& s, const std::string& name) {
        bool digits = !s.empty() && s.size() <= 20 && s.find_first_not_of("0123456789") == std::string::npos;
        errno = 0;
        unsigned long long v = digits ? std::strtoull(s.c_str(), nullptr, 10) : 0;
        if (!digits || errno == ERANGE)
            throw std::invalid_argument(name + " must be a whole number from 0 to 18446744073709551615, got '" + s + "'");
        return uint64_t(v);
    }
};

// A positional argument of a benchmark or notebook program (argv[i]), checked like a flag: a whole number in [lo, hi].
inline long positional(int argc, char** argv, int i, const char* name, long def, long lo, long hi) {
    if (i >= argc) return def;
    std::string s = argv[i];
    char* end = nullptr;
    errno = 0;
    long v = std::strtol(s.c_str(), &end, 10);
    if (s.empty() || *end != '\0' || errno == ERANGE || v < lo || v > hi)
        throw std::invalid_argument(std::string("argument ") + std::to_string(i) + " (" + name + ") must be a whole number from " +
                                    std::to_string(lo) + " to " + std::to_string(hi) + ", got '" + s + "'");
    return v;
}

// OMP_NUM_THREADS, when set, must be a thread count: OpenMP itself ignores a malformed value without a word.
inline void check_thread_env() {
    const char* env = std::getenv("OMP_NUM_THREADS");
    if (!env) return;
    std::string s = env;
    std::string first = s.substr(0, s.find(','));  // OpenMP also takes a list per nesting level: "2,1"
    bool ok = !first.empty() && first.size() <= 4 && s.find_first_not_of("0123456789,") == std::string::npos &&
              std::atoi(first.c_str()) >= 1;
    if (!ok)
        throw std::invalid_argument("OMP_NUM_THREADS='" + s + "' is not a thread count (a whole number from 1, e.g. "
                                    "OMP_NUM_THREADS=2)");
}

// ---- memory: what a training run holds, estimated before anything is allocated -----------------------------------
// Floats held by one model of the header (fbi::ModelT<float> after ensure_activations(model, B, T)): parameters,
// their gradients, Ŵ and ∂L/∂Ŵ of the block linears, the RoPE tables and every activation buffer of a B×T batch.
// tests/test_train.cpp checks these counts against a real model's vectors.
struct ModelFloats {
    double params = 0, weights = 0, activations = 0;  // params: P; weights: grads + Ŵ + ∂L/∂Ŵ + RoPE
    double total() const { return params + weights + activations; }
};
inline ModelFloats model_floats(const fbi::Config& c, int B, int T) {
    ModelFloats f;
    const fbi::Quantizer& q = fbi::quantizer(c.quant);
    double eff = 0, scales = 0;
    for (int id = 0; id < fbi::N_LINEAR; id++) {
        int m, n;
        fbi::linear_shape(c, id, m, n);
        eff += double(m) * n;
        for (int k = 0; k < 2; k++) scales += fbi::scale_length(q, k, m, n);
    }
    f.params = 2.0 * c.V * c.C + c.C + double(c.L) * (2.0 * c.C + eff + scales);
    f.weights = f.params + 2.0 * c.L * eff + double(c.T) * (c.C / c.NH);
    double N = double(B) * T, NC = N * c.C, NF = N * c.F, NV = N * c.V;
    double per_block = 2 * N + 7 * NC + 4 * NF + double(B) * c.NH * T * T;
    if (q.f32.input) per_block += 3 * NC + NF;  // x̃ of the four linear inputs (b1.58)
    f.activations = double(c.L + 1) * NC + c.L * per_block + NC + N + 4 * NV + 6 * NC + 3 * NF;
    return f;
}
// Bytes of a distillation run: the student with AdamW's two moments, the frozen teacher, and a checkpoint's
// buffers while it is written (parameters and moments, copied twice: Checkpoint, then its bytes).
inline double training_bytes(const fbi::Config& student, const fbi::Config* teacher, int B, int T) {
    ModelFloats s = model_floats(student, B, T);
    double floats = s.total() + 2 * s.params + 2 * 3 * s.params;
    if (teacher) floats += model_floats(*teacher, B, T).total();
    return 4 * floats;
}
// Physical memory, or the container's limit when that is lower (cgroup v2 memory.max); 0 if unknown.
inline double machine_memory_bytes() {
    double bytes = 0;
#if defined(_SC_PHYS_PAGES) && defined(_SC_PAGESIZE)
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0) bytes = double(pages) * double(page);
#endif
    std::ifstream f("/sys/fs/cgroup/memory.max");
    std::string limit;
    if (f >> limit && limit != "max") {
        double l = std::atof(limit.c_str());
        if (l > 0 && (bytes == 0 || l < bytes)) bytes = l;
    }
    return bytes;
}
inline std::string fmt_bytes(double b) {
    const char* unit[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    int u = 0;
    while (b >= 1024 && u < 5) b /= 1024, u++;
    char buf[32];
    std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", b, unit[u]);
    return buf;
}

// mkdir -p: create every missing directory along `path`; a clear error if one cannot be made.
inline void make_dirs(const std::string& path) {
    for (size_t i = 1; i <= path.size(); i++) {
        if (i < path.size() && path[i] != '/') continue;
        std::string part = path.substr(0, i);
        struct stat st;
        if (stat(part.c_str(), &st) == 0) {
            if (!S_ISDIR(st.st_mode)) throw std::runtime_error("output path '" + part + "' exists and is not a directory");
        } else if (mkdir(part.c_str(), 0755) != 0) {
            throw std::runtime_error("cannot create output directory '" + part + "': " + std::strerror(errno));
        }
    }
}

// Before a long run: can files be created in `dir`? (A directory can exist and still refuse them: /sys, a
// read-only mount, no permission.) Creates and removes one empty probe file; a clear error otherwise.
inline void check_writable_dir(const std::string& dir) {
    std::string probe = dir + "/.fbi_write_test." + std::to_string(long(getpid()));
    FILE* f = std::fopen(probe.c_str(), "wb");
    if (!f) throw std::runtime_error("output directory '" + dir + "' is not writable: " + std::strerror(errno));
    std::fclose(f);
    std::remove(probe.c_str());
}

// ---- interrupted runs: stop at a step's end on Ctrl-C, clean up after a kill, one writer per directory ----------
// SIGINT/SIGTERM while a training loop runs (stop_deferred = 1) set stop_requested: the loop finishes its step,
// writes a checkpoint and exits (train_tiny). A second signal, or one outside a training loop, quits at once;
// what was written atomically stays whole, and a temp file a write leaves behind is removed by the next run.
inline volatile std::sig_atomic_t stop_requested = 0;  // the signal number, 0 = none
inline volatile std::sig_atomic_t stop_deferred = 0;
inline void on_stop_signal(int sig) {
    if (stop_deferred && !stop_requested) {
        stop_requested = sig;
        const char msg[] = "\ninterrupted: stopping at the end of this step to write a checkpoint (again to quit at once)\n";
        ssize_t ignored = write(2, msg, sizeof msg - 1);
        (void)ignored;
        return;
    }
    const char msg[] = "\ninterrupted: quitting at once; every checkpoint already written is kept, and running the same "
                       "command again continues from the newest\n";
    ssize_t ignored = write(2, msg, sizeof msg - 1);
    (void)ignored;
    _exit(128 + sig);
}
inline void install_stop_handlers() {
    struct sigaction sa;
    std::memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
}

// fbi::write_file_atomic writes PATH.tmp.PID and renames it; a process killed in between leaves that temp file.
// Remove the ones in `dir` whose process is gone (the target file itself is the old, whole one, or absent).
inline void remove_stale_partial_writes(const std::string& dir) {
    DIR* d = opendir(dir.c_str());
    if (!d) return;
    std::vector<std::string> stale;
    while (dirent* e = readdir(d)) {
        std::string name = e->d_name;
        size_t at = name.rfind(".tmp.");
        if (at == std::string::npos || at + 5 >= name.size()) continue;
        std::string pid = name.substr(at + 5), target = name.substr(0, at);
        if (pid.find_first_not_of("0123456789") != std::string::npos || pid.size() > 9) continue;
        bool ours = false;  // only the files the examples write: checkpoints, records, logs, packed files, summaries
        for (const char* ext : {".ckpt", ".meta", ".csv", ".fbipack", ".json"})
            ours = ours || (target.size() > std::strlen(ext) && target.compare(target.size() - std::strlen(ext), std::string::npos, ext) == 0);
        if (!ours) continue;
        long p = std::atol(pid.c_str());
        if (p != long(getpid()) && kill(pid_t(p), 0) != 0 && errno == ESRCH) stale.push_back(name);
    }
    closedir(d);
    for (const std::string& name : stale) {
        std::remove((dir + "/" + name).c_str());
        std::printf("removed %s/%s: a partial write of an interrupted run (the file it was replacing is whole)\n",
                    dir.c_str(), name.c_str());
    }
}

// One program at a time may write into `dir`: two runs resuming the same checkpoints would spoil each other's.
// The lock (flock on DIR/.lock) is released when the process ends, however it ends.
inline void lock_output_dir(const std::string& dir) {
    std::string path = dir + "/.lock";
    int fd = open(path.c_str(), O_RDWR | O_CREAT, 0644);
    if (fd < 0) throw std::runtime_error("cannot create the lock file '" + path + "': " + std::strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK)
            throw std::runtime_error("another program is writing into '" + dir + "' (it holds " + path +
                                     "): wait for it to finish, or give another --out");
        std::printf("note: cannot lock '%s' (%s); do not run two programs into this --out\n", path.c_str(),
                    std::strerror(errno));  // a file system without locks (some network mounts)
    }
    // fd stays open: the lock lasts as long as this process
}

// Test hook (an environment variable, not a flag): FBI_TEST_KILL=RUN:EVENT:STEP makes the program kill itself at
// one point, to test that the next run resumes from what is on disk. RUN is teacher, student, pack or summary;
// EVENT is step (SIGKILL after step STEP), write (SIGKILL halfway through writing the file after step STEP:
// its temp file holds half the bytes, exactly as a kill during fbi::write_file_atomic leaves it), meta (SIGKILL
// between a run's first checkpoint and its record), sigint or sigint2 (raise SIGINT once or twice after step STEP).
struct TestKill {
    std::string run, event;
    long step = -1;
    static TestKill from_env() {
        TestKill k;
        const char* env = std::getenv("FBI_TEST_KILL");
        if (!env) return k;
        std::string s = env;
        size_t a = s.find(':'), b = a == std::string::npos ? a : s.find(':', a + 1);
        if (b != std::string::npos) {
            k.run = s.substr(0, a), k.event = s.substr(a + 1, b - a - 1);
            std::string n = s.substr(b + 1);
            if (!n.empty() && n.find_first_not_of("0123456789") == std::string::npos) k.step = std::atol(n.c_str());
        }
        bool ok = (k.run == "teacher" || k.run == "student" || k.run == "pack" || k.run == "summary") && k.step >= 0 &&
                  (k.event == "step" || k.event == "write" || k.event == "meta" || k.event == "sigint" || k.event == "sigint2");
        if (!ok) throw std::invalid_argument("FBI_TEST_KILL expects RUN:EVENT:STEP (RUN teacher|student|pack|summary, "
                                             "EVENT step|write|meta|sigint|sigint2), got '" + s + "'");
        return k;
    }
    bool at(const std::string& r, const std::string& e, long s) const { return run == r && event == e && step == s; }
    // After a step: the step, sigint and sigint2 events.
    void after_step(const std::string& r, long s) const {
        if (at(r, "step", s)) raise(SIGKILL);
        if (at(r, "sigint", s) || at(r, "sigint2", s)) raise(SIGINT);
        if (at(r, "sigint2", s)) raise(SIGINT);
    }
    // fbi::write_file_atomic, or (when this is the write to cut) its temp file half written and SIGKILL.
    void write(const std::string& path, const std::vector<unsigned char>& bytes, const std::string& r, long s) const {
        if (at(r, "write", s)) {
            FILE* f = std::fopen((path + ".tmp." + std::to_string(long(getpid()))).c_str(), "wb");
            if (f) std::fwrite(bytes.data(), 1, bytes.size() / 2, f), std::fclose(f);
            raise(SIGKILL);
        }
        fbi::write_file_atomic(path, bytes);
    }
};

// ---- what machine a benchmark ran on (benchmarks print it with their results) --------------------------------
inline std::string cpu_model() {
    std::ifstream f("/proc/cpuinfo");
    std::string line;
    while (std::getline(f, line))
        if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
    return "unknown";
}
// The SIMD extensions this build may use (what -march allowed the compiler), "+avx2 -avx512f …".
inline std::string simd_flags() {
    std::string s;
    auto add = [&](bool on, const char* name) { s += std::string(on ? "+" : "-") + name + " "; };
    bool avx2 = false, f16c = false, fma = false, avx512f = false, avx512bw = false, vnni = false, vpopcnt = false;
#if defined(__AVX2__)
    avx2 = true;
#endif
#if defined(__F16C__)
    f16c = true;
#endif
#if defined(__FMA__)
    fma = true;
#endif
#if defined(__AVX512F__)
    avx512f = true;
#endif
#if defined(__AVX512BW__)
    avx512bw = true;
#endif
#if defined(__AVX512VNNI__)
    vnni = true;
#endif
#if defined(__AVX512VPOPCNTDQ__)
    vpopcnt = true;
#endif
    add(avx2, "avx2"), add(f16c, "f16c"), add(fma, "fma"), add(avx512f, "avx512f"), add(avx512bw, "avx512bw");
    add(vnni, "avx512vnni"), add(vpopcnt, "avx512vpopcntdq");
    return s + "(what the build uses: -march=native)";
}

// /proc/loadavg: other jobs skew timings, the 2-thread ones most (a busy core makes the second thread wait).
inline std::string load_average() {
    std::ifstream f("/proc/loadavg");
    std::string line;
    std::getline(f, line);
    return line;
}

// ---- progress and logs -----------------------------------------------------------------------------------------
inline std::string fmt_duration(double s) {
    char buf[32];
    if (s < 60) std::snprintf(buf, sizeof buf, "%.0fs", s);
    else std::snprintf(buf, sizeof buf, "%dm%02ds", int(s) / 60, int(s) % 60);
    return buf;
}

// One row per training step. A resumed run keeps the rows of steps 1..resume_step (the checkpoint's) and appends
// after them, so the log has every step once. sync() puts the rows on disk; the trainer calls it before each
// checkpoint, so a checkpoint never holds a step that its log lacks.
struct CsvLog {
    static constexpr const char* kHeader = "step,lr,loss,grad_norm,flip_ratio,tokens_per_s,val_loss\n";
    FILE* f = nullptr;
    explicit CsvLog(const std::string& path, long resume_step = 0) {
        std::string kept = kHeader;
        if (resume_step > 0) kept = rows_up_to(path, resume_step);
        fbi::write_file_atomic(path, std::vector<unsigned char>(kept.begin(), kept.end()));
        f = std::fopen(path.c_str(), "a");
        if (!f) throw std::runtime_error("cannot write log '" + path + "'");
    }
    ~CsvLog() { if (f) std::fclose(f); }
    CsvLog(const CsvLog&) = delete;
    CsvLog& operator=(const CsvLog&) = delete;
    // The header and rows 1..step of an existing log (rows after `step` were written after the checkpoint).
    static std::string rows_up_to(const std::string& path, long step) {
        std::ifstream in(path);
        std::string line, kept = kHeader;
        long expect = 1;
        if (!std::getline(in, line) || line + "\n" != kHeader) expect = -1;
        while (expect > 0 && expect <= step && std::getline(in, line)) {
            if (std::atol(line.c_str()) != expect || line.find(',') == std::string::npos) break;
            kept += line + "\n";
            expect++;
        }
        if (expect != step + 1)
            std::printf("note: log '%s' lacks steps %ld..%ld (removed or edited?); it continues from step %ld\n",
                        path.c_str(), std::max(1L, expect), step, step + 1);
        return kept;
    }
    void row(long step, const fbi::StepStats& s, double tok_s, double val) {
        std::fprintf(f, "%ld,%.6g,%.6f,%.6f,%.8f,%.1f,", step, s.lr, s.loss, s.grad_norm, s.flip_ratio, tok_s);
        if (val >= 0) std::fprintf(f, "%.6f", val);
        std::fprintf(f, "\n");
    }
    void sync() {
        if (std::fflush(f) != 0 || fsync(fileno(f)) != 0) throw std::runtime_error("cannot write the training log");
    }
};

}  // namespace example
