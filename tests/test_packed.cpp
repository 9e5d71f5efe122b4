// test_packed.cpp — §9 of fbi_llm.hpp ([Q2] activation quantizer, [S7]/[S6] packed GEMV kernels).
// All kernel comparisons are exact (integers): no tolerance is needed or allowed.
#include "testing.hpp"

#include <functional>
#include <string>


using namespace fbi;
using namespace fbi_test;

namespace {

// Random latent weights with some exact zeros (they must pack as −1, [F1]).
std::vector<float> random_weights(int rows, int cols, Rng& rng, double zero_fraction = 0.05) {
    std::vector<float> W((size_t)rows * cols);
    for (auto& w : W) w = rng.uniform() < zero_fraction ? 0.0f : float(0.02 * rng.normal());
    return W;
}

// The ±1 float matrix the reference kernel takes: [F1] sign with sign(0) = −1.
std::vector<float> sign_matrix(const std::vector<float>& W) {
    std::vector<float> S(W.size());
    for (size_t t = 0; t < W.size(); t++) S[t] = W[t] > 0.0f ? 1.0f : -1.0f;
    return S;
}

// Runs every kernel on (W, q) and checks each against gemv_reference, element by element.
void check_all_kernels(const std::vector<float>& W, int rows, int cols, const std::vector<int8_t>& q) {
    const std::vector<float> S = sign_matrix(W);
    std::vector<int32_t> expected(rows), got(rows);
    gemv_reference(S.data(), rows, cols, q.data(), expected.data());

    const PackedSigns P = pack_signs(W.data(), rows, cols);
    const ActPlanes A = make_act_planes(q.data(), cols);
    const PackedTL T = pack_tl(P);
    const ActTables AT = make_act_tables(q.data(), cols);

    struct Kernel {
        const char* name;
        std::function<void(int32_t*)> run;
    };
    const Kernel kernels[] = {
        {"gemv_popcount", [&](int32_t* y) { gemv_popcount(P, A, y); }},
        {"gemv_popcount_fast", [&](int32_t* y) { gemv_popcount_fast(P, A, y); }},
        {"gemv_tl", [&](int32_t* y) { gemv_tl(T, AT, y); }},
        {"gemv_tl_fast", [&](int32_t* y) { gemv_tl_fast(T, AT, y); }},
#if defined(__AVX2__)
        {"gemv_popcount_avx2", [&](int32_t* y) { gemv_popcount_avx2(P, A, y); }},
        {"gemv_tl_avx2", [&](int32_t* y) { gemv_tl_avx2(T, AT, y); }},
#endif
#if defined(__AVX2__) && defined(__AVX512BW__)
        {"gemv_tl_avx512", [&](int32_t* y) { gemv_tl_avx512(T, AT, y); }},
#endif
    };
    for (const Kernel& k : kernels) {
        std::fill(got.begin(), got.end(), -777);
        k.run(got.data());  // (CHECKs stay outside the kernels' OpenMP regions)
        int mismatches = 0, first_bad = -1;
        for (int i = 0; i < rows; i++)
            if (got[i] != expected[i]) {
                if (first_bad < 0) first_bad = i;
                mismatches++;
            }
        INFO(k.name << " rows=" << rows << " cols=" << cols << " first bad row=" << first_bad
                    << (first_bad >= 0 ? " got " + std::to_string(got[first_bad]) + " want " +
                                             std::to_string(expected[first_bad])
                                       : std::string()));
        CHECK(mismatches == 0);
    }
}


}  // namespace

