// §9 the packed model: kernels agree bit for bit inside the decoder, the int8 activation is the only
// approximation, and the packed file round-trips and rejects bad files.
#include "testing.hpp"

#include <fstream>

using namespace fbi;
using namespace fbi_test;

namespace {
// An FBI student as after training (testing.hpp's trained_like), with a few exact zeros (sign(0) = −1).
Model trained_like_student(uint64_t seed) {
    Model m = trained_like(Quant::FBI, seed);
    for (const BlockRef& blk : m.blocks) m.p(blk.lin[WQ].W)[3] = 0.0f;
    return m;
}
}  // namespace

TEST_CASE("P1 packed decoder: reference, popcount and fast kernels give bit-identical logits") {
    Model m = trained_like_student(1);
    PackedModel pm = pack_model(m, "vocab");
    std::vector<int> toks = {1, 5, 12, 0, 7, 7, 3, 9, 11, 2, 4, 6};
    auto ref = decode_all(pm, Kernel::Reference, toks);
    auto pop = decode_all(pm, Kernel::Popcount, toks);
    auto fast = decode_all(pm, Kernel::Fast, toks);
    CHECK(std::memcmp(ref.data(), pop.data(), 4 * ref.size()) == 0);
    CHECK(std::memcmp(ref.data(), fast.data(), 4 * ref.size()) == 0);
}

TEST_CASE("P2 packed decoder ≈ float student: the int8 activation is the only approximation") {
    Model m = trained_like_student(2);
    PackedModel pm = pack_model(m, "vocab");
    std::vector<int> toks = {1, 5, 12, 0, 7, 7, 3, 9, 11, 2, 4, 6};
    model_forward(m, toks.data(), 1, int(toks.size()));  // float student, Ŵ = α·sign(W) + β
    const MaxDiff diff = max_diff(decode_all(pm, Kernel::Fast, toks), m.acts.logits);
    const double worst = diff.worst, scale = diff.scale;
    INFO("max |logit difference| " << worst << " (max |logit| " << scale << ")");
    // int8 absmax rounding: relative error per activation ≤ 1/254 of the row max; summed over the layers it
    // stays a few percent of the logit scale. A wrong scale, β term or sign would be off by O(scale).
    CHECK(worst < 0.05 * scale);
    CHECK(worst > 0.0);  // and it is an approximation: the test would notice a float path sneaking in
}

TEST_CASE("P3 packed file: round trip is exact; truncated, foreign and corrupted files are clear errors") {
    Model m = trained_like_student(3);
    PackedModel pm = pack_model(m, "abc");
    std::string path = test_file("test_model.fbipack");
    save_packed_model(path, pm);
    PackedModel back = load_packed_model(path);
    CHECK(back.cfg == pm.cfg);
    CHECK(back.vocab == "abc");
    CHECK(packed_model_bytes(back) == packed_model_bytes(pm));
    for (int l = 0; l < pm.cfg.L; l++)
        for (int i = 0; i < N_LINEAR; i++)  // the fast kernel's layout (fast_kernels.hpp: PackedTL) is rebuilt at load
            CHECK(static_cast<const PackedTL*>(back.lin[l][i].fast[0].get())->tiles_bytes ==
                  static_cast<const PackedTL*>(pm.lin[l][i].fast[0].get())->tiles_bytes);
    auto bytes = read_file_bytes(path);
    auto write = [&](const std::vector<unsigned char>& b) {
        std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), b.size());
    };
    for (size_t cut : {size_t(3), size_t(30), bytes.size() / 3, bytes.size() - 1}) {
        write(std::vector<unsigned char>(bytes.begin(), bytes.begin() + cut));
        CHECK_THROWS_WITH(load_packed_model(path), doctest::Contains("truncated"));
    }
    auto foreign = bytes;
    foreign[3] = 'X';
    write(foreign);
    CHECK_THROWS_WITH(load_packed_model(path), doctest::Contains("not an fbi_llm packed model"));
    auto checkpoint = checkpoint_bytes(make_checkpoint(m, "abc", 0, nullptr));  // a checkpoint is not a packed model
    write(checkpoint);
    CHECK_THROWS_WITH(load_packed_model(path), doctest::Contains("bad magic"));
    auto flipped = bytes;
    flipped[bytes.size() / 2] ^= 4;
    write(flipped);
    CHECK_THROWS_WITH(load_packed_model(path), doctest::Contains("checksum mismatch"));
    std::remove(path.c_str());
}

