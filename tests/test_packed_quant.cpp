// §9 packed inference for the other quantizers: b1.58 ternary (two masks, [S8]) and DB dual binary (two {0,1}
// masks with per-row scales, [Q5], [S8]). Every kernel exact against a plain reference, the packed decoder
// against the float model, and the packed file.
#include "testing.hpp"

#include <fstream>

using namespace fbi;
using namespace fbi_test;

namespace {

// A float matrix of ±1 with about `density` of +1 entries (pack_signs' input for a mask).
std::vector<float> random_mask(int rows, int cols, double density, Rng& rng) {
    std::vector<float> w(size_t(rows) * cols);
    for (float& x : w) x = rng.uniform() < density ? 1.f : -1.f;
    return w;
}
TokenActs token_acts(const std::vector<int8_t>& q, Kernel k) {
    TokenActs a;
    a.q = q;
    prepare_token_acts(a, k, int(q.size()));
    return a;
}

const std::vector<int> kTokens = {1, 5, 12, 0, 7, 7, 3, 9, 11, 2, 4, 6};

}  // namespace

TEST_CASE("S8 {0,1}-mask and ternary sums from the ±1 kernels are exact: awkward shapes, every kernel") {
    Rng rng(1);
    for (int cols : {1, 63, 64, 65, 127, 130, 257}) {
        for (int rows : {1, 31, 33}) {
            auto q = random_int8(cols, rng);
            auto m1 = random_mask(rows, cols, 0.3, rng), m2 = random_mask(rows, cols, 0.6, rng);
            PackedSigns P1 = pack_signs(m1.data(), rows, cols);
            auto T1 = fast_kernel()->prepare_weights(P1);  // the registered kernel's layout (table lookup)
            // the definition, in plain integers: Σ over set bits, and Σ code·q with code = bit1 − bit2
            std::vector<int32_t> want1(rows), want_ternary(rows);
            for (int i = 0; i < rows; i++) {
                int32_t s1 = 0, st = 0;
                for (int j = 0; j < cols; j++) {
                    bool b1 = m1[size_t(i) * cols + j] > 0, b2 = m2[size_t(i) * cols + j] > 0 && !b1;
                    s1 += b1 ? q[j] : 0;
                    st += (b1 ? q[j] : 0) - (b2 ? q[j] : 0);
                }
                want1[i] = s1;
                want_ternary[i] = st;
            }
            // ternary masks must be disjoint: take M = m2 AND NOT m1
            std::vector<float> mt(m2);
            for (size_t i = 0; i < mt.size(); i++) if (m1[i] > 0) mt[i] = -1.f;
            PackedSigns PM = pack_signs(mt.data(), rows, cols);
            auto TM = fast_kernel()->prepare_weights(PM);
            for (Kernel k : {Kernel::Reference, Kernel::Popcount, Kernel::Fast}) {
                TokenActs a = token_acts(q, k);
                std::vector<int32_t> sd1(rows), sdm(rows);
                std::vector<float> scratch;
                signed_gemv(k, P1, T1.get(), a, sd1.data(), scratch);
                signed_gemv(k, PM, TM.get(), a, sdm.data(), scratch);
                for (int i = 0; i < rows; i++) {
                    INFO("kernel " << kernel_name(k) << " rows " << rows << " cols " << cols << " row " << i);
                    REQUIRE((sd1[i] + a.sum_q) % 2 == 0);
                    REQUIRE((sd1[i] + a.sum_q) / 2 == want1[i]);       // Σ_{bit=1} q
                    REQUIRE((sd1[i] - sdm[i]) / 2 == want_ternary[i]);  // Σ code q
                }
            }
        }
    }
}

