// §8–§9 many tokens at once: the prefill gives the decoder's logits (float and packed, every prefill path), the KV
// cache grows with the tokens, top-p sampling keeps the nucleus, Ŵ unpacks exactly from the bits, and the packed
// file is parsed as it is read, also with only the fast kernel's layout kept.
#include "testing.hpp"

#include <fstream>

using namespace fbi;
using namespace fbi_test;

namespace {
// Logits (n×V) of `toks` fed in chunks of `chunk` through prefill with rows `fn`.
template <class RowsFn>
std::vector<float> prefill_all(const DecodeView& d, RowsFn fn, const float* cs, const float* sn, const std::vector<int>& toks, int chunk) {
    KVCache cache;
    cache.reset(d.cfg.L, d.cfg.T, d.cfg.C);
    PrefillScratch s;
    std::vector<float> out(toks.size() * size_t(d.cfg.V));
    for (size_t t = 0; t < toks.size(); t += size_t(chunk)) {
        int n = int(std::min(toks.size() - t, size_t(chunk)));
        prefill(d, fn, cache, s, toks.data() + t, n, out.data() + t * d.cfg.V, n, cs, sn);
    }
    return out;
}
std::vector<int> some_tokens(int n, int V, uint64_t seed) {
    Rng rng(seed);
    std::vector<int> t(n);
    for (int& x : t) x = int(rng.below(uint64_t(V)));
    return t;
}
}  // namespace

TEST_CASE("M7 prefill = decode_step one token at a time = the full forward, for any chunking (float model)") {
    for (Quant q : {Quant::FP, Quant::FBI}) {
        CAPTURE(std::string(quant_name(q)));
        Model m = trained_like(q, 11);
        std::vector<int> toks = some_tokens(m.cfg.T, m.cfg.V, 3);
        model_forward(m, toks.data(), 1, int(toks.size()));
        std::vector<float> full = m.acts.logits;
        quantize_all(m);
        for (int chunk : {1, 5, 16, int(toks.size())}) {
            CAPTURE(chunk);
            MaxDiff d = max_diff(prefill_all(decode_view(m), FloatRows{&m, {}}, m.rope_cos.data(), m.rope_sin.data(), toks, chunk), full);
            CHECK(d.worst <= 1e-5 * d.scale);
        }
    }
}

TEST_CASE("M7 prefill through the packed model: PackedRows = the packed decoder bit for bit; UnpackedRows = the float model") {
    Model m = trained_like(Quant::FBI, 12);
    PackedModel pm = pack_model(m, "");
    std::vector<int> toks = some_tokens(m.cfg.T, m.cfg.V, 4);
    for (Kernel k : {Kernel::Reference, Kernel::Popcount, Kernel::Fast}) {
        CAPTURE(std::string(kernel_name(k)));
        std::vector<float> dec = decode_all(pm, k, toks);
        std::vector<float> pre = prefill_all(decode_view(pm), PackedRows{&pm, k}, pm.rope_cos.data(), pm.rope_sin.data(), toks, 5);
        MaxDiff d = max_diff(pre, dec);  // the linears are the same integer sums; attention sums in another order
        CHECK(d.worst <= 1e-5 * d.scale);
    }
    model_forward(m, toks.data(), 1, int(toks.size()));
    MaxDiff d = max_diff(prefill_all(decode_view(pm), UnpackedRows{&pm, {}}, pm.rope_cos.data(), pm.rope_sin.data(), toks, 7), m.acts.logits);
    CHECK(d.worst <= 1e-5 * d.scale);  // no int8 activations: the float student's numbers from the 1-bit file
}

TEST_CASE("M7 fbi_unpack gives Ŵ = α·sign(W) + β exactly, as the float model's quantize_all") {
    Model m = trained_like(Quant::FBI, 13);
    quantize_all(m);
    PackedModel pm = pack_model(m, "");
    for (int l = 0; l < m.cfg.L; l++)
        for (int id = 0; id < N_LINEAR; id++) {
            const PackedLinear& p = pm.lin[l][id];
            std::vector<float> w(size_t(p.m) * p.n);
            fbi_unpack(p, w.data());
            const float* want = weight_of(m, m.blocks[l].lin[id]);
            CHECK(std::memcmp(w.data(), want, 4 * w.size()) == 0);
        }
}

