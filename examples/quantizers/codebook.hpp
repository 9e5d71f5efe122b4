// codebook.hpp — compact scales for packed models, a plug-in for fbi_llm.hpp: each scale vector of a packed
// linear (FBI's α, β; DB's α1, α2) is stored as at most 2^bits distinct fp32 levels plus `bits` bits per value,
// bits = 1..8 (pack_model(model, vocab, bits), train_tiny --scale-bits). Include it after (or instead of) the
// header; it registers itself as the header's ScaleCodec. Packed files with scale_bits = 32 need nothing of it.
//
// METHOD NOTES
//   [P6] α, β codebooks: each vector keeps 2^bits levels fitted by 1-D Lloyd (this project's choice; not in the papers)
//
// EQUATION MAP   label → function → test
//   [P6] fit, and the file form            codebook_quantize, codebook_write/read   "P6 ...", "P7 ...", "P8 ..."
//
// In the file a vector of k values is 2^bits f32 levels (ascending, the last one repeated to fill), then k level
// numbers of `bits` bits each, packed from the lowest bit of each byte up, unused bits of the last byte 0.
#pragma once
#include "../../fbi_llm.hpp"

namespace fbi {

// Compact scales (optional). The scales are a small part of the file at 1 bit per weight: FBI stores α and β per
// input column, 2 × 32 bits / m per weight ([P4]), which is 0.060 bits at the 130M shape. A codebook shrinks
// them: each scale vector v keeps only 2^bits distinct values ("levels"), fitted to v by 1-D k-means (Lloyd):
// start from the uniform grid of levels between min(v) and max(v), then alternate "each value takes its nearest
// level" and "each level moves to the mean of the values that took it" until no value changes level. Neither
// step can increase the squared error, so the result is never worse than that uniform grid. The file holds 2^bits fp32
// levels and `bits` bits per scale. This rounds α and β, so unlike the int8 activation it changes Ŵ itself:
// measure it (make train-tiny TRAIN_ARGS="--scale-bits 4"). A vector with at most 2^bits distinct values is
// left exactly as it is.

// The values of v, ascending, each once (a codebook's levels).
inline std::vector<float> sorted_distinct(std::vector<float> v) {
    std::sort(v.begin(), v.end());
    v.erase(std::unique(v.begin(), v.end()), v.end());
    return v;
}

inline void codebook_quantize(std::vector<float>& v, int bits) {
    const size_t n = v.size(), k = size_t(1) << bits;
    const std::vector<float> distinct = sorted_distinct(v);
    if (distinct.size() <= k) return;
    const double lo = distinct.front(), hi = distinct.back();
    std::vector<double> level(k);
    for (size_t i = 0; i < k; i++) level[i] = lo + (hi - lo) * double(i) / double(k - 1);
    std::vector<size_t> which(n, k);  // k = "no level yet"
    for (int iter = 0; iter < 100; iter++) {
        bool changed = false;
        for (size_t j = 0; j < n; j++) {  // assign: nearest level (the first one on ties)
            size_t best = 0;
            for (size_t i = 1; i < k; i++)
                if (std::fabs(v[j] - level[i]) < std::fabs(v[j] - level[best])) best = i;
            changed |= best != which[j];
            which[j] = best;
        }
        if (!changed) break;
        std::vector<double> sum(k, 0.0);
        std::vector<size_t> count(k, 0);
        for (size_t j = 0; j < n; j++) { sum[which[j]] += v[j]; count[which[j]]++; }
        for (size_t i = 0; i < k; i++)  // update: the mean of its values (a level nobody took stays put)
            if (count[i]) level[i] = sum[i] / double(count[i]);
    }
    for (size_t j = 0; j < n; j++) v[j] = float(level[which[j]]);
}

// Bytes of one stored vector of k values: 2^bits fp32 levels, then k level numbers of `bits` bits each.
inline uint64_t codebook_bytes(uint64_t k, int bits) { return 4 * (uint64_t(1) << bits) + (k * uint64_t(bits) + 7) / 8; }

inline void codebook_write(ByteWriter& w, const std::vector<float>& v, int bits) {
    std::vector<float> levels = sorted_distinct(v);
    const size_t k = size_t(1) << bits;
    if (levels.size() > k)
        throw std::logic_error("fbi::codebook_write: " + std::to_string(levels.size()) + " distinct scales do not fit a " +
                               std::to_string(bits) + "-bit codebook (pack_model(..., scale_bits) makes them fit)");
    levels.resize(k, levels.back());
    w.raw(levels.data(), 4 * k);
    std::vector<unsigned char> packed((v.size() * bits + 7) / 8, 0);
    for (size_t j = 0; j < v.size(); j++) {
        uint32_t code = uint32_t(std::lower_bound(levels.begin(), levels.end(), v[j]) - levels.begin());
        for (int b = 0; b < bits; b++)
            if (code >> b & 1) packed[(j * bits + b) / 8] |= uint8_t(1u << ((j * bits + b) % 8));
    }
    w.raw(packed.data(), packed.size());
}

inline void codebook_read(ByteReader& r, std::vector<float>& v, size_t k, int bits) {
    std::vector<float> levels(size_t(1) << bits);
    r.raw(levels.data(), 4 * levels.size());
    for (float x : levels)
        if (!std::isfinite(x)) throw std::runtime_error(r.what + ": a scale codebook level is not finite (corrupted)");
    std::vector<unsigned char> packed((k * bits + 7) / 8);
    r.raw(packed.data(), packed.size());
    for (size_t j = 0; j < k; j++) {
        uint32_t code = 0;
        for (int b = 0; b < bits; b++) code |= uint32_t(packed[(j * bits + b) / 8] >> ((j * bits + b) % 8) & 1) << b;
        v[j] = levels[code];
    }
    // Exactly what write_scales makes of these values (levels ascending and used, padding 0), so that a file
    // reads and writes back to the same bytes; anything else was not written by this header.
    ByteWriter again, read;  // `read`: the bytes just read, as they were
    codebook_write(again, v, bits);
    read.raw(levels.data(), 4 * levels.size());
    read.raw(packed.data(), packed.size());
    if (again.buf != read.buf)
        throw std::runtime_error(r.what + ": a scale codebook is not in its canonical form (corrupted)");
}


inline const ScaleCodec kCodebook{&codebook_quantize, &codebook_bytes, &codebook_write, &codebook_read};
inline const bool kCodebookRegistered = register_scale_codec(&kCodebook);

}  // namespace fbi