TEST_CASE("S8 packed masks hold exactly the trained codes (b1.58 ternary, DB dual binary)") {
    for (Quant q : {kB158, kDB}) {
        Model m = trained_like(q, 3);
        PackedModel pm = pack_model(m, "v");
        for (int l = 0; l < m.cfg.L; l++)
            for (int id = 0; id < N_LINEAR; id++) {
                const LinearRef& ref = m.blocks[l].lin[id];
                const PackedLinear& p = pm.lin[l][id];
                const float* W = m.p(ref.W);
                float gamma = q == kB158 ? absmean(W, size_t(ref.m) * ref.n) : 0.f;
                for (int i = 0; i < ref.m; i++)
                    for (int j = 0; j < ref.n; j++) {
                        float w = W[size_t(i) * ref.n + j], b1 = unpacked_sign(p.mask[0], i, j) > 0, b2 = unpacked_sign(p.mask[1], i, j) > 0;
                        if (q == kB158) {
                            REQUIRE(!(b1 && b2));
                            REQUIRE(b1 - b2 == ternary_code(w, gamma));
                        } else {
                            float c1, c2;
                            fdb_codes(w, m.p(ref.scale[0])[i], m.p(ref.scale[1])[i], c1, c2);
                            REQUIRE(b1 == c1);
                            REQUIRE(b2 == c2);
                        }
                    }
                if (q == kB158) CHECK(p.scale[0] == std::vector<float>{gamma});
            }
    }
}

TEST_CASE("S8 packed decoder, b1.58 and DB: reference, popcount and fast kernels give bit-identical logits") {
    for (Quant q : {kB158, kDB}) {
        PackedModel pm = pack_model(trained_like(q, 5), "v");
        auto ref = decode_all(pm, Kernel::Reference, kTokens);
        auto pop = decode_all(pm, Kernel::Popcount, kTokens);
        auto fast = decode_all(pm, Kernel::Fast, kTokens);
        INFO(quant_name(q));
        CHECK(std::memcmp(ref.data(), pop.data(), 4 * ref.size()) == 0);
        CHECK(std::memcmp(ref.data(), fast.data(), 4 * ref.size()) == 0);
    }
}

TEST_CASE("S8 b1.58: the train path (dequantized floats) equals the inference path (integers) within fp32 rounding") {
    Model m = trained_like(kB158, 7);
    for (float& p : m.params) p *= 10;  // blocks matter: int8 rounding in the wrong place would show
    PackedModel pm = pack_model(m, "v");
    quantize_all(m);
    // one linear: y = x̃ Ŵᵀ in floats vs γ/s · Σ code·q in integers
    Rng rng(8);
    std::vector<float> x(m.cfg.C), y_train(m.cfg.C), y_int(m.cfg.C);
    for (float& v : x) v = float(rng.normal());
    FloatLinear train_path(&m);
    PackedLinearFn int_path(&pm, Kernel::Fast);
    for (int id : {int(WQ), int(WO)}) {
        train_path(1, id, x.data(), y_train.data());
        int_path(1, id, x.data(), y_int.data());
        double worst = 0, scale = 0;
        for (int i = 0; i < m.cfg.C; i++) {
            worst = std::max(worst, double(std::fabs(y_train[i] - y_int[i])));
            scale = std::max(scale, double(std::fabs(y_train[i])));
        }
        INFO("linear " << linear_name(id) << ": max |difference| " << worst << ", max |y| " << scale);
        CHECK(worst <= 1e-5 * scale);  // fp32 rounding of a 64-term sum
    }
    // the whole model: the packed decoder against the float training forward
    model_forward(m, kTokens.data(), 1, int(kTokens.size()));
    const MaxDiff diff = max_diff(decode_all(pm, Kernel::Fast, kTokens), m.acts.logits);
    const double worst = diff.worst, scale = diff.scale;
    INFO("max |logit difference| " << worst << " (max |logit| " << scale << ")");
    CHECK(worst <= 1e-4 * scale);
}