TEST_CASE("M8 the KV cache grows with the tokens fed, doubling, up to the context; bad prefills are clear errors") {
    Model m = trained_like(Quant::FP, 14);  // T = packed_config's context
    quantize_all(m);
    KVCache cache;
    cache.reset(m.cfg.L, m.cfg.T, m.cfg.C);
    CHECK(cache.cap == 0);
    CHECK(cache.k[0].empty());
    PrefillScratch s;
    std::vector<float> logits(size_t(m.cfg.T) * m.cfg.V);
    std::vector<int> toks = some_tokens(m.cfg.T, m.cfg.V, 5);
    prefill(decode_view(m), FloatRows{&m, {}}, cache, s, toks.data(), 3, logits.data(), 1, m.rope_cos.data(), m.rope_sin.data());
    CHECK(cache.pos == 3);
    CHECK(cache.cap == std::min(64, m.cfg.T));  // the first growth: 64 positions (or the whole context if smaller)
    CHECK(cache.k[m.cfg.L - 1].size() == size_t(cache.cap) * m.cfg.C);
    cache.reserve(cache.cap + 1);
    CHECK(cache.cap == std::min(m.cfg.T, 2 * std::min(64, m.cfg.T)));
    cache.reserve(m.cfg.T + 100);
    CHECK(cache.cap == m.cfg.T);  // never past the context
    CHECK_THROWS_WITH(prefill(decode_view(m), FloatRows{&m, {}}, cache, s, toks.data(), m.cfg.T, logits.data(), 1,
                              m.rope_cos.data(), m.rope_sin.data()),
                      doctest::Contains("do not fit the context"));
    std::vector<int> bad = {1, m.cfg.V};
    CHECK_THROWS_WITH(prefill(decode_view(m), FloatRows{&m, {}}, cache, s, bad.data(), 2, logits.data(), 1,
                              m.rope_cos.data(), m.rope_sin.data()),
                      doctest::Contains("outside [0,"));
}

TEST_CASE("G1 top-p sampling: only the nucleus is ever drawn, at its renormalised frequencies; top_p = 1 is sample_token") {
    // softmax of these logits at temperature 1: 0.5, 0.25, 0.125, 0.0625, … (halving)
    std::vector<float> z(8);
    for (int v = 0; v < 8; v++) z[v] = float(-v * std::log(2.0));
    Rng rng(7);
    std::vector<int> count(8, 0);
    const int draws = 20000;
    for (int i = 0; i < draws; i++) count[sample_token_top_p(z.data(), 8, 1.0, 0.7, rng)]++;
    // 0.5 < 0.7 ≤ 0.75: the nucleus is {0, 1}, renormalised to 2/3, 1/3
    for (int v = 2; v < 8; v++) CHECK(count[v] == 0);
    CHECK(double(count[0]) / draws == doctest::Approx(2.0 / 3).epsilon(0.03));
    Rng a(9), b(9);
    for (int i = 0; i < 100; i++) CHECK(sample_token_top_p(z.data(), 8, 0.8, 1.0, a) == sample_token(z.data(), 8, 0.8, b));
    CHECK(sample_token_top_p(z.data(), 8, 0.0, 0.5, a) == 0);  // temperature 0: greedy
}