TEST_CASE("P4 bits per binarized weight: 1 + 64/m for fp32 α, β per column") {
    Config c = packed_config(Quant::FBI);
    c.F = 128;  // no padding: every linear has m = 64 or 128 rows
    PackedModel pm = pack_model(build_model<float>(c, 4), "");
    // q,k,v,o: m = 64 (C), gate, up: m = 128 (F), down: m = 64; weights 4·64² + 2·128·64 + 64·128
    double weights = 4.0 * 64 * 64 + 3.0 * 128 * 64;
    double extra = 4 * 64 * 64 * 64.0 / 64 + 2 * 64 * 128 * 64.0 / 128 + 64 * 128 * 64.0 / 64;  // Σ 64/m per weight
    CHECK(packed_bits_per_weight(pm) == doctest::Approx(1.0 + extra / weights));
    CHECK_THROWS_WITH(pack_model(build_model<float>(Config{}, 1), ""), doctest::Contains("full-precision model has no packed form"));
}

TEST_CASE("P6 codebook_quantize: at most 2^bits levels, a Lloyd fixed point, exact when the values already fit") {
    Rng rng(21);
    for (int bits : {1, 2, 4}) {
        for (size_t n : {size_t(3), size_t(17), size_t(130), size_t(768)}) {
            CAPTURE(bits);
            CAPTURE(n);
            std::vector<float> v(n);
            for (float& x : v) x = float(0.02 + 0.01 * rng.normal());
            std::vector<float> q = v;
            codebook_quantize(q, bits);
            const std::vector<float> levels = sorted_distinct(q);
            const size_t k = size_t(1) << bits;
            CHECK(levels.size() <= k);
            if (n <= k) CHECK(q == v);  // nothing to round
            // The fixed point Lloyd stops at: every value sits on its nearest level, and every level is the
            // mean of the values on it (in double, rounded to float once).
            size_t misplaced = 0, off_mean = 0;
            for (size_t j = 0; j < n; j++)
                for (float l : levels)
                    if (std::fabs(v[j] - l) < std::fabs(v[j] - q[j])) misplaced++;
            for (float l : levels) {
                double sum = 0;
                size_t count = 0;
                for (size_t j = 0; j < n; j++)
                    if (q[j] == l) { sum += v[j]; count++; }
                if (float(sum / double(count)) != l) off_mean++;
            }
            CHECK(misplaced == 0);
            CHECK(off_mean == 0);
            // never worse than the uniform grid of k levels from min to max that it starts from
            double lo = *std::min_element(v.begin(), v.end()), hi = *std::max_element(v.begin(), v.end());
            double err_lloyd = 0, err_grid = 0;
            for (size_t j = 0; j < n; j++) {
                double step = k > 1 ? (hi - lo) / double(k - 1) : 0.0;
                double g = step > 0 ? lo + step * std::round((v[j] - lo) / step) : (lo + hi) / 2;
                err_lloyd += (v[j] - q[j]) * double(v[j] - q[j]);
                err_grid += (v[j] - g) * (v[j] - g);
            }
            CHECK(err_lloyd <= err_grid * (1 + 1e-6));
        }
    }
    std::vector<float> same = {0.5f, -1.0f, 0.5f, 2.0f, -1.0f};  // three distinct values fit 2 bits exactly
    std::vector<float> copy = same;
    codebook_quantize(copy, 2);
    CHECK(copy == same);
}