TEST_CASE("S8 DB packed decoder ≈ float model: the int8 activation is the only approximation") {
    Model m = trained_like(kDB, 9);
    PackedModel pm = pack_model(m, "v");
    model_forward(m, kTokens.data(), 1, int(kTokens.size()));
    const MaxDiff diff = max_diff(decode_all(pm, Kernel::Fast, kTokens), m.acts.logits);
    const double worst = diff.worst, scale = diff.scale;
    INFO("max |logit difference| " << worst << " (max |logit| " << scale << ")");
    CHECK(worst < 0.05 * scale);
    CHECK(worst > 0.0);
}

TEST_CASE("S8 packed file for b1.58 and DB: round trip, bits per weight; versions 1 and 4, others refused") {
    for (Quant q : {kB158, kDB}) {
        Model m = trained_like(q, 11);
        PackedModel pm = pack_model(m, "xyz");
        auto bytes = packed_model_bytes(pm);
        PackedModel back = parse_packed_model(bytes, "mem");
        CHECK(back.cfg == pm.cfg);
        CHECK(packed_model_bytes(back) == bytes);
        CHECK(decode_all(back, Kernel::Fast, kTokens) == decode_all(pm, Kernel::Fast, kTokens));
        // bits per weight: two masks (with row padding) + the scales
        double bits = 0, weights = 0;
        int m_[N_LINEAR], n_[N_LINEAR];
        for (int id = 0; id < N_LINEAR; id++) {
            linear_shape(m.cfg, id, m_[id], n_[id]);
            bits += 2.0 * m_[id] * words_for(n_[id]) * 64 + (q == kB158 ? 32.0 : 64.0 * m_[id]);
            weights += double(m_[id]) * n_[id];
        }
        CHECK(packed_bits_per_weight(pm) == doctest::Approx(bits / weights).epsilon(1e-12));
    }
    // the format has versions 1 and 4 (test_rows): any other, including the pre-release layouts 2 and 3, is refused by name
    auto bytes = packed_model_bytes(pack_model(trained_like(Quant::FBI, 12), "v"));
    for (uint32_t version : {0u, 2u, 3u, 5u}) {
        CAPTURE(version);
        auto other = bytes;
        std::memcpy(&other[8], &version, 4);
        const std::string want = "format version " + std::to_string(version) + ", this build reads versions 1 and 4" +
                                 (version == 2 || version == 3 ? " (a pre-release layout: pack the checkpoint again)" : "");
        CHECK_THROWS_WITH(parse_packed_model(reseal(other), "v"), doctest::Contains(want.c_str()));
    }
}

TEST_CASE("S8 packed file errors: unknown quantizer, a ternary weight marked both +1 and -1") {
    PackedModel pm = pack_model(trained_like(kB158, 13), "v");
    auto bytes = packed_model_bytes(pm);
    auto bad_quant = bytes;
    bad_quant[12] = 9;  // the u32 quant field after magic and version
    CHECK_THROWS_WITH(parse_packed_model(reseal(bad_quant), "q"), doctest::Contains("unknown packed quantizer id 9"));
    bad_quant[12] = 0;  // full precision has no packed form
    CHECK_THROWS_WITH(parse_packed_model(reseal(bad_quant), "q"), doctest::Contains("unknown packed quantizer id 0"));
    // the first linear's masks start after header, vocab, tok_emb and the two norms of block 0
    const Config& c = pm.cfg;
    size_t first_mask = 8 + 4 + 4 + 4 + 6 * 4 + 8 + pm.vocab.size() + 4 * size_t(c.V) * c.C + 2 * 4 * size_t(c.C);
    size_t mask_bytes = 8 * pm.lin[0][WQ].mask[0].bits.size();
    auto both = bytes;
    uint64_t plus;
    std::memcpy(&plus, &both[first_mask], 8);
    REQUIRE(plus != 0);
    std::memcpy(&both[first_mask + mask_bytes], &plus, 8);  // mark the +1 weights of word 0 as −1 too
    CHECK_THROWS_WITH(parse_packed_model(reseal(both), "t"), doctest::Contains("both +1 and -1"));
}
