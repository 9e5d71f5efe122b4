// Shared by the examples: a character tokenizer, corpus loading with clear errors, tiny argument parsing,
// progress lines and CSV logs. The header (fbi_llm.hpp) knows nothing of text; all of that lives here.
#pragma once
#include <sys/stat.h>
#include <unistd.h>

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

// ---- arguments: --key value, with defaults and a usage message -------------------------------------------------
struct Args {
    std::map<std::string, std::string> kv;
    Args(int argc, char** argv, const std::string& usage) {
        for (int i = 1; i < argc; i++) {
            std::string a = argv[i];
            if (a == "-h" || a == "--help") { std::printf("%s\n", usage.c_str()); std::exit(0); }
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
    std::string str(const std::string& k, const std::string& def) const { auto it = kv.find(k); return it == kv.end() ? def : it->second; }
    double num(const std::string& k, double def) const {
        auto it = kv.find(k);
        if (it == kv.end()) return def;
        try { size_t used; double v = std::stod(it->second, &used); if (used == it->second.size()) return v; } catch (...) {}
        throw std::invalid_argument("--" + k + " expects a number, got '" + it->second + "'");
    }
    int integer(const std::string& k, int def) const { return int(num(k, def)); }
};

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

// ---- what machine a benchmark ran on (benchmarks print it with their results) --------------------------------
inline std::string cpu_model() {
    std::ifstream f("/proc/cpuinfo");
    std::string line;
    while (std::getline(f, line))
        if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
    return "unknown";
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

struct CsvLog {
    FILE* f = nullptr;
    explicit CsvLog(const std::string& path) {
        f = std::fopen(path.c_str(), "w");
        if (!f) throw std::runtime_error("cannot write log '" + path + "'");
        std::fprintf(f, "step,lr,loss,grad_norm,flip_ratio,tokens_per_s,val_loss\n");
    }
    ~CsvLog() { if (f) std::fclose(f); }
    void row(long step, const fbi::StepStats& s, double tok_s, double val) {
        std::fprintf(f, "%ld,%.6g,%.6f,%.6f,%.8f,%.1f,", step, s.lr, s.loss, s.grad_norm, s.flip_ratio, tok_s);
        if (val >= 0) std::fprintf(f, "%.6f", val);
        std::fprintf(f, "\n");
    }
};

}  // namespace example
