// fast_kernels.hpp — the fast packed GEMV kernels, a plug-in for fbi_llm.hpp: include it after (or instead of)
// the header and Kernel::Fast runs the table-lookup kernel below (AVX2 where the compiler flags allow, portable
// otherwise) instead of the header's gemv_popcount. Every kernel here returns bit for bit the ±1 sums of
// gemv_reference (tests/test_packed.cpp runs each on awkward shapes and extreme values).
//   make_act_planes_fast  make_act_planes, 32 activations at a time with AVX2
//   gemv_popcount_avx2    the [S7] identity, 256 columns at a time, pshufb popcounts     (only with AVX2)
//   gemv_popcount_fast    the best popcount kernel the flags allow
//   gemv_tl               [S6] table lookup: 4 weight bits index a per-token 16-entry table, portable
//   gemv_tl_avx2          the same lookups for 32 rows per pshufb — the fastest           (only with AVX2)
//   gemv_tl_avx512        the same lookups for two tiles (64 rows) per 512-bit pshufb       (only with AVX-512BW)
//   gemv_tl_fast          the best table-lookup kernel the flags allow: what Kernel::Fast runs
//   gemm_tl_fast          the same for many tokens (prefill): each weight tile read once per 32 tokens
//   rows_f16_simd         y = H x for fp16 rows of E / H ([H1]): F16C or AVX-512 conversion + FMA
//   rows_i8_simd          Σ c·q for int8 rows ([H2]), exact: AVX-512 VNNI vpdpbusd, or AVX2 vpmaddubsw
// `make bench` (examples/bench/bench_gemv.cpp) times each against Eigen's fp32 GEMV.
//
// METHOD NOTES
//   [S6] table lookup: per group of 4 inputs the 16 sums ±q_a ±q_b ±q_c ±q_d, indexed by 4 weight bits
//        (the T-MAC idea, arXiv 2407.00088); the sums equal [S7]'s bit for bit
//
// EQUATION MAP   label → function → test
//   [S7] popcount identity, AVX2           gemv_popcount_avx2                "S7 every kernel ..."
//   [S6] table lookup                      gemv_tl, gemv_tl_avx2, _avx512    "S7 table-lookup ...", "S7 every kernel ..."
//   [H1] fp16 rows (header)                rows_f16_simd                     "H1 every fp16 kernel ..."
//   [H2] int8 rows (header)                rows_i8_simd                      "H2 every int8 kernel ..."
#pragma once
#include "../../fbi_llm.hpp"

#if defined(__AVX2__) || defined(__F16C__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace fbi {

// Streams of weights ask for the bytes kPrefetchAhead ahead of the ones they read now (a prefetch never faults, so
// reading past the end is harmless). One core's hardware prefetcher alone keeps too few cache-line misses in flight,
// worse with several interleaved streams: measured on a cold 32000×768 fp16 head (Xeon, 1 thread), 9.3 ms without
// and 4.9 ms with the prefetch, the second at the streaming-read rate of the same machine.
constexpr size_t kPrefetchAhead = 8192;  // bytes: ≈ 5 rows of a width-768 fp16 head, one tile pair at width 2048
inline void prefetch_ahead(const void* p) {
    __builtin_prefetch(static_cast<const char*>(p) + kPrefetchAhead, 0, 3);  // for reading, into every cache level
}

#if defined(__AVX2__)
// ----------------------------------------------------------------------------------------------------------------
// AVX2 popcount kernel
// ----------------------------------------------------------------------------------------------------------------
// Same identity as gemv_popcount, 256 columns (4 words) at a time. AVX2 has no vector popcount instruction;
// the classic substitute (Mula's algorithm) splits every byte into two nibbles and looks each up in a
// 16-entry table with pshufb (32 lookups per instruction). Two tricks cut the work per plane:
//  * The weight nibbles (W & 0x0F, (W >> 4) & 0x0F) are computed once per 256 columns and shared by all
//    8 planes; the planes are pre-shifted once per token (P_k >> 4), so each plane costs 2 AND + 2 pshufb
//    + 2 add.
//  * Bit 7 of o = q + 128 is the complement of q's sign bit, so
//    128·popcount(W & P_7) − 128·popcount(W) = −128·popcount(W & ~P_7):
//    we count W AND-NOT P_7 with weight −128 and never need popcount(W) itself.
// Byte counters hold at most 8 per plane per chunk; they are flushed to 64-bit lanes (vpsadbw) every 31
// chunks (31·8 = 248 ≤ 255). Bound: ≈ 51 vector instructions (16 of them pshufb) per 256 weights, so it is
// instruction bound (≈ 3 vector instructions per cycle), not memory bound: it reads 1/8 byte per weight.
namespace detail {

inline __m256i nibble_popcount_lut() {
    return _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,  //
                            0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
}

// Σ of the 4 unsigned 64-bit lanes.
inline int64_t hsum_epi64(__m256i v) {
    alignas(32) int64_t t[4];
    _mm256_store_si256((__m256i*)t, v);
    return t[0] + t[1] + t[2] + t[3];
}

// One row: returns Σ_k 2^k popcount(W & P_k) − 128·popcount(W) = Σ_{b=+1} q_j (before the ×2 − Σq step).
// plo/phi: 8 planes, low nibbles (P_k & 0x0F..) and pre-shifted high nibbles ((P_k >> 4) & 0x0F..).
inline int32_t sum_q_plus_avx2(const uint64_t* w_row, int words, const uint64_t* plo, const uint64_t* phi) {
    const __m256i lut = nibble_popcount_lut();
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    const __m256i zero = _mm256_setzero_si256();
    __m256i total[8];  // 64-bit lane sums per plane
    __m256i bytes[8];  // byte counters per plane (flushed every 31 chunks)
    for (int k = 0; k < 8; k++) total[k] = bytes[k] = zero;
    const int chunks = words / 4;
    int since_flush = 0;
    for (int c = 0; c < chunks; c++) {
        __m256i w = _mm256_loadu_si256((const __m256i*)(w_row + 4 * c));
        __m256i w_lo = _mm256_and_si256(w, low4);                         // low nibble of every weight byte
        __m256i w_hi = _mm256_and_si256(_mm256_srli_epi16(w, 4), low4);  // high nibble, moved down
        for (int k = 0; k < 8; k++) {
            __m256i p_lo = _mm256_loadu_si256((const __m256i*)(plo + (size_t)k * words + 4 * c));
            __m256i p_hi = _mm256_loadu_si256((const __m256i*)(phi + (size_t)k * words + 4 * c));
            __m256i x_lo, x_hi;
            if (k < 7) {  // W & P_k
                x_lo = _mm256_and_si256(w_lo, p_lo);
                x_hi = _mm256_and_si256(w_hi, p_hi);
            } else {  // W & ~P_7 (andnot(a, b) = ~a & b); p_lo/p_hi are nibble-masked so ~p keeps only W's nibble
                x_lo = _mm256_andnot_si256(p_lo, w_lo);
                x_hi = _mm256_andnot_si256(p_hi, w_hi);
            }
            bytes[k] = _mm256_add_epi8(bytes[k], _mm256_shuffle_epi8(lut, x_lo));  // popcount of each nibble
            bytes[k] = _mm256_add_epi8(bytes[k], _mm256_shuffle_epi8(lut, x_hi));
        }
        if (++since_flush == 31 || c == chunks - 1) {  // ≤ 31·8 = 248 per byte counter
            for (int k = 0; k < 8; k++) {
                total[k] = _mm256_add_epi64(total[k], _mm256_sad_epu8(bytes[k], zero));  // Σ 8 bytes → 64-bit lane
                bytes[k] = zero;
            }
            since_flush = 0;
        }
    }
    int64_t sum = 0;
    for (int k = 0; k < 7; k++) sum += hsum_epi64(total[k]) << k;  // 2^k · popcount(W & P_k)
    sum -= 128 * hsum_epi64(total[7]);                              // −128 · popcount(W & ~P_7)
    for (int w = 4 * chunks; w < words; w++) {                      // leftover words: scalar, same identity
        for (int k = 0; k < 8; k++) {
            const uint64_t p = plo[(size_t)k * words + w] | (phi[(size_t)k * words + w] << 4);  // P_k again
            if (k < 7) sum += (int64_t)popcount64(w_row[w] & p) << k;
            else sum -= 128 * (int64_t)popcount64(w_row[w] & ~p);
        }
    }
    return (int32_t)sum;
}

}  // namespace detail

