// E and H in fp16 and int8 ([H1], [H2]): the conversions, the kernels against the plain loops, the packed file.
#include "testing.hpp"

#include <cmath>
#if defined(__F16C__)
#include <immintrin.h>
#endif

using namespace fbi;
using namespace fbi_test;

namespace {

// The value of a half from its definition, in double: (−1)^s · 2^(e−15) · (1 + m/1024), subnormals m · 2^−24.
double half_value(uint16_t h) {
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? std::ldexp(double(m), -24) : e == 31 ? (m ? NAN : INFINITY) : std::ldexp(1024.0 + m, e - 25);
    return (h & 0x8000) ? -v : v;
}
bool is_nan_half(uint16_t h) { return (h & 0x7c00) == 0x7c00 && (h & 0x3ff); }
uint32_t read_u32_at(const std::vector<unsigned char>& b, size_t at) {
    uint32_t v;
    std::memcpy(&v, &b[at], 4);
    return v;
}
// A matrix of awkward values for the kernels: normal draws, and some rows at the format's extremes.
std::vector<float> test_matrix(int rows, int cols, uint64_t seed) {
    std::vector<float> W(size_t(rows) * cols);
    Rng rng(seed);
    for (float& w : W) w = float(rng.normal());
    for (int j = 0; j < cols && rows > 2; j++) W[j] = (j % 2 ? 1.f : -1.f), W[size_t(cols) + j] = 60000.f;
    return W;
}

// Logits of every position through the unpacked float linears (one prefill).
std::vector<float> float_logits(const PackedModel& pm, const std::vector<int>& toks) {
    const Config& c = pm.cfg;
    KVCache cache;
    cache.reset(c.L, c.T, c.C);
    PrefillScratch s;
    const int n = int(toks.size());
    std::vector<float> logits(size_t(n) * c.V);
    prefill(decode_view(pm), UnpackedRows{&pm, {}}, cache, s, toks.data(), n, logits.data(), n, pm.rope_cos.data(),
            pm.rope_sin.data());
    return logits;
}

}  // namespace

TEST_CASE("H1 every half converts to its exact value and back") {
    for (uint32_t u = 0; u < 65536; u++) {
        const uint16_t h = uint16_t(u);
        CAPTURE(u);
        const float f = f16_to_f32(h);
        if (is_nan_half(h)) {
            REQUIRE(std::isnan(f));
            CHECK(((float_to_bits(f) >> 13) & 0x3ffu) == ((h & 0x3ffu) | 0x200u));  // the payload kept, made quiet
            CHECK(is_nan_half(f32_to_f16(f)));
            continue;
        }
        REQUIRE(double(f) == half_value(h));
        REQUIRE(std::signbit(f) == bool(h & 0x8000));  // −0 too
        REQUIRE(f32_to_f16(f) == h);
    }
}