TEST_CASE("S7 worked example: 1x5 row through the popcount identity") {
    // Latent row W = [0.5, -0.2, 0.0, 1.0, -3.0] → signs [+1, −1, −1, +1, −1]  (0.0 packs as −1, [F1])
    const float W[5] = {0.5f, -0.2f, 0.0f, 1.0f, -3.0f};
    const int8_t q[5] = {3, -2, 5, -128, 127};
    // Direct: +3 − (−2) − 5 + (−128) − 127 = −255
    const float S[5] = {1, -1, -1, 1, -1};
    int32_t y_ref = 0;
    gemv_reference(S, 1, 5, q, &y_ref);
    CHECK(y_ref == -255);

    const PackedSigns P = pack_signs(W, 1, 5);
    CHECK(P.words == 1);
    CHECK(P.bits[0] == 0b01001u);  // +1 at columns 0 and 3; bits 5..63 are padding = 0

    // o = q + 128 = [131, 126, 133, 0, 255]. The +1 columns (0 and 3) hold o = 131 and 0.
    // 131 = 1000'0011b: planes 0, 1 and 7 contain column 0; no plane contains column 3 (o = 0).
    const ActPlanes A = make_act_planes(q, 5);
    CHECK(A.sum_q == 5);  // 3 − 2 + 5 − 128 + 127
    int contributions[8];
    for (int k = 0; k < 8; k++) contributions[k] = popcount64(P.bits[0] & A.planes[k]);
    CHECK(contributions[0] == 1);
    CHECK(contributions[1] == 1);
    for (int k = 2; k < 7; k++) CHECK(contributions[k] == 0);
    CHECK(contributions[7] == 1);
    const int sum_o_plus = 1 * 1 + 2 * 1 + 128 * 1;  // Σ_k 2^k popcount(W & P_k) = 131
    const int n_plus = popcount64(P.bits[0]);         // 2 weights are +1
    const int sum_q_plus = sum_o_plus - 128 * n_plus;  // 131 − 256 = −125 = 3 + (−128) ✓
    CHECK(sum_q_plus == 3 + -128);
    CHECK(2 * sum_q_plus - A.sum_q == -255);  // Σ b q = 2·Σ_{b=+1} q − Σ q = −250 − 5

    int32_t y = 0;
    gemv_popcount(P, A, &y);
    CHECK(y == -255);
    check_all_kernels(std::vector<float>(W, W + 5), 1, 5, std::vector<int8_t>(q, q + 5));
}

TEST_CASE("S7 pack_signs: bit layout, sign(0) = -1, padding bits are zero") {
    Rng rng(1);
    for (int cols : {1, 63, 64, 65, 127, 128, 130, 1000}) {
        const int rows = 3;
        std::vector<float> W = random_weights(rows, cols, rng, 0.2);
        W[0] = 0.0f;   // exact zero → −1
        W[1 % cols] = -0.0f;  // negative zero → −1 too
        const PackedSigns P = pack_signs(W.data(), rows, cols);
        CHECK(P.words == (cols + 63) / 64);
        CHECK(P.bits.size() == (size_t)rows * P.words);
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++) {
                const float w = W[(size_t)i * cols + j];
                const float expected = w > 0.0f ? 1.0f : -1.0f;
                if (unpacked_sign(P, i, j) != expected) FAIL_CHECK("sign mismatch at " << i << "," << j);
            }
        CHECK(unpacked_sign(P, 0, 0) == -1.0f);
        // Padding: bits cols .. words*64−1 of each row's last word.
        const int used = cols % 64;
        const uint64_t pad_mask = used == 0 ? 0 : ~((uint64_t(1) << used) - 1);
        for (int i = 0; i < rows; i++) CHECK((P.bits[(size_t)i * P.words + P.words - 1] & pad_mask) == 0);
    }
}

TEST_CASE("S5 quantize_int8_absmax: max |u| maps to +-127, zero row stays zero") {
    const float u[4] = {0.5f, -2.0f, 1.0f, 0.01f};
    int8_t q[4];
    const float s = quantize_int8_absmax(u, 4, q);
    CHECK(s == doctest::Approx(127.0f / 2.0f));
    CHECK(q[1] == -127);
    CHECK(q[0] == 32);  // 63.5·0.5 = 31.75 → 32
    CHECK(q[2] == 64);  // 63.5 → 64
    CHECK(q[3] == 1);   // 0.635 → 1
    const float v[3] = {0.0f, 3.0f, -1.5f};
    quantize_int8_absmax(v, 3, q);
    CHECK(q[1] == 127);
    CHECK(q[2] == -64);  // −63.5 → −64

    // Ties round half to even (std::nearbyint, like torch.round): with max |u| = 127, s = 1 exactly.
    const float ties[5] = {127.0f, 2.5f, -2.5f, 3.5f, 0.5f};
    int8_t qt[5];
    CHECK(quantize_int8_absmax(ties, 5, qt) == 1.0f);
    CHECK(qt[0] == 127);
    CHECK(qt[1] == 2);   // 2.5 → 2 (half away from zero would give 3)
    CHECK(qt[2] == -2);  // −2.5 → −2
    CHECK(qt[3] == 4);   // 3.5 → 4
    CHECK(qt[4] == 0);   // 0.5 → 0

    const float zeros[5] = {0, 0, 0, 0, 0};
    int8_t qz[5] = {9, 9, 9, 9, 9};
    const float sz = quantize_int8_absmax(zeros, 5, qz);
    CHECK(std::isfinite(sz));
    for (int8_t x : qz) CHECK(x == 0);

    // Round trip error is at most half a step: |q/s − u| ≤ 0.5/s.
    Rng rng(7);
    std::vector<float> w(1000);
    for (auto& x : w) x = float(rng.normal());
    std::vector<int8_t> qw(1000);
    const float sw = quantize_int8_absmax(w.data(), 1000, qw.data());
    float worst = 0.0f;
    for (int j = 0; j < 1000; j++) worst = std::max(worst, std::fabs(qw[j] / sw - w[j]));
    CHECK(worst <= 0.5f / sw * 1.0001f);
}