inline void gemv_popcount_avx2(const PackedSigns& W, const ActPlanes& A, int32_t* y) {
    assert(W.cols == A.n && W.words == A.words);
    // Per token: split every plane into its low nibbles and its (shifted-down) high nibbles.
    const size_t plane_words = (size_t)8 * A.words;
    std::vector<uint64_t> plo(plane_words), phi(plane_words);
    for (size_t t = 0; t < plane_words; t++) {
        plo[t] = A.planes[t] & 0x0F0F0F0F0F0F0F0FULL;
        phi[t] = (A.planes[t] >> 4) & 0x0F0F0F0F0F0F0F0FULL;
    }
    const long work = (long)W.rows * W.cols;
    (void)work;
#pragma omp parallel for schedule(static) if (work >= kParallelMinWeights)
    for (int i = 0; i < W.rows; i++) {
        int32_t sum_q_plus = detail::sum_q_plus_avx2(&W.bits[(size_t)i * W.words], W.words, plo.data(), phi.data());
        y[i] = 2 * sum_q_plus - A.sum_q;  // [S7]: Σ b q = 2·Σ_{b=+1} q − Σ q
    }
}
#endif  // __AVX2__

// make_act_planes with 32 activations at a time: movemask_epi8 collects bit 7 of every byte into a 32-bit
// mask, i.e. 32 bits of plane 7; shifting every byte left by one (add to itself) brings bit 6 up, etc.
// The same planes as make_act_planes (test "S7 make_act_planes"); portable code without AVX2.
inline ActPlanes make_act_planes_fast(const int8_t* q, int n) {
#if defined(__AVX2__)
    ActPlanes A = act_planes_empty(q, n);
    int j0 = 0;
    const __m256i flip = _mm256_set1_epi8((char)0x80);  // q + 128 == q XOR 0x80 for int8 q
    for (; j0 + 32 <= n; j0 += 32) {
        __m256i o = _mm256_xor_si256(_mm256_loadu_si256((const __m256i*)(q + j0)), flip);
        for (int k = 7; k >= 0; k--) {
            uint32_t bits32 = (uint32_t)_mm256_movemask_epi8(o);  // bit k of o_{j0..j0+31}
            A.planes[(size_t)k * A.words + j0 / 64] |= (uint64_t)bits32 << (j0 % 64);
            o = _mm256_add_epi8(o, o);  // shift each byte left by 1
        }
    }
    set_act_plane_bits(A, q, j0, n);  // the tail, as in make_act_planes
    return A;
#else
    return make_act_planes(q, n);
#endif
}

// The best popcount kernel for the compiler flags. With AVX-512 VPOPCNTDQ (Ice Lake and later, Zen 4) GCC
// vectorises the portable loop with vpopcntq at -O3, which beats the AVX2 pshufb emulation (`make bench`
// times both); with AVX2 only, the pshufb kernel wins; otherwise the portable kernel runs.
inline void gemv_popcount_fast(const PackedSigns& W, const ActPlanes& A, int32_t* y) {
#if defined(__AVX2__) && !(defined(__AVX512VPOPCNTDQ__) && defined(__AVX512VL__))
    gemv_popcount_avx2(W, A, y);
#else
    gemv_popcount(W, A, y);
#endif
}