TEST_CASE("P7 codebook scales: the file holds what the decoder uses, round trip is exact, bits per weight") {
    Config c = packed_config(Quant::FBI);
    c.F = 128;  // m = 64 or 128 rows, n = 64 or 128 columns, no row padding
    Model mc = build_model<float>(c, 7);
    for (int bits : {1, 4, 8}) {
        CAPTURE(bits);
        PackedModel pm = pack_model(mc, "ab", bits);
        CHECK(pm.scale_bits == bits);
        PackedModel exact = pack_model(mc, "ab");
        size_t changed = 0;
        for (int l = 0; l < c.L; l++)
            for (int i = 0; i < N_LINEAR; i++) {
                const PackedLinear &p = pm.lin[l][i], &e = exact.lin[l][i];
                CHECK(p.mask[0].bits == e.mask[0].bits);  // only the scales change
                std::vector<float> a = e.scale[0], b = e.scale[1];
                codebook_quantize(a, bits);
                codebook_quantize(b, bits);
                CHECK(p.scale[0] == a);
                CHECK(p.scale[1] == b);
                changed += p.scale[0] != e.scale[0];
            }
        if (bits < 8) CHECK(changed > 0);  // 64 or 128 random scales do not fit 2 or 16 levels (they fit 256)
        auto bytes = packed_model_bytes(pm);
        PackedModel back = parse_packed_model(bytes, "mem");
        CHECK(back.scale_bits == bits);
        CHECK(packed_model_bytes(back) == bytes);
        for (int l = 0; l < c.L; l++)
            for (int i = 0; i < N_LINEAR; i++) {
                CHECK(back.lin[l][i].scale[0] == pm.lin[l][i].scale[0]);
                CHECK(back.lin[l][i].scale[1] == pm.lin[l][i].scale[1]);
            }
        std::vector<int> toks = {1, 5, 12, 0, 7};
        CHECK(decode_all(back, Kernel::Fast, toks) == decode_all(pm, Kernel::Fast, toks));
        // bits per weight: 1 per weight + per scale vector of k values 2^bits fp32 levels and bits·k rounded up
        // to bytes. Vectors: q,k,v,o 2 × 64 values, gate, up 2 × 64, down 2 × 128.
        auto vec_bits = [&](double k) { return 32.0 * (1 << bits) + 8.0 * std::ceil(k * bits / 8.0); };
        double weights = 4.0 * 64 * 64 + 3.0 * 128 * 64;
        double scales = 2 * (6 * vec_bits(64) + vec_bits(128));
        CHECK(packed_bits_per_weight(pm) == doctest::Approx(1.0 + scales / weights).epsilon(1e-12));
    }
    CHECK_THROWS_WITH(pack_model(mc, "", 9), doctest::Contains("fbi::pack_model: scale_bits 9 (must be 32 or 1..8)"));
    CHECK_THROWS_WITH(pack_model(mc, "", 0), doctest::Contains("fbi::pack_model: scale_bits 0 (must be 32 or 1..8)"));
    // The FBI-LLM-130M shape (C = 768, F = 2048): fp32 scales cost 64/m bits per weight, 4-bit codebooks 16·32 + 4 bits per vector.
    double w130 = 4.0 * 768 * 768 + 3.0 * 2048 * 768, v130 = 6 * 768 * 2 + 2048 * 2;  // weights, scales per block
    CHECK(1 + 32 * v130 / w130 == doctest::Approx(1.0602).epsilon(1e-4));
    CHECK(1 + (14 * 32 * 16 + 4 * v130) / w130 < 1.01);
}

TEST_CASE("P8 codebook scales in the file: bad scale_bits, non-canonical codebooks, set padding bits are errors") {
    Config c = packed_config(Quant::FBI);
    c.L = 1;
    c.F = 70;  // the down projection's 70 scales → 70·3 bits = 26.25 bytes: 6 padding bits
    Model mc = build_model<float>(c, 8);
    PackedModel pm = pack_model(mc, "", 3);
    auto bytes = packed_model_bytes(pm);
    auto put_u32 = [](std::vector<unsigned char>& b, size_t at, uint32_t x) { std::memcpy(&b[at], &x, 4); };
    for (uint32_t bad : {0u, 9u, 16u, 31u}) {
        auto b = bytes;
        put_u32(b, 16, bad);  // scale_bits after magic, version, quant
        CHECK_THROWS_WITH(parse_packed_model(reseal(b), "s"), doctest::Contains(("scale_bits " + std::to_string(bad)).c_str()));
    }
    // Offsets: the down projection (last linear of the only block) ends with α then β, right before
    // final_norm (C), lm_head (V×C) and the checksum.
    const size_t tail = 4 * size_t(c.C) + 4 * size_t(c.V) * c.C + 8;
    const size_t code_bytes = (70 * 3 + 7) / 8, vec = 4 * 8 + code_bytes;
    const size_t beta_at = bytes.size() - tail - vec, alpha_at = beta_at - vec;
    {  // padding bits after β's last code
        auto b = bytes;
        b[beta_at + vec - 1] |= 0x80;
        CHECK_THROWS_WITH(parse_packed_model(reseal(b), "p"), doctest::Contains("not in its canonical form"));
    }
    {  // levels swapped: the same scales could be written, but not these bytes
        auto b = bytes;
        std::swap_ranges(b.begin() + long(alpha_at), b.begin() + long(alpha_at) + 4, b.begin() + long(alpha_at) + 4);
        CHECK_THROWS_WITH(parse_packed_model(reseal(b), "o"), doctest::Contains("not in its canonical form"));
    }
    {  // a level that is not a number
        auto b = bytes;
        float nan = std::numeric_limits<float>::quiet_NaN();
        std::memcpy(&b[alpha_at], &nan, 4);
        CHECK_THROWS_WITH(parse_packed_model(reseal(b), "n"), doctest::Contains("level is not finite"));
    }
    CHECK(packed_model_bytes(parse_packed_model(bytes, "ok")) == bytes);
}