TEST_CASE("S7 make_act_planes: o = q + 128 bit planes, padding bits are zero; make_act_planes_fast gives the same") {
    Rng rng(2);
    for (int n : {1, 31, 32, 33, 63, 64, 65, 130, 1000}) {
        const std::vector<int8_t> q = random_int8(n, rng);
        const ActPlanes A = make_act_planes(q.data(), n);
        const ActPlanes F = make_act_planes_fast(q.data(), n);  // AVX2 where the flags allow: the same planes
        CHECK(F.planes == A.planes);
        CHECK(F.sum_q == A.sum_q);
        CHECK(A.words == (n + 63) / 64);
        int32_t sum_q = 0;
        for (int j = 0; j < n; j++) {
            sum_q += q[j];
            unsigned o = 0;
            for (int k = 0; k < 8; k++) o |= (unsigned)((A.planes[(size_t)k * A.words + j / 64] >> (j % 64)) & 1) << k;
            if ((int)o != q[j] + 128) FAIL_CHECK("plane bits wrong at column " << j);
        }
        CHECK(A.sum_q == sum_q);
        const int used = n % 64;
        const uint64_t pad_mask = used == 0 ? 0 : ~((uint64_t(1) << used) - 1);
        for (int k = 0; k < 8; k++) CHECK((A.planes[(size_t)k * A.words + A.words - 1] & pad_mask) == 0);
    }
}

TEST_CASE("S7 table-lookup layout: tiles are byte-transposed rows, tables are nibble sums") {
    Rng rng(3);
    const int rows = 33, cols = 70;
    const std::vector<float> W = random_weights(rows, cols, rng);
    const PackedSigns P = pack_signs(W.data(), rows, cols);
    const PackedTL T = pack_tl(P);
    CHECK(T.tiles == 2);
    CHECK(T.byte_cols == 10);  // ceil(70 / 8) = 9 bytes, rounded up to even
    for (int i = 0; i < T.tiles * kTileRows; i++)
        for (int c = 0; c < T.byte_cols; c++) {
            const uint8_t byte = T.tiles_bytes[((size_t)(i / kTileRows) * T.byte_cols + c) * kTileRows + i % kTileRows];
            uint8_t expected = 0;  // rows ≥ 33 and columns ≥ 70 are padding = 0
            for (int b = 0; b < 8; b++) {
                const int j = 8 * c + b;
                if (i < rows && j < cols && W[(size_t)i * cols + j] > 0.0f) expected |= (uint8_t)(1u << b);
            }
            if (byte != expected) FAIL_CHECK("tile byte wrong at row " << i << " byte " << c);
        }
    for (int i = 0; i < rows; i++) {
        int plus = 0;
        for (int j = 0; j < cols; j++) plus += W[(size_t)i * cols + j] > 0.0f;
        CHECK(T.n_plus[i] == plus);
    }

    const std::vector<int8_t> q = random_int8(cols, rng);
    const ActTables A = make_act_tables(q.data(), cols);
    CHECK(A.groups == 20);
    for (int g = 0; g < A.groups; g++)
        for (int v = 0; v < 16; v++) {
            int l = 0, h = 0;
            for (int i = 0; i < 4; i++) {
                const int j = 4 * g + i;
                const int o = j < cols ? q[j] + 128 : 0;  // padded columns: o = 0
                if ((v >> i) & 1) l += o & 15, h += o >> 4;
            }
            if (A.tables[(size_t)32 * g + v] != l || A.tables[(size_t)32 * g + 16 + v] != h)
                FAIL_CHECK("table wrong at group " << g << " entry " << v);
        }
}

TEST_CASE("S7 every kernel equals gemv_reference exactly: awkward shapes, random activations") {
    Rng rng(4);
    for (int cols : {1, 5, 63, 64, 65, 127, 128, 130, 255, 256, 257, 1000, 4096})
        for (int rows : {1, 3, 7, 32, 33, 64, 65, 97}) {
            const std::vector<float> W = random_weights(rows, cols, rng);
            check_all_kernels(W, rows, cols, random_int8(cols, rng));
        }
    // Large enough to take the OpenMP path (rows·cols ≥ kParallelMinWeights) when built with -fopenmp.
    const int rows = 301, cols = 4096;
    REQUIRE((long)rows * cols >= kParallelMinWeights);
    check_all_kernels(random_weights(rows, cols, rng), rows, cols, random_int8(cols, rng));
}