// ----------------------------------------------------------------------------------------------------------------
// Table-lookup (TL) kernel
// ----------------------------------------------------------------------------------------------------------------
// Idea (as in T-MAC and bitnet.cpp's TL kernels; this is our own formulation for ±1 weights):
// group the columns in fours. For group g and each of the 16 possible sign patterns v of 4 weights,
// the partial sum Σ_{i<4, bit i of v = 1} o_{4g+i} depends only on the token, so it is computed ONCE per
// token into a 16-entry table T_g. Then every row needs one table lookup per 4 weights, indexed by the
// row's 4 weight bits — a 4-bit nibble of the packed row. With pshufb, 32 rows look up at once.
//
// Exactness with 8-bit table entries: Σ of 4 values o ∈ [0,255] needs 10 bits, too wide for pshufb's byte
// entries. So split every o_j = 16·h_j + l_j (h, l ∈ [0,15], the "o = q + 128 unsigned trick" one step
// further): two tables per group, T^l_g and T^h_g, each entry ≤ 4·15 = 60, and
//   Σ_{b=+1} o_j = Σ_g T^l_g[nibble_g] + 16 · Σ_g T^h_g[nibble_g].
// Then as in [S7]: y_i = 2·(Σ_{b=+1} o_j − 128·popcount(W_i)) − Σ_j q_j, with popcount(W_i) stored at pack time.

// Columns are handled one byte (8 columns = 2 groups) at a time; the byte count is rounded up to even so
// the AVX2 loop can take 2 bytes (4 groups) per step. Padding weights are 0, so they look up T[0] = 0.
inline int tl_byte_cols(int cols) { return ((cols + 7) / 8 + 1) / 2 * 2; }
constexpr int kTileRows = 32;  // rows per tile = bytes per 256-bit register

// Weights re-laid out for the TL kernel: "byte-transposed tiles of 32 rows". For tile t and byte column c,
// the 32 bytes tiles[(t*byte_cols + c)*32 + r] are byte c of rows 32t+r, r = 0..31. So one 256-bit load
// gives 32 rows' nibbles for groups 2c (low nibble) and 2c+1 (high nibble). Rows past `rows` are 0.
struct PackedTL {
    int rows = 0, cols = 0, tiles = 0, byte_cols = 0;
    std::vector<uint8_t> tiles_bytes;  // tiles × byte_cols × 32
    std::vector<int32_t> n_plus;       // popcount(W_i) for each row (needed by the [S7] identity)
};

inline PackedTL pack_tl(const PackedSigns& W) {
    PackedTL T;
    T.rows = W.rows;
    T.cols = W.cols;
    T.tiles = (W.rows + kTileRows - 1) / kTileRows;
    T.byte_cols = tl_byte_cols(W.cols);
    T.tiles_bytes.assign((size_t)T.tiles * T.byte_cols * kTileRows, 0);
    T.n_plus.assign(W.rows, 0);
    for (int i = 0; i < W.rows; i++) {
        const uint64_t* row = &W.bits[(size_t)i * W.words];
        for (int w = 0; w < W.words; w++) T.n_plus[i] += popcount64(row[w]);
        const int t = i / kTileRows, r = i % kTileRows;
        for (int c = 0; c < W.words * 8 && c < T.byte_cols; c++) {
            uint8_t byte = (uint8_t)(row[c / 8] >> (8 * (c % 8)));  // columns 8c .. 8c+7 (little-endian bits)
            T.tiles_bytes[((size_t)t * T.byte_cols + c) * kTileRows + r] = byte;
        }
    }
    return T;
}

// Per-token tables: for group g (columns 4g..4g+3), 32 bytes: T^l_g[0..15] then T^h_g[0..15], where
// T^x_g[v] = Σ_{i<4, bit i of v} x_{4g+i} for x = l (low nibble of o) and x = h (high nibble of o).
struct ActTables {
    int n = 0, groups = 0;        // groups = 2 · tl_byte_cols(n)
    std::vector<uint8_t> tables;  // groups × 32
    int32_t sum_q = 0;
};

inline ActTables make_act_tables(const int8_t* q, int n) {
    ActTables A;
    A.n = n;
    A.groups = 2 * tl_byte_cols(n);
    A.tables.assign((size_t)A.groups * 32, 0);
    A.sum_q = 0;
    std::vector<uint8_t> o((size_t)A.groups * 4, 0);  // padded columns: o = 0 (their weights are 0 anyway)
    for (int j = 0; j < n; j++) {
        A.sum_q += q[j];
        o[j] = (uint8_t)(q[j] + 128);  // [S7]: o_j = q_j + 128 ∈ [0, 255]
    }
    int g = 0;
#if defined(__AVX2__)
    // 16 table entries = Σ over the 4 inputs of (input i if bit i of v else 0). pshufb with index 0x80
    // yields 0, so each term is one pshufb of x = [l_0..l_3 | h_0..h_3] with a constant selector.
    const __m256i sel[4] = {
        _mm256_setr_epi8(-128, 0, -128, 0, -128, 0, -128, 0, -128, 0, -128, 0, -128, 0, -128, 0,  //
                         -128, 0, -128, 0, -128, 0, -128, 0, -128, 0, -128, 0, -128, 0, -128, 0),
        _mm256_setr_epi8(-128, -128, 1, 1, -128, -128, 1, 1, -128, -128, 1, 1, -128, -128, 1, 1,  //
                         -128, -128, 1, 1, -128, -128, 1, 1, -128, -128, 1, 1, -128, -128, 1, 1),
        _mm256_setr_epi8(-128, -128, -128, -128, 2, 2, 2, 2, -128, -128, -128, -128, 2, 2, 2, 2,  //
                         -128, -128, -128, -128, 2, 2, 2, 2, -128, -128, -128, -128, 2, 2, 2, 2),
        _mm256_setr_epi8(-128, -128, -128, -128, -128, -128, -128, -128, 3, 3, 3, 3, 3, 3, 3, 3,  //
                         -128, -128, -128, -128, -128, -128, -128, -128, 3, 3, 3, 3, 3, 3, 3, 3)};
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    const __m256i shifts = _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4);  // lane 0: l = o & 15, lane 1: h = o >> 4
    for (; g < A.groups; g++) {
        uint32_t four;
        std::memcpy(&four, &o[(size_t)4 * g], 4);
        __m256i x = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)four), shifts), low4);
        __m256i t = _mm256_shuffle_epi8(x, sel[0]);
        for (int i = 1; i < 4; i++) t = _mm256_add_epi8(t, _mm256_shuffle_epi8(x, sel[i]));
        _mm256_storeu_si256((__m256i*)&A.tables[(size_t)32 * g], t);
    }
