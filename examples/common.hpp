// Shared by the examples: a character tokenizer, corpus loading with clear errors, tiny argument parsing,
// progress lines and CSV logs. The header (fbi_llm.hpp) knows nothing of text; all of that lives here.
#pragma once
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "../fbi_llm.hpp"

namespace example {

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
                char shown[16];
                unsigned char c = (unsigned char)text[i];
                std::snprintf(shown, sizeof shown, c >= 32 && c < 127 ? "'%c'" : "byte 0x%02x", c);
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
// Reads a text file; refuses a missing, empty, binary or too-short one with a message that says which.
inline std::string load_corpus(const std::string& path, int min_length) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw std::runtime_error("corpus '" + path + "' not found (run `make data`, or set TINYSHAKESPEARE=/path)");
    std::stringstream ss;
    ss << f.rdbuf();
    std::string text = ss.str();
    if (text.empty()) throw std::runtime_error("corpus '" + path + "' is empty");
    if (text.find('\0') != std::string::npos)
        throw std::runtime_error("corpus '" + path + "' is not text (it contains NUL bytes)");
    if (int(text.size()) < min_length)
        throw std::runtime_error("corpus '" + path + "' has " + std::to_string(text.size()) +
                                 " characters, fewer than the " + std::to_string(min_length) +
                                 " needed (one context window for training and one for validation)");
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
