// §8b the packed model: kernels agree bit for bit inside the decoder, the int8 activation is the only
// approximation, and the packed file round-trips and rejects bad files.
#include "testing.hpp"

#include <fstream>

using namespace fbi;
using namespace fbi_test;

namespace {
Config packed_config() {
    Config c;
    c.V = 13; c.C = 64; c.L = 2; c.NH = 2; c.F = 130; c.T = 12; c.quant = Quant::FBI;  // F = 130: padded rows
    return c;
}
// A student whose latent weights were moved away from init, with a few exact zeros (sign(0) = −1).
Model trained_like_student(uint64_t seed) {
    Model m = build_model<float>(packed_config(), seed);
    Rng rng(seed + 1);
    for (float& p : m.params) p += float(0.01 * rng.normal());
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
    std::string path = "build/test_model.fbipack";
    save_packed_model(path, pm);
    PackedModel back = load_packed_model(path);
    CHECK(back.cfg == pm.cfg);
    CHECK(back.vocab == "abc");
    CHECK(packed_model_bytes(back) == packed_model_bytes(pm));
    for (int l = 0; l < pm.cfg.L; l++)
        for (int i = 0; i < N_LINEAR; i++) CHECK(back.lin[l][i].tl.tiles_bytes == pm.lin[l][i].tl.tiles_bytes);
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
    Config c = packed_config();
    c.F = 128;  // no padding: every linear has m = 64 or 128 rows
    PackedModel pm = pack_model(build_model<float>(c, 4), "");
    // q,k,v,o: m = 64 (C), gate, up: m = 128 (F), down: m = 64; weights 4·64² + 2·128·64 + 64·128
    double weights = 4.0 * 64 * 64 + 3.0 * 128 * 64;
    double extra = 4 * 64 * 64 * 64.0 / 64 + 2 * 64 * 128 * 64.0 / 128 + 64 * 128 * 64.0 / 64;  // Σ 64/m per weight
    CHECK(packed_bits_per_weight(pm) == doctest::Approx(1.0 + extra / weights));
    CHECK_THROWS_WITH(pack_model(build_model<float>(Config{}, 1), ""), doctest::Contains("full-precision model has no packed form"));
}