#endif
    for (; g < A.groups; g++) {  // portable: build each 16-entry table by doubling
        uint8_t* Tl = &A.tables[(size_t)32 * g];
        uint8_t* Th = Tl + 16;
        Tl[0] = Th[0] = 0;
        for (int i = 0; i < 4; i++) {
            const uint8_t oi = o[(size_t)4 * g + i];
            for (int v = 0; v < (1 << i); v++) {  // entries with bit i set = entries without it + x_i
                Tl[(1 << i) + v] = (uint8_t)(Tl[v] + (oi & 15));
                Th[(1 << i) + v] = (uint8_t)(Th[v] + (oi >> 4));
            }
        }
    }
    return A;
}

// [S7] for one tile's rows, from their Σ_{b=+1} o_j: y_i = 2·(Σ_{b=+1} o_j − 128·popcount(W_i)) − Σ_j q_j.
inline void finish_tile(const PackedTL& W, int tile, const int32_t* sum_o_plus, int32_t sum_q, int32_t* y) {
    for (int r = 0; r < kTileRows && tile * kTileRows + r < W.rows; r++) {
        const int i = tile * kTileRows + r;
        y[i] = 2 * (sum_o_plus[r] - 128 * W.n_plus[i]) - sum_q;
    }
}

// Portable TL kernel, organised like gemv_tl_avx2 so the two read side by side: for each tile of 32 rows
// and each weight byte column c (groups 2c and 2c+1), look up the 32 rows' nibbles in the two groups'
// tables. The inner loop over r is exactly what one pshufb does for 32 rows at once in the AVX2 kernel.
inline void gemv_tl(const PackedTL& W, const ActTables& A, int32_t* y) {
    assert(W.cols == A.n && 2 * W.byte_cols == A.groups);
    const long work = (long)W.rows * W.cols;
    (void)work;
#pragma omp parallel for schedule(static) if (work >= kParallelMinWeights)
    for (int t = 0; t < W.tiles; t++) {
        int32_t sum_l[kTileRows] = {0}, sum_h[kTileRows] = {0};  // Σ_g T^l_g[nibble], Σ_g T^h_g[nibble]
        for (int c = 0; c < W.byte_cols; c++) {
            const uint8_t* bytes = &W.tiles_bytes[((size_t)t * W.byte_cols + c) * kTileRows];  // byte c, 32 rows
            const uint8_t* T0 = &A.tables[(size_t)32 * (2 * c)];      // group 2c:   indexed by the low nibble
            const uint8_t* T1 = &A.tables[(size_t)32 * (2 * c + 1)];  // group 2c+1: indexed by the high nibble
            for (int r = 0; r < kTileRows; r++) {
                const int lo = bytes[r] & 15, hi = bytes[r] >> 4;
                sum_l[r] += T0[lo] + T1[hi];            // T^l tables: bytes 0..15 of each group
                sum_h[r] += T0[16 + lo] + T1[16 + hi];  // T^h tables: bytes 16..31
            }
        }
        for (int r = 0; r < kTileRows && t * kTileRows + r < W.rows; r++) {
            const int i = t * kTileRows + r;
            const int32_t sum_o_plus = sum_l[r] + 16 * sum_h[r];          // Σ_{b=+1} o_j, o = 16h + l
            const int32_t sum_q_plus = sum_o_plus - 128 * W.n_plus[i];  // [S7]: − 128·popcount(W_i)
            y[i] = 2 * sum_q_plus - A.sum_q;                            // [S7]: 2·Σ_{b=+1} q − Σ q
        }
    }
}

