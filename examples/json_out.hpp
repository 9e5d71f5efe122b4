// The one JSON writer of the examples (train_tiny's summary, and the notebooks' feeders equations.cpp and
// packed_demo.cpp): objects keep insertion order, strings are escaped (quotes, backslashes, control characters;
// other bytes, UTF-8 included, pass through), tensors are {"shape": [...], "data": [...]}, 64-bit words are hex
// strings (a JSON number is a double and cannot hold every 64-bit integer), a NaN or infinity is null.
// Digits = significant digits of every number: 17 round-trips a double exactly, 9 a float32.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace example {

// A JSON string literal for any bytes.
inline std::string json_string(const std::string& s) {
    std::string o = "\"";
    for (unsigned char c : s) {
        if (c == '"' || c == '\\') o += '\\', o += char(c);
        else if (c == '\n') o += "\\n";
        else if (c < 32) { char b[8]; std::snprintf(b, sizeof b, "\\u%04x", c); o += b; }
        else o += char(c);
    }
    return o + "\"";
}

inline std::string hex64(uint64_t w) {
    char b[24];
    std::snprintf(b, sizeof b, "\"0x%016llx\"", (unsigned long long)w);
    return b;
}

template <int Digits>
struct JsonObj {
    std::vector<std::pair<std::string, std::string>> kv;

    static std::string num(double x) {
        if (!std::isfinite(x)) return "null";
        char b[40];
        std::snprintf(b, sizeof b, "%.*g", Digits, x);
        return b;
    }
    JsonObj& put(const std::string& k, const std::string& raw_json) { kv.emplace_back(k, raw_json); return *this; }
    JsonObj& put(const std::string& k, double x) { return put(k, num(x)); }
    JsonObj& put(const std::string& k, int x) { return put(k, std::to_string(x)); }
    JsonObj& put(const std::string& k, const JsonObj& o) { return put(k, o.str()); }
    JsonObj& text(const std::string& k, const std::string& s) { return put(k, json_string(s)); }
    template <class T>
    JsonObj& tensor(const std::string& k, const std::vector<T>& v, std::vector<int> shape) {
        std::string s = "{\"shape\": [";
        for (size_t i = 0; i < shape.size(); i++) s += (i ? ", " : "") + std::to_string(shape[i]);
        s += "], \"data\": [";
        for (size_t i = 0; i < v.size(); i++) s += (i ? ", " : "") + num(double(v[i]));
        return put(k, s + "]}");
    }
    JsonObj& ints(const std::string& k, const std::vector<int>& v) {
        std::string s = "[";
        for (size_t i = 0; i < v.size(); i++) s += (i ? ", " : "") + std::to_string(v[i]);
        return put(k, s + "]");
    }
    JsonObj& words(const std::string& k, const std::vector<uint64_t>& v) {
        std::string s = "[";
        for (size_t i = 0; i < v.size(); i++) s += (i ? ", " : "") + hex64(v[i]);
        return put(k, s + "]");
    }
    std::string str() const {
        std::string s = "{";
        for (size_t i = 0; i < kv.size(); i++) s += (i ? ",\n\"" : "\n\"") + kv[i].first + "\": " + kv[i].second;
        return s + "\n}";
    }
};

// {"in": ..., "out": ...}: the notebook computes only from "in" and compares with "out".
template <int Digits>
JsonObj<Digits> section(const JsonObj<Digits>& in, const JsonObj<Digits>& out) {
    return JsonObj<Digits>().put("in", in).put("out", out);
}

}  // namespace example