TEST_CASE("H1 float to half rounds to nearest, ties to even, overflows to infinity") {
    // Every gap between neighbouring finite halves a < b (both signs): its midpoint (exact in float) goes to the one
    // with the even mantissa, the floats just beside it to the nearer one.
    for (uint16_t sign : {uint16_t(0), uint16_t(0x8000)})
        for (uint32_t u = 0; u < 0x7bff; u++) {
            const uint16_t a = uint16_t(u | sign), b = uint16_t((u + 1) | sign);
            const float fa = f16_to_f32(a), fb = f16_to_f32(b), mid = float((double(fa) + double(fb)) / 2);
            CAPTURE(u);
            REQUIRE(double(mid) == (double(fa) + double(fb)) / 2);
            REQUIRE(f32_to_f16(mid) == ((u & 1) ? b : a));
            REQUIRE(f32_to_f16(std::nextafter(mid, fa)) == a);
            REQUIRE(f32_to_f16(std::nextafter(mid, fb)) == b);
        }
    CHECK(f32_to_f16(65504.f) == 0x7bff);
    CHECK(f32_to_f16(std::nextafter(65520.f, 0.f)) == 0x7bff);
    CHECK(f32_to_f16(65520.f) == 0x7c00);  // the midpoint to 2^16 rounds to the even side: ∞
    CHECK(f32_to_f16(-1e30f) == 0xfc00);
    CHECK(f32_to_f16(INFINITY) == 0x7c00);
    CHECK(f32_to_f16(0x1p-25f) == 0x0000);  // halfway to the smallest subnormal: to even (0)
    CHECK(f32_to_f16(std::nextafter(0x1p-25f, 1.f)) == 0x0001);
    CHECK(f32_to_f16(1e-30f) == 0x0000);
    CHECK(f32_to_f16(-0.f) == 0x8000);
#if defined(__F16C__)
    // and as the hardware rounds (F16C vcvtps2ph, round to nearest even), over random bit patterns, NaNs included
    Rng rng(5);
    for (int i = 0; i < 1000000; i++) {
        const uint32_t bits = uint32_t(rng.below(1ull << 32));
        const float f = bits_to_float(bits);
        CAPTURE(bits);
        REQUIRE(f32_to_f16(f) == _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
        REQUIRE(float_to_bits(f16_to_f32(uint16_t(bits))) == float_to_bits(_cvtsh_ss(uint16_t(bits))));
    }
#endif
}

TEST_CASE("H2 int8 rows: one absmax scale per row, codes in -127..127") {
    const float W[8] = {0.5f, -1.27f, 0.f, 0.004f, 0.f, 0.f, 0.f, 0.f};  // row 1 is all zero
    RowMatrix M = make_rows(W, 2, 4, RowFormat::I8);
    CHECK(M.scale[0] == doctest::Approx(0.01f).epsilon(1e-6));
    CHECK(M.i8 == std::vector<int8_t>{50, -127, 0, 0, 0, 0, 0, 0});  // 0.004 / 0.01 = 0.4 → 0
    CHECK(M.scale[1] == 0.f);
    float back[4];
    row_values(rows_view(M), 0, back);
    CHECK(back[0] == M.scale[0] * 50);
    CHECK(back[1] == -1.27f);  // the largest |w| comes back as 127 · (|w| / 127), within one rounding
    CHECK_THROWS_WITH(make_rows(W, 1, 131073, RowFormat::I8), doctest::Contains("int8 rows of 131073 columns"));
}

TEST_CASE("H1 every fp16 kernel: y = H x within float rounding of the exact sum") {
    for (int cols : {1, 7, 15, 16, 17, 31, 32, 33, 63, 64, 65, 200, 768}) {
        const int rows = 37;
        std::vector<float> W = test_matrix(rows, cols, uint64_t(cols)), x(cols), y_plain(rows), y_fast(rows);
        Rng rng(cols + 1);
        for (float& v : x) v = float(rng.normal());
        RowMatrix M = make_rows(W.data(), rows, cols, RowFormat::F16);
        rows_dot_f16(M.f16.data(), rows, cols, x.data(), y_plain.data());
        rows_f16_simd(M.f16.data(), rows, cols, x.data(), y_fast.data());
        RowsScratch s;
        std::vector<float> y_gemv(rows);
        rows_gemv(rows_view(M), x.data(), y_gemv.data(), s);
        for (int i = 0; i < rows; i++) {
            double exact = 0, abs_sum = 0;
            for (int j = 0; j < cols; j++) {
                const double w = half_value(M.f16[size_t(i) * cols + j]);
                exact += w * x[j], abs_sum += std::fabs(w * x[j]);
            }
            const double bound = cols * 0x1p-24 * abs_sum * 1.01;  // n·u·Σ|w x|: float summation in any order
            CAPTURE(cols);
            CAPTURE(i);
            CHECK(std::fabs(y_plain[i] - exact) <= bound);
            CHECK(std::fabs(y_fast[i] - exact) <= bound);
            CHECK(y_gemv[i] == y_fast[i]);  // rows_gemv runs the registered kernel
        }
    }
}

TEST_CASE("H2 every int8 kernel: the integer sums bit for bit, extremes included") {
    for (int cols : {1, 31, 32, 33, 63, 64, 65, 127, 129, 773}) {
        const int rows = 19;
        Rng rng(cols);
        std::vector<int8_t> C(size_t(rows) * cols), q(cols);
        for (int8_t& c : C) c = int8_t(int(rng.below(255)) - 127);
        for (int8_t& v : q) v = int8_t(int(rng.below(255)) - 127);
        for (int j = 0; j < cols; j++) C[j] = 127, C[size_t(cols) + j] = -127;  // rows of the largest magnitude
        q[0] = 127;
        std::vector<int32_t> y_plain(rows), y_fast(rows);
        rows_dot_i8(C.data(), rows, cols, q.data(), y_plain.data());
        rows_i8_simd(C.data(), rows, cols, q.data(), y_fast.data());
        for (int i = 0; i < rows; i++) {
            int64_t exact = 0;
            for (int j = 0; j < cols; j++) exact += int64_t(C[size_t(i) * cols + j]) * q[j];
            CAPTURE(cols);
            CAPTURE(i);
            REQUIRE(y_plain[i] == exact);
            REQUIRE(y_fast[i] == exact);
        }
    }
}

TEST_CASE("H2 int8 head: logits = scale_i · (Σ c q) / s, near the fp32 product") {
    const int rows = 50, cols = 96;
    std::vector<float> W = test_matrix(rows, cols, 3), x(cols);
    Rng rng(4);
    for (float& v : x) v = float(rng.normal());
    RowMatrix M = make_rows(W.data(), rows, cols, RowFormat::I8);
    RowsScratch s;
    std::vector<float> y(rows);
    rows_gemv(rows_view(M), x.data(), y.data(), s);
    std::vector<int8_t> q(cols);
    const float sx = quantize_int8_absmax(x.data(), cols, q.data());
    float max_x = 0;
    for (float v : x) max_x = std::max(max_x, std::fabs(v));
    for (int i = 0; i < rows; i++) {
        int32_t acc = 0;
        double exact = 0, abs_w = 0;
        for (int j = 0; j < cols; j++) {
            acc += int32_t(M.i8[size_t(i) * cols + j]) * q[j];
            exact += double(W[size_t(i) * cols + j]) * x[j];
            abs_w += std::fabs(W[size_t(i) * cols + j]);
        }
        CHECK(y[i] == M.scale[i] * (float(acc) / sx));
        // each weight within scale/2 of its code, each input within 1/(2 s) of q/s:
        const double bound = 0.5 * M.scale[i] * cols * max_x + 0.5 / sx * abs_w + 1e-4 * abs_w * max_x;
        CHECK(std::fabs(y[i] - exact) <= bound);
    }
}

TEST_CASE("H1 H2 packed files with fp16 and int8 E and H: version 4, round trip, the same logits, bad bytes refused") {
    const std::vector<int> toks = {1, 5, 2, 7, 3, 0};
    PackedModel f32 = pack_model(trained_like(Quant::FBI, 21), "ab");
    CHECK(read_u32_at(packed_model_bytes(f32), 8) == 1u);  // fp32 E and H: the version-1 layout, as before
    for (RowFormat emb : {RowFormat::F32, RowFormat::F16, RowFormat::I8})
        for (RowFormat head : {RowFormat::F16, RowFormat::I8, RowFormat::F32}) {
            if (emb == RowFormat::F32 && head == RowFormat::F32) continue;
            const std::string formats = std::string(row_format_name(emb)) + " E, " + row_format_name(head) + " H";
            CAPTURE(formats);
            PackedModel pm = f32;
            set_row_formats(pm, emb, head);
            auto bytes = packed_model_bytes(pm);
            CHECK(read_u32_at(bytes, 8) == 4u);
            CHECK(read_u32_at(bytes, 20) == uint32_t(emb));
            CHECK(read_u32_at(bytes, 24) == uint32_t(head));
            const Config& c = pm.cfg;
            const uint64_t grew = rows_bytes(emb, c.V, c.C) + rows_bytes(head, c.V, c.C) + 8;  // + the two fields
            CHECK(bytes.size() == packed_model_bytes(f32).size() - 8ull * c.V * c.C + grew);
            PackedModel back = parse_packed_model(bytes, "mem");
            CHECK(packed_model_bytes(back) == bytes);
            CHECK(decode_all(back, Kernel::Fast, toks) == decode_all(pm, Kernel::Fast, toks));
            // the cost of the format against fp32 E and H, with float linears (UnpackedRows: no int8 activations
            // whose rounding a changed input could flip): small next to the logits
            MaxDiff d = max_diff(float_logits(pm, toks), float_logits(f32, toks));
            CHECK(d.worst > 0);
            CHECK(d.worst < (head == RowFormat::I8 || emb == RowFormat::I8 ? 0.02 : 0.001) * d.scale);
        }
    PackedModel pm = f32;
    set_row_formats(pm, RowFormat::I8, RowFormat::I8);
    auto bytes = packed_model_bytes(pm);
    auto bad = bytes;
    bad[24] = 3;
    CHECK_THROWS_WITH(parse_packed_model(reseal(bad), "m"), doctest::Contains("unknown LM head format 3 (0 fp32, 1 fp16, 2 int8)"));
    bad = bytes;
    bad[20] = 7;
    CHECK_THROWS_WITH(parse_packed_model(reseal(bad), "m"), doctest::Contains("unknown embedding format 7"));
    const size_t emb_at = 8 + 4 * 5 + 6 * 4 + 8 + pm.vocab.size();  // after magic, 5 u32 fields, dims, vocab
    bad = bytes;
    bad[emb_at + 4 * size_t(pm.cfg.V) + 3] = 0x80;  // a code of row 0 = −128
    CHECK_THROWS_WITH(parse_packed_model(reseal(bad), "m"), doctest::Contains("embedding row 0 has code −128"));
    bad = bytes;
    const float nan = NAN;
    std::memcpy(&bad[emb_at + 4], &nan, 4);  // the scale of row 1
    CHECK_THROWS_WITH(parse_packed_model(reseal(bad), "m"), doctest::Contains("embedding row 1 has scale nan"));
    bad = bytes;
    bad.resize(bad.size() - 9);
    CHECK_THROWS_WITH(parse_packed_model(bad, "m"), doctest::Contains("truncated"));
}