#if defined(__AVX2__)
// AVX2 TL kernel: one tile of 32 rows per register, 4 groups (16 columns, 2 weight bytes per row) per step.
//   step:  2 loads of 32 weight bytes → 4 nibble vectors (and, srli+and)
//          8 pshufb (4 groups × {T^l, T^h}) → byte sums acc_l, acc_h ≤ 4·60 = 240 (fits uint8)
//          interleave (unpacklo/hi) and vpmaddubsw with (1, 16) → int16 l + 16h per row ≤ 4080
//   the 16-bit lanes are read as unsigned (add_epi16 wraps, the sums are ≥ 0): every 16 steps
//   (≤ 16·4080 = 65280 < 65536) they are zero-extended into int32 accumulators.
// ≈ 28 vector instructions per 512 weights (≈ 18 weights per instruction vs ≈ 5 for the popcount kernel).
// Bound: instructions (8 of them pshufb per step), not memory: it streams 1/8 byte per weight, and a second
// core nearly doubles the speed (`make bench` shows both).
namespace detail {

// The four int32 accumulators of a tile back in row order (they hold rows 0-3 | 16-19, 4-7 | 20-23, 8-11 | 24-27,
// 12-15 | 28-31, one 128-bit lane each): rows 0-7, 8-15, 16-23, 24-31.
inline void store_tile_rows(const __m256i acc32[4], int32_t out[kTileRows]) {
    _mm256_storeu_si256((__m256i*)(out + 0), _mm256_permute2x128_si256(acc32[0], acc32[1], 0x20));
    _mm256_storeu_si256((__m256i*)(out + 8), _mm256_permute2x128_si256(acc32[2], acc32[3], 0x20));
    _mm256_storeu_si256((__m256i*)(out + 16), _mm256_permute2x128_si256(acc32[0], acc32[1], 0x31));
    _mm256_storeu_si256((__m256i*)(out + 24), _mm256_permute2x128_si256(acc32[2], acc32[3], 0x31));
}

inline void tl_tile_avx2(const uint8_t* tile, int byte_cols, const uint8_t* tables, int32_t out[kTileRows]) {
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    const __m256i one_sixteen = _mm256_set1_epi16(16 << 8 | 1);  // bytes (1, 16, 1, 16, ...)
    const __m256i zero = _mm256_setzero_si256();
    // Row order inside the registers after the unpacks (per 128-bit lane): acc32[0] = rows 0-3 | 16-19,
    // acc32[1] = 4-7 | 20-23, acc32[2] = 8-11 | 24-27, acc32[3] = 12-15 | 28-31. Fixed at the end.
    __m256i acc32[4] = {zero, zero, zero, zero};
    __m256i acc16_a = zero, acc16_b = zero;  // uint16: rows 0-7 | 16-23 and rows 8-15 | 24-31
    int steps_in_int16 = 0;
    for (int c = 0; c < byte_cols; c += 2) {
        prefetch_ahead(tile + (size_t)c * kTileRows);
        const __m256i b0 = _mm256_loadu_si256((const __m256i*)(tile + (size_t)c * kTileRows));
        const __m256i b1 = _mm256_loadu_si256((const __m256i*)(tile + (size_t)(c + 1) * kTileRows));
        const __m256i nib[4] = {_mm256_and_si256(b0, low4), _mm256_and_si256(_mm256_srli_epi16(b0, 4), low4),
                                _mm256_and_si256(b1, low4), _mm256_and_si256(_mm256_srli_epi16(b1, 4), low4)};
        __m256i acc_l = zero, acc_h = zero;
        for (int k = 0; k < 4; k++) {  // groups 2c .. 2c+3
            const uint8_t* Tg = tables + (size_t)32 * (2 * c + k);
            const __m256i Tl = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)Tg));
            const __m256i Th = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)(Tg + 16)));
            acc_l = _mm256_add_epi8(acc_l, _mm256_shuffle_epi8(Tl, nib[k]));  // T^l_g[nibble] for 32 rows
            acc_h = _mm256_add_epi8(acc_h, _mm256_shuffle_epi8(Th, nib[k]));
        }
        // (l, h) byte pairs per row → int16 l + 16·h (vpmaddubsw: unsigned × signed, adjacent pairs added).
        acc16_a = _mm256_add_epi16(acc16_a, _mm256_maddubs_epi16(_mm256_unpacklo_epi8(acc_l, acc_h), one_sixteen));
        acc16_b = _mm256_add_epi16(acc16_b, _mm256_maddubs_epi16(_mm256_unpackhi_epi8(acc_l, acc_h), one_sixteen));
        if (++steps_in_int16 == 16 || c + 2 >= byte_cols) {  // widen before 16 bits could overflow
            acc32[0] = _mm256_add_epi32(acc32[0], _mm256_unpacklo_epi16(acc16_a, zero));
            acc32[1] = _mm256_add_epi32(acc32[1], _mm256_unpackhi_epi16(acc16_a, zero));
            acc32[2] = _mm256_add_epi32(acc32[2], _mm256_unpacklo_epi16(acc16_b, zero));
            acc32[3] = _mm256_add_epi32(acc32[3], _mm256_unpackhi_epi16(acc16_b, zero));
            acc16_a = acc16_b = zero;
            steps_in_int16 = 0;
        }
    }
    store_tile_rows(acc32, out);
}

}  // namespace detail

inline void gemv_tl_avx2(const PackedTL& W, const ActTables& A, int32_t* y) {
    assert(W.cols == A.n && 2 * W.byte_cols == A.groups);
    const long work = (long)W.rows * W.cols;
    (void)work;
#pragma omp parallel for schedule(static) if (work >= kParallelMinWeights)
    for (int t = 0; t < W.tiles; t++) {
        int32_t sum_o_plus[kTileRows];  // Σ_{b=+1} o_j for the tile's 32 rows
        detail::tl_tile_avx2(&W.tiles_bytes[(size_t)t * W.byte_cols * kTileRows], W.byte_cols, A.tables.data(),
                             sum_o_plus);
        finish_tile(W, t, sum_o_plus, A.sum_q, y);  // [S7] identity
    }
}
#endif  // __AVX2__

#if defined(__AVX2__) && defined(__AVX512BW__)
// AVX-512 TL kernel: the AVX2 kernel's steps on two tiles at once. A 512-bit pshufb looks up in each of its four
// 128-bit lanes, so with the group's 16-entry table in all four lanes, lanes 0–1 hold tile t's 32 rows and lanes
// 2–3 tile t+1's: half the instructions per weight, the same layout (PackedTL) and the same sums.
namespace detail {

inline __m512i two_tiles(const uint8_t* a, const uint8_t* b) {  // 32 bytes of tile t | 32 bytes of tile t+1
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i*)a)),
                              _mm256_loadu_si256((const __m256i*)b), 1);
}
inline void tl_tile_pair_avx512(const uint8_t* tile_a, const uint8_t* tile_b, int byte_cols, const uint8_t* tables,
                                int32_t out_a[kTileRows], int32_t out_b[kTileRows]) {
    const __m512i low4 = _mm512_set1_epi8(0x0F);
    const __m512i one_sixteen = _mm512_set1_epi16(16 << 8 | 1);
    const __m512i zero = _mm512_setzero_si512();
    __m512i acc32[4] = {zero, zero, zero, zero};  // per 256-bit half, the row order of tl_tile_avx2
    __m512i acc16_a = zero, acc16_b = zero;
    int steps_in_int16 = 0;
    for (int c = 0; c < byte_cols; c += 2) {
        prefetch_ahead(tile_a + (size_t)c * kTileRows), prefetch_ahead(tile_b + (size_t)c * kTileRows);
        const __m512i b0 = two_tiles(tile_a + (size_t)c * kTileRows, tile_b + (size_t)c * kTileRows);
        const __m512i b1 = two_tiles(tile_a + (size_t)(c + 1) * kTileRows, tile_b + (size_t)(c + 1) * kTileRows);
        const __m512i nib[4] = {_mm512_and_si512(b0, low4), _mm512_and_si512(_mm512_srli_epi16(b0, 4), low4),
                                _mm512_and_si512(b1, low4), _mm512_and_si512(_mm512_srli_epi16(b1, 4), low4)};
        __m512i acc_l = zero, acc_h = zero;
        for (int k = 0; k < 4; k++) {
            const uint8_t* Tg = tables + (size_t)32 * (2 * c + k);
            const __m512i Tl = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i*)Tg));
            const __m512i Th = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i*)(Tg + 16)));
            acc_l = _mm512_add_epi8(acc_l, _mm512_shuffle_epi8(Tl, nib[k]));
            acc_h = _mm512_add_epi8(acc_h, _mm512_shuffle_epi8(Th, nib[k]));
        }
        acc16_a = _mm512_add_epi16(acc16_a, _mm512_maddubs_epi16(_mm512_unpacklo_epi8(acc_l, acc_h), one_sixteen));
        acc16_b = _mm512_add_epi16(acc16_b, _mm512_maddubs_epi16(_mm512_unpackhi_epi8(acc_l, acc_h), one_sixteen));
        if (++steps_in_int16 == 16 || c + 2 >= byte_cols) {  // widen before 16 bits could overflow
            acc32[0] = _mm512_add_epi32(acc32[0], _mm512_unpacklo_epi16(acc16_a, zero));
            acc32[1] = _mm512_add_epi32(acc32[1], _mm512_unpackhi_epi16(acc16_a, zero));
            acc32[2] = _mm512_add_epi32(acc32[2], _mm512_unpacklo_epi16(acc16_b, zero));
            acc32[3] = _mm512_add_epi32(acc32[3], _mm512_unpackhi_epi16(acc16_b, zero));
            acc16_a = acc16_b = zero;
            steps_in_int16 = 0;
        }
    }
    for (int half = 0; half < 2; half++) {  // each 256-bit half is one tile, in tl_tile_avx2's row order
        __m256i a[4];
        for (int i = 0; i < 4; i++) a[i] = half ? _mm512_extracti64x4_epi64(acc32[i], 1) : _mm512_castsi512_si256(acc32[i]);
        store_tile_rows(a, half ? out_b : out_a);
    }
}

}  // namespace detail