TEST_CASE("S7 every kernel equals gemv_reference exactly: extreme activations and weights") {
    Rng rng(5);
    const char* patterns[] = {"all 0", "all +127", "all -128", "alternating +127 / -128"};
    // 11008 columns = 43 chunks of 256: exercises the AVX2 popcount kernel's byte-counter flush (every 31).
    for (int cols : {1, 63, 64, 65, 130, 1000, 4096, 11008})
        for (const char* pattern : patterns) {
            CAPTURE(cols);
            CAPTURE(pattern);
            const int rows = 33;
            std::vector<int8_t> q(cols);
            for (int j = 0; j < cols; j++) {
                const std::string p = pattern;
                q[j] = p == "all 0" ? 0 : p == "all +127" ? 127 : p == "all -128" ? -128 : (j % 2 ? -128 : 127);
            }
            check_all_kernels(random_weights(rows, cols, rng, 0.3), rows, cols, q);
            // All weights +1, and all −1 (every latent weight an exact zero → −1): the largest |y| possible.
            const std::vector<float> plus((size_t)rows * cols, 1.0f), zeros((size_t)rows * cols, 0.0f);
            check_all_kernels(plus, rows, cols, q);
            check_all_kernels(zeros, rows, cols, q);
        }
}

TEST_CASE("S7 quantize then multiply: the whole per-token path on float activations") {
    Rng rng(6);
    const int rows = 65, cols = 300;
    std::vector<float> u(cols);
    for (auto& x : u) x = float(rng.normal());
    std::vector<int8_t> q(cols);
    const float s = quantize_int8_absmax(u.data(), cols, q.data());
    const std::vector<float> W = random_weights(rows, cols, rng);
    check_all_kernels(W, rows, cols, q);
    // Dequantised result ≈ the float product Σ_j sign(W_ij) u_j, within the int8 rounding error
    // (each q_j/s is off by ≤ 0.5/s, so the sum is off by ≤ cols·0.5/s).
    const PackedSigns P = pack_signs(W.data(), rows, cols);
    const ActTables A = make_act_tables(q.data(), cols);
    std::vector<int32_t> y(rows);
    gemv_tl_fast(pack_tl(P), A, y.data());
    for (int i = 0; i < rows; i++) {
        double exact = 0;
        for (int j = 0; j < cols; j++) exact += (W[(size_t)i * cols + j] > 0.0f ? 1.0 : -1.0) * u[j];
        CHECK(std::fabs(y[i] / s - exact) <= cols * 0.5 / s);
    }
}

// The README's "Adding your own kernel", word for word (not registered here: Kernel::Fast stays the plug-in's).
namespace {
inline fbi::FastKernel my_kernel() {
    fbi::FastKernel k;
    k.name = "popcount, my way";
    k.prepare_weights = [](const fbi::PackedSigns&) { return std::shared_ptr<const void>(); };  // use the bits as they are
    k.prepare_acts = [](const int8_t* q, int n) -> std::shared_ptr<const void> {              // once per token
        return std::make_shared<fbi::ActPlanes>(fbi::make_act_planes(q, n));
    };
    k.gemv = [](const fbi::PackedSigns& bits, const void*, const void* acts, int32_t* y) {  // y_i = Σ_j ±q_j
        fbi::gemv_popcount(bits, *static_cast<const fbi::ActPlanes*>(acts), y);
    };
    return k;
}
}  // namespace

TEST_CASE("S7 a FastKernel (the README's example, and the registered one) equals gemv_reference exactly") {
    REQUIRE(fast_kernel() != nullptr);  // fast_kernels.hpp registered the table-lookup kernel
    Rng rng(9);
    for (const FastKernel& k : {my_kernel(), *fast_kernel()})
        for (int cols : {1, 64, 65, 130, 1000})
            for (int rows : {1, 33}) {
                CAPTURE(k.name);
                const std::vector<float> W = random_weights(rows, cols, rng);
                const std::vector<int8_t> q = random_int8(cols, rng);
                std::vector<int32_t> want(rows), got(rows);
                gemv_reference(sign_matrix(W).data(), rows, cols, q.data(), want.data());
                const PackedSigns P = pack_signs(W.data(), rows, cols);
                const auto weights = k.prepare_weights(P);
                const auto acts = k.prepare_acts(q.data(), cols);
                k.gemv(P, weights.get(), acts.get(), got.data());
                CHECK(got == want);
            }
}
