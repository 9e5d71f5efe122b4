// packed_demo: the bit-packed 1-bit inference path of [S7] on tiny inputs, computed by the HEADER's functions
// and printed as JSON for notebooks/03_inference.ipynb, which recomputes every value from the inputs alone.
//
//   build/packed_demo [seed]          (default seed 42)  →  JSON on stdout
//
// As in examples/equations.cpp, each section has "in" (inputs drawn from fbi::Rng(seed); floats printed with 9
// significant digits, which round-trip a float32 exactly) and "out" (what the header computed). 64-bit words
// are printed as hex strings: a JSON number (a double) cannot hold every 64-bit integer.
//   packing   4×10 latent W with exact zeros → pack_signs → one 64-bit word per row (54 padding bits)
//   popcount  3×70 latent W (2 words per row) and int8 q (with −128 and 127) → make_act_planes, the per-plane
//             popcounts of row 0, dot_popcount_row, gemv_popcount, gemv_reference, gemv_tl_fast
//   linear    the full packed linear of PackedLinearFn: u = α⊙x, int8 absmax → q, s; y = (W_b q)/s + β·x
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "../../fbi_llm.hpp"
#include "../kernels/fast_kernels.hpp"  // gemv_tl_fast, and Kernel::Fast
#include "../json_out.hpp"
#include "../common.hpp"  // Args::parse_u64: the seed is checked like a flag

using namespace fbi;

using Obj = example::JsonObj<9>;  // 9 significant digits: float32 round-trips exactly
using example::hex64;
using example::section;

static Rng rng(42);
static std::vector<float> randn(size_t n, double scale) {
    std::vector<float> v(n);
    for (float& x : v) x = float(scale * rng.normal());
    return v;
}

int main(int argc, char** argv) try {
    uint64_t seed = argc > 1 ? example::Args::parse_u64(argv[1], "argument 1 (seed)") : 42;
    rng = Rng(seed);
    Obj root;
    root.put("seed", int(seed)).put("generator", "\"examples/packed_demo.cpp with fbi_llm.hpp\"");

    // ---- packing: 4×10 latent weights, two exact zeros (sign(0) = −1 → bit 0) ----
    {
        const int m = 4, n = 10;
        std::vector<float> W = randn(size_t(m) * n, 0.02);
        W[3] = 0.0f;
        W[2 * n + 7] = -0.0f;
        PackedSigns P = pack_signs(W.data(), m, n);
        std::vector<float> back(size_t(m) * n);
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) back[size_t(i) * n + j] = unpacked_sign(P, i, j);
        root.put("packing", section(Obj().tensor("W", W, {m, n}),
                                    Obj().put("words_per_row", P.words).words("bits", P.bits).tensor("W_b", back, {m, n})));
    }

    // ---- popcount identity: 3×70 signs, int8 q ----
    {
        const int m = 3, n = 70;
        std::vector<float> W = randn(size_t(m) * n, 0.02);
        W[5] = 0.0f;
        std::vector<int8_t> q(n);
        for (int j = 0; j < n; j++) q[j] = int8_t(int(rng.below(256)) - 128);
        q[0] = -128;
        q[1] = 127;
        PackedSigns P = pack_signs(W.data(), m, n);
        ActPlanes A = make_act_planes(q.data(), n);
        // Row 0, step by step: popcount(W), popcount(W & P_k) per plane k (summed over the row's words).
        int n_plus = 0;
        std::vector<int> pc(8, 0);
        for (int w = 0; w < P.words; w++) {
            n_plus += popcount64(P.bits[w]);
            for (int k = 0; k < 8; k++) pc[k] += popcount64(P.bits[w] & A.planes[size_t(k) * A.words + w]);
        }
        std::vector<int32_t> y_row(m), y_pop(m), y_ref(m), y_fast(m);
        for (int i = 0; i < m; i++) y_row[i] = dot_popcount_row(&P.bits[size_t(i) * P.words], A);
        gemv_popcount(P, A, y_pop.data());
        std::vector<float> Wsign(size_t(m) * n);
        for (size_t i = 0; i < Wsign.size(); i++) Wsign[i] = W[i] > 0.0f ? 1.0f : -1.0f;
        gemv_reference(Wsign.data(), m, n, q.data(), y_ref.data());
        gemv_tl_fast(pack_tl(P), make_act_tables(q.data(), n), y_fast.data());
        root.put("popcount",
                 section(Obj().tensor("W", W, {m, n}).tensor("q", q, {n}),
                         Obj().put("words_per_row", P.words).words("bits", P.bits).words("planes", A.planes)
                             .put("sum_q", int(A.sum_q)).put("row0_popcount_W", n_plus).tensor("row0_popcount_W_and_P", pc, {8})
                             .tensor("dot_popcount_row", y_row, {m}).tensor("gemv_popcount", y_pop, {m})
                             .tensor("gemv_reference", y_ref, {m}).tensor("gemv_tl_fast", y_fast, {m})));
    }

    // ---- the whole packed linear (PackedLinearFn) on one token ----
    {
        const int m = 5, n = 70;
        PackedModel pm;
        pm.lin.resize(1);
        PackedLinear& p = pm.lin[0][WQ];
        std::vector<float> W = randn(size_t(m) * n, 0.02), x = randn(n, 1.0);
        p.m = m;
        p.n = n;
        p.scale[0].resize(n);
        p.scale[1].resize(n);
        fbi_init(p.scale[0].data(), p.scale[1].data(), W.data(), m, n);  // [F4]: α, β from the latent W
        p.mask[0] = pack_signs(W.data(), m, n);
        prepare_fast(p);
        std::vector<float> u(n), y(m);
        for (int j = 0; j < n; j++) u[j] = p.scale[0][j] * x[j];
        std::vector<int8_t> q(n);
        const float s = quantize_int8_absmax(u.data(), n, q.data());
        PackedLinearFn fn(&pm, Kernel::Popcount);
        fn(0, WQ, x.data(), y.data());
        root.put("linear", section(Obj().tensor("W", W, {m, n}).tensor("x", x, {n}),
                                   Obj().tensor("alpha", p.scale[0], {n}).tensor("beta", p.scale[1], {n}).tensor("q", q, {n})
                                       .put("s", double(s)).tensor("y", y, {m})));
    }
    std::printf("%s\n", root.str().c_str());
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
}