inline void gemv_tl_avx512(const PackedTL& W, const ActTables& A, int32_t* y) {
    assert(W.cols == A.n && 2 * W.byte_cols == A.groups);
    const long work = (long)W.rows * W.cols;
    (void)work;
    const int pairs = (W.tiles + 1) / 2;
    const size_t tile_bytes = (size_t)W.byte_cols * kTileRows;
#pragma omp parallel for schedule(static) if (work >= kParallelMinWeights)
    for (int p = 0; p < pairs; p++) {
        int32_t sums[2][kTileRows];  // Σ_{b=+1} o_j for the two tiles' rows
        const int t = 2 * p;
        if (t + 1 < W.tiles)
            detail::tl_tile_pair_avx512(&W.tiles_bytes[t * tile_bytes], &W.tiles_bytes[(t + 1) * tile_bytes], W.byte_cols,
                                        A.tables.data(), sums[0], sums[1]);
        else  // an odd last tile
            detail::tl_tile_avx2(&W.tiles_bytes[t * tile_bytes], W.byte_cols, A.tables.data(), sums[0]);
        for (int k = 0; k < 2 && t + k < W.tiles; k++) finish_tile(W, t + k, sums[k], A.sum_q, y);  // [S7] identity
    }
}
#endif  // __AVX2__ && __AVX512BW__

// The best table-lookup kernel for the compiler flags.
inline void gemv_tl_fast(const PackedTL& W, const ActTables& A, int32_t* y) {
#if defined(__AVX2__) && defined(__AVX512BW__)
    gemv_tl_avx512(W, A, y);
#elif defined(__AVX2__)
    gemv_tl_avx2(W, A, y);
#else
    gemv_tl(W, A, y);
#endif
}

// Many tokens at once (prefill): Y[t·rows + i] = gemv_tl_fast's y_i for token t, bit for bit. Each tile (pair) of
// weights is read once for a block of kTokenBlock tokens and stays in L1 while their tables come from L2, instead of
// streaming every weight from memory once per token.
constexpr int kTokenBlock = 32;
inline void gemm_tl_fast(const PackedTL& W, const ActTables* const* A, int n_tok, int32_t* Y) {
    const long work = (long)W.rows * W.cols * n_tok;
    (void)work;
    const size_t tile_bytes = (size_t)W.byte_cols * kTileRows;
    (void)tile_bytes;  // the portable loop below indexes bytes itself
    auto finish = [&](int tile, int t, const int32_t* sums) {  // [S7] identity, into token t's row of Y
        finish_tile(W, tile, sums, A[t]->sum_q, Y + (size_t)t * W.rows);
    };
#if defined(__AVX2__)
    const int step = 2;  // tiles per work item: a pair with AVX-512, else two single tiles
#else
    const int step = 1;
#endif
    const int items = (W.tiles + step - 1) / step;
    for (int t0 = 0; t0 < n_tok; t0 += kTokenBlock) {
        const int t1 = std::min(n_tok, t0 + kTokenBlock);
#pragma omp parallel for schedule(static) if (work >= kParallelMinWeights)
        for (int it = 0; it < items; it++) {
            const int tile = step * it;
            int32_t sums[2][kTileRows];
            for (int t = t0; t < t1; t++) {
#if defined(__AVX2__) && defined(__AVX512BW__)
                if (tile + 1 < W.tiles) {
                    detail::tl_tile_pair_avx512(&W.tiles_bytes[tile * tile_bytes], &W.tiles_bytes[(tile + 1) * tile_bytes],
                                                W.byte_cols, A[t]->tables.data(), sums[0], sums[1]);
                    finish(tile, t, sums[0]), finish(tile + 1, t, sums[1]);
                    continue;
                }
#endif
#if defined(__AVX2__)
                for (int k = 0; k < step && tile + k < W.tiles; k++) {
                    detail::tl_tile_avx2(&W.tiles_bytes[(tile + k) * tile_bytes], W.byte_cols, A[t]->tables.data(), sums[k]);
                    finish(tile + k, t, sums[k]);
                }
#else
                int32_t sum_l[kTileRows] = {0}, sum_h[kTileRows] = {0};  // gemv_tl's loop for one tile
                for (int c = 0; c < W.byte_cols; c++) {
                    const uint8_t* bytes = &W.tiles_bytes[(tile * (size_t)W.byte_cols + c) * kTileRows];
                    const uint8_t* T0 = &A[t]->tables[(size_t)32 * (2 * c)];
                    const uint8_t* T1 = &A[t]->tables[(size_t)32 * (2 * c + 1)];
                    for (int r = 0; r < kTileRows; r++) {
                        sum_l[r] += T0[bytes[r] & 15] + T1[bytes[r] >> 4];
                        sum_h[r] += T0[16 + (bytes[r] & 15)] + T1[16 + (bytes[r] >> 4)];
                    }
                }
                for (int r = 0; r < kTileRows; r++) sums[0][r] = sum_l[r] + 16 * sum_h[r];
                finish(tile, t, sums[0]);
#endif
            }
        }
    }
}