TEST_CASE("P8 the packed file is parsed as it is read: same model as from bytes; fast-only keeps one layout") {
    Model m = trained_like(Quant::FBI, 15);
    PackedModel pm = pack_model(m, "xyz");
    std::string path = test_file("test_stream.fbipack");
    save_packed_model(path, pm);
    PackedModel a = load_packed_model(path), b = parse_packed_model(read_file_bytes(path), path);
    CHECK(packed_model_bytes(a) == packed_model_bytes(b));
    std::vector<int> toks = some_tokens(m.cfg.T, m.cfg.V, 6);
    PackedModel lean = load_packed_model(path, /*fast_only=*/true);
    for (const auto& layer : lean.lin)
        for (const PackedLinear& p : layer) {
            CHECK(p.mask[0].bits.empty());
            CHECK(p.fast[0] != nullptr);
        }
    std::vector<float> full = decode_all(a, Kernel::Fast, toks), one = decode_all(lean, Kernel::Fast, toks);
    CHECK(std::memcmp(full.data(), one.data(), 4 * full.size()) == 0);
    CHECK_THROWS_WITH(decode_all(lean, Kernel::Popcount, toks), doctest::Contains("needs the portable masks"));
    CHECK_THROWS_WITH(save_packed_model(path + ".2", lean), doctest::Contains("portable masks were dropped"));
    std::ifstream left(path + ".2");
    CHECK(!left.good());  // nothing written
    CHECK(packed_bits_per_weight(lean) == packed_bits_per_weight(a));
    auto bytes = read_file_bytes(path);  // the streaming reader's errors are the in-memory reader's
    auto write = [&](const std::vector<unsigned char>& x) { std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(x.data()), x.size()); };
    write(std::vector<unsigned char>(bytes.begin(), bytes.end() - 1));
    CHECK_THROWS_WITH(load_packed_model(path), doctest::Contains("truncated"));
    auto flipped = bytes;
    flipped[bytes.size() - 20] ^= 1;
    write(flipped);
    CHECK_THROWS_WITH(load_packed_model(path), doctest::Contains("checksum mismatch"));
    write(reseal(flipped));  // a flipped head weight with a fresh checksum is a valid file: it loads
    CHECK_NOTHROW(load_packed_model(path));
    CHECK_THROWS_WITH(load_packed_model(test_file("no_such.fbipack")), doctest::Contains("cannot open"));
    std::remove(path.c_str());
}

TEST_CASE("P1 many tokens at once: PackedRows' multi-token kernel = fbi_packed_forward token by token, bit for bit") {
    REQUIRE(has_fast_gemm());  // the fast-kernel plug-in brings gemm_tl_fast
    Model m = trained_like(Quant::FBI, 31);
    PackedModel pm = pack_model(m, "");
    for (int id : {WQ, WGATE, WDOWN})                // 64×64, 130×64 (a padded tile), 64×130
        for (int n : {1, 2, 31, 32, 33, 70}) {       // around the kernel's block of 32 tokens
            const PackedLinear& p = pm.lin[1][id];
            CAPTURE(id);
            CAPTURE(n);
            std::vector<double> xd = randn(size_t(n) * p.n, uint64_t(n + 7 * id));
            std::vector<float> X(xd.begin(), xd.end()), many(size_t(n) * p.m), one(size_t(n) * p.m);
            PackedRows{&pm, Kernel::Fast}(1, id, X.data(), n, many.data());
            PackedLinearFn fn(&pm, Kernel::Fast);
            for (int t = 0; t < n; t++) fn(1, id, X.data() + size_t(t) * p.n, one.data() + size_t(t) * p.m);
            CHECK(many == one);
        }
}

TEST_CASE("M4 matvec (the float decoder's y = W x): every row within the float error bound of a double sum, awkward shapes; threads change no bit") {
    const int shapes[][2] = {{1, 1}, {1, 333}, {2, 5}, {3, 64}, {7, 17}, {64, 1}, {301, 129}, {1100, 1001}};
    for (const auto& shape : shapes) {
        const int m = shape[0], n = shape[1];
        CAPTURE(m);
        CAPTURE(n);
        Rng rng(uint64_t(m) * 1000 + n);
        std::vector<float> W(size_t(m) * n), x(n), y(m), y1(m);
        for (float& w : W) w = float(rng.normal());
        for (float& v : x) v = float(rng.normal());
        matvec(y.data(), W.data(), x.data(), m, n);
        for (int i = 0; i < m; i++) {
            double ref = 0, mag = 0;
            for (int j = 0; j < n; j++) ref += double(W[size_t(i) * n + j]) * x[j], mag += std::fabs(double(W[size_t(i) * n + j]) * x[j]);
            CHECK(std::fabs(y[i] - ref) <= n * std::ldexp(1.0, -24) * mag * 1.01 + 1e-30);  // γ_n = n·u bounds any order
        }
#ifdef _OPENMP
        int before = omp_get_max_threads();
        omp_set_num_threads(1);
        matvec(y1.data(), W.data(), x.data(), m, n);
        omp_set_num_threads(before);
        CHECK(std::memcmp(y.data(), y1.data(), sizeof(float) * m) == 0);
#endif
    }
}