// ----------------------------------------------------------------------------------------------------------------
// E and H rows ([H1], [H2]): the LM head of every decode step, y = H x over a block of rows
// ----------------------------------------------------------------------------------------------------------------
// fp16: the halves widen to floats in hardware (F16C: 8 per instruction; AVX-512: 16), then multiply-add. A 32000×768
// head is 49 MB of halves per token, so the loop is limited by memory bandwidth, not by arithmetic.
// Same values as rows_dot_f16 (the conversion is exact), summed in another order: tests bound the difference.
//
// Reading at the memory's speed from one core takes many cache-line misses in flight. One stream of rows, even
// with the hardware prefetcher, gets about two thirds of it, so both kernels below walk kRowStreams far-apart rows
// at once (rows i, i + seg, i + 2·seg, ...: the block cut into kRowStreams equal parts, the remainder one row at a
// time) and ask for each stream's bytes kPrefetchAhead early. Measured on a cold 32000×768 fp16 head (Xeon, one
// thread): 7.2 ms for the rows in order, 5.0 ms with the prefetch, 3.3 ms with 8 streams and the prefetch (14.8 GB/s,
// what Eigen's fp32 GEMV reads at on the same machine). A row's sum does not depend on the streams: every row runs
// the same loop, so the result is the same for any split of the rows over threads.
#if defined(__AVX512F__) || defined(__AVX2__)
constexpr int kRowStreams = 8;
#else
constexpr int kRowStreams = 1;
#endif
// Calls rows(h, out) with S row pointers into the rows×cols matrix M and S result pointers into y: S far-apart rows
// at a time, then the remainder with S = 1.
template <int S, class T, class R, class Rows>
inline void for_row_streams(const T* M, int rows, int cols, R* y, Rows&& rows_fn) {
    const int seg = rows / S;
    const T* m[S];
    R* out[S];
    for (int i = 0; i < seg; i++) {
        for (int r = 0; r < S; r++) m[r] = M + (size_t(r) * seg + i) * cols, out[r] = y + size_t(r) * seg + i;
        rows_fn(std::integral_constant<int, S>(), m, out);
    }
    for (int i = S * seg; i < rows; i++) {
        const T* m1[1] = {M + size_t(i) * cols};
        R* out1[1] = {y + i};
        rows_fn(std::integral_constant<int, 1>(), m1, out1);
    }
}

#if defined(__AVX512F__)
// Horizontal sums of one 512-bit register, halves first (as _mm512_reduce_add_*; written out because g++ 12 warns
// of an uninitialised temporary inside those when they are inlined into loops over register arrays).
inline float hsum_ps(__m512 v) {
    alignas(64) float t[16];
    _mm512_store_ps(t, v);
    for (int w = 8; w >= 1; w /= 2)
        for (int i = 0; i < w; i++) t[i] += t[i + w];
    return t[0];
}
inline int32_t hsum_epi32(__m512i v) {
    alignas(64) int32_t t[16];
    _mm512_store_si512((__m512i*)t, v);
    int32_t sum = 0;
    for (int32_t x : t) sum += x;
    return sum;
}
#endif
// S rows of halves times x: one accumulator per row, 16 (AVX-512) or 2 × 8 (F16C) columns a step, a scalar tail.
template <int S>
inline void f16_rows(const uint16_t* const h[], int cols, const float* x, float* const y[]) {
    float acc[S] = {};
    int j = 0;
#if defined(__AVX512F__)
    __m512 a[S];
    for (int r = 0; r < S; r++) a[r] = _mm512_setzero_ps();
    for (; j + 16 <= cols; j += 16) {
        const __m512 xv = _mm512_loadu_ps(x + j);
        for (int r = 0; r < S; r++) {
            if (j % 32 == 0) prefetch_ahead(h[r] + j);  // once per 64-byte line
            a[r] = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(h[r] + j))), xv, a[r]);
        }
    }
    for (int r = 0; r < S; r++) acc[r] = hsum_ps(a[r]);
#elif defined(__AVX2__) && defined(__F16C__) && defined(__FMA__)
    __m256 a[S][2];
    for (int r = 0; r < S; r++) a[r][0] = a[r][1] = _mm256_setzero_ps();
    for (; j + 16 <= cols; j += 16) {
        const __m256 x0 = _mm256_loadu_ps(x + j), x1 = _mm256_loadu_ps(x + j + 8);
        for (int r = 0; r < S; r++) {
            if (j % 32 == 0) prefetch_ahead(h[r] + j);
            a[r][0] = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(h[r] + j))), x0, a[r][0]);
            a[r][1] = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(h[r] + j + 8))), x1, a[r][1]);
        }
    }
    for (int r = 0; r < S; r++) {
        alignas(32) float t[8];
        _mm256_store_ps(t, _mm256_add_ps(a[r][0], a[r][1]));
        for (float v : t) acc[r] += v;
    }
#endif
    for (int r = 0; r < S; r++) {
        for (int k = j; k < cols; k++) acc[r] += f16_to_f32(h[r][k]) * x[k];  // the tail (everything without F16C)
        *y[r] = acc[r];
    }
}
inline void rows_f16_simd(const uint16_t* H, int rows, int cols, const float* x, float* y) {
    for_row_streams<kRowStreams>(H, rows, cols, y, [&](auto S, const uint16_t* const* h, float* const* out) {
        f16_rows<decltype(S)::value>(h, cols, x, out);
    });
}

// int8: Σ_j c_ij q_j exactly in int32, as rows_dot_i8 (|c|, |q| ≤ 127).
//   AVX-512 VNNI: vpdpbusd multiplies 64 unsigned bytes by 64 signed bytes and adds each 4 products into an int32
//   lane. q is signed, so it runs on o = q + 128 ∈ [0, 255] and takes back 128·Σ_j c_ij (a second vpdpbusd, by ones).
//   AVX2: vpmaddubsw on |c| (unsigned) and sign(c)·q (signed): adjacent pairs ≤ 2·127·127 < 2^15, no saturation;
//   vpmaddwd by ones widens them to int32.
// S rows at a time, as for fp16 (integer sums: exact in any order).
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
template <int S>
inline void i8_rows(const int8_t* const c[], int cols, const uint8_t* o, int32_t* const y[]) {
    const __m512i ones = _mm512_set1_epi8(1);
    __m512i acc[S], sum_c[S];
    for (int r = 0; r < S; r++) acc[r] = sum_c[r] = _mm512_setzero_si512();
    for (int j = 0; j < cols; j += 64) {
        const __mmask64 m = cols - j >= 64 ? ~__mmask64(0) : (__mmask64(1) << (cols - j)) - 1;  // zeros past the end
        const __m512i ov = _mm512_maskz_loadu_epi8(m, o + j);
        for (int r = 0; r < S; r++) {
            prefetch_ahead(c[r] + j);
            const __m512i w = _mm512_maskz_loadu_epi8(m, c[r] + j);
            acc[r] = _mm512_dpbusd_epi32(acc[r], ov, w);       // Σ o·c
            sum_c[r] = _mm512_dpbusd_epi32(sum_c[r], ones, w);  // Σ c
        }
    }
    for (int r = 0; r < S; r++)  // Σ (q + 128)·c − 128·Σ c
        *y[r] = hsum_epi32(acc[r]) - 128 * hsum_epi32(sum_c[r]);
}
inline void rows_i8_simd(const int8_t* Cm, int rows, int cols, const int8_t* q, int32_t* y) {
    thread_local std::vector<uint8_t> o;
    o.resize(cols);
    for (int j = 0; j < cols; j++) o[j] = uint8_t(q[j] + 128);
    for_row_streams<kRowStreams>(Cm, rows, cols, y, [&](auto S, const int8_t* const* c, int32_t* const* out) {
        i8_rows<decltype(S)::value>(c, cols, o.data(), out);
    });
}
#elif defined(__AVX2__)
template <int S>
inline void i8_rows(const int8_t* const c[], int cols, const int8_t* q, int32_t* const y[]) {
    const __m256i ones16 = _mm256_set1_epi16(1);
    __m256i acc[S];
    for (int r = 0; r < S; r++) acc[r] = _mm256_setzero_si256();
    int j = 0;
    for (; j + 32 <= cols; j += 32) {
        const __m256i v = _mm256_loadu_si256((const __m256i*)(q + j));
        for (int r = 0; r < S; r++) {
            if (j % 64 == 0) prefetch_ahead(c[r] + j);
            const __m256i w = _mm256_loadu_si256((const __m256i*)(c[r] + j));
            const __m256i pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(v, w));  // |c|·(sign(c)·q)
            acc[r] = _mm256_add_epi32(acc[r], _mm256_madd_epi16(pairs, ones16));
        }
    }
    for (int r = 0; r < S; r++) {
        alignas(32) int32_t t[8];
        _mm256_store_si256((__m256i*)t, acc[r]);
        int32_t sum = 0;
        for (int32_t v : t) sum += v;
        for (int k = j; k < cols; k++) sum += int32_t(c[r][k]) * int32_t(q[k]);
        *y[r] = sum;
    }
}
inline void rows_i8_simd(const int8_t* Cm, int rows, int cols, const int8_t* q, int32_t* y) {
    for_row_streams<kRowStreams>(Cm, rows, cols, y, [&](auto S, const int8_t* const* c, int32_t* const* out) {
        i8_rows<decltype(S)::value>(c, cols, q, out);
    });
}
#else
inline void rows_i8_simd(const int8_t* Cm, int rows, int cols, const int8_t* q, int32_t* y) {
    rows_dot_i8(Cm, rows, cols, q, y);
}
#endif

// ---- the plug-in: Kernel::Fast = the table-lookup kernel -------------------------------------------------------
// Each mask is re-laid out once for the lookups (pack_tl), each token's q once into its tables (make_act_tables).
inline FastKernel table_lookup_kernel() {
    FastKernel k;
#if defined(__AVX2__) && defined(__AVX512BW__)
    k.name = "table lookup (gemv_tl_avx512)";
#elif defined(__AVX2__)
    k.name = "table lookup (gemv_tl_avx2)";
#else
    k.name = "table lookup (gemv_tl, portable)";
#endif
    k.prepare_weights = [](const PackedSigns& bits) -> std::shared_ptr<const void> {
        return std::make_shared<PackedTL>(pack_tl(bits));
    };
    k.prepare_acts = [](const int8_t* q, int n) -> std::shared_ptr<const void> {
        return std::make_shared<ActTables>(make_act_tables(q, n));
    };
    k.gemv = [](const PackedSigns&, const void* weights, const void* acts, int32_t* y) {
        gemv_tl_fast(*static_cast<const PackedTL*>(weights), *static_cast<const ActTables*>(acts), y);
    };
    k.gemm = [](const PackedSigns&, const void* weights, const void* const* acts, int n, int32_t* Y) {
        std::vector<const ActTables*> tables(n);
        for (int t = 0; t < n; t++) tables[t] = static_cast<const ActTables*>(acts[t]);
        gemm_tl_fast(*static_cast<const PackedTL*>(weights), tables.data(), n, Y);
    };
    k.rows_f16 = rows_f16_simd;
    k.rows_i8 = rows_i8_simd;
    return k;
}
// Registered once per program (an inline variable: one definition however many files include this header).
inline const bool kTableLookupRegistered = register_fast_kernel(table_lookup_kernel());

}  // namespace fbi
