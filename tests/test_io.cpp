// §11 checkpoints: bit-exact round trip, atomic writes, and clear errors for bad files.
#include "testing.hpp"

#include <fstream>

using namespace fbi;
using namespace fbi_test;

int second_tu_param_count() {  // used by test_main.cpp: the header links from two translation units
    return int(build_model<float>(Config{}, 1).params.size());
}

namespace {
std::string temp_path(const char* name) { return test_file(std::string("test_") + name); }
Config small() { return small_config(Quant::FBI); }
void write_bytes(const std::string& path, const std::vector<unsigned char>& b) {
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), b.size());
}
}  // namespace

TEST_CASE("C1 checkpoint round trip is bit-exact (params, optimizer state, vocab, config, step)") {
    auto m = build_model<float>(small(), 5);
    AdamW opt;
    for (float& g : m.grads) g = 0.01f;
    adamw_step(m, opt, 1e-3);
    std::string vocab = "\n !abc\xff";
    std::string path = temp_path("roundtrip.ckpt");
    save_checkpoint(path, make_checkpoint(m, vocab, 123, &opt));
    Checkpoint ck = load_checkpoint(path);
    CHECK(ck.cfg == m.cfg);
    CHECK(ck.vocab == vocab);
    CHECK(ck.step == 123);
    CHECK(ck.opt.t == 1);
    CHECK(std::memcmp(ck.params.data(), m.params.data(), 4 * m.params.size()) == 0);
    CHECK(std::memcmp(ck.opt.m.data(), opt.m.data(), 4 * opt.m.size()) == 0);
    CHECK(std::memcmp(ck.opt.v.data(), opt.v.data(), 4 * opt.v.size()) == 0);
    Model back = model_from_checkpoint(ck);
    CHECK(back.params == m.params);
    std::remove(path.c_str());
}

TEST_CASE("C2 truncated, foreign, wrong-version and corrupted checkpoints are clear errors") {
    auto m = build_model<float>(small(), 6);
    auto bytes = checkpoint_bytes(make_checkpoint(m, "ab", 0, nullptr));
    std::string path = temp_path("bad.ckpt");
    // truncated at a few places, including inside the header and one byte short
    for (size_t cut : {size_t(0), size_t(5), size_t(20), size_t(60), bytes.size() / 2, bytes.size() - 1}) {
        write_bytes(path, std::vector<unsigned char>(bytes.begin(), bytes.begin() + cut));
        CHECK_THROWS_WITH(load_checkpoint(path), doctest::Contains("truncated"));
    }
    auto foreign = bytes;
    foreign[0] = 'X';
    write_bytes(path, foreign);
    CHECK_THROWS_WITH(load_checkpoint(path), doctest::Contains("not an fbi_llm checkpoint"));
    auto version = bytes;
    version[8] = 99;
    write_bytes(path, version);
    CHECK_THROWS_WITH(load_checkpoint(path), doctest::Contains("format version 99"));
    auto flipped = bytes;
    flipped[bytes.size() - 20] ^= 1;  // a parameter bit
    write_bytes(path, flipped);
    CHECK_THROWS_WITH(load_checkpoint(path), doctest::Contains("checksum mismatch"));
    auto longer = bytes;
    longer.push_back(0);
    write_bytes(path, longer);
    CHECK_THROWS_WITH(load_checkpoint(path), doctest::Contains("trailing bytes"));
    CHECK_THROWS_WITH(load_checkpoint(temp_path("does_not_exist.ckpt")), doctest::Contains("cannot open"));
    std::remove(path.c_str());
}

TEST_CASE("C3 a config that disagrees with the parameter count is a clear error") {
    auto m = build_model<float>(small(), 7);
    Checkpoint ck = make_checkpoint(m, "ab", 0, nullptr);
    ck.cfg.C = 32;  // header says C=32, but the parameters are for C=16
    ck.cfg.F = 24;
    std::string path = temp_path("mismatch.ckpt");
    save_checkpoint(path, ck);
    CHECK_THROWS_WITH(load_checkpoint(path), doctest::Contains("parameters but its config"));
    std::remove(path.c_str());
}

TEST_CASE("C4 writes are atomic: a failed write leaves the old file intact and no temp file behind") {
    auto m = build_model<float>(small(), 8);
    std::string path = temp_path("atomic.ckpt");
    save_checkpoint(path, make_checkpoint(m, "ab", 1, nullptr));
    auto before = read_file_bytes(path);
    CHECK_THROWS_WITH(save_checkpoint(test_file("no_such_dir/x.ckpt"), make_checkpoint(m, "ab", 2, nullptr)),
                      doctest::Contains(("cannot write '" + test_file("no_such_dir/x.ckpt") + "'").c_str()));
    save_checkpoint(path, make_checkpoint(m, "ab", 3, nullptr));  // overwrite works via rename
    CHECK(load_checkpoint(path).step == 3);
    CHECK(read_file_bytes(path).size() == before.size());
    std::remove(path.c_str());
}

// ---- malformed files: every prefix, every corrupted byte, and headers that claim absurd sizes ----------------
namespace {
Config tiny(Quant q) { return file_config(q); }  // every prefix and every byte of its files can be tried
std::vector<unsigned char> tiny_checkpoint_bytes(Quant q) {
    Model m = build_model<float>(tiny(q), 11);
    AdamW opt;
    for (float& g : m.grads) g = 0.01f;
    adamw_step(m, opt, 1e-3);  // with optimizer state: every section of the format is present
    return checkpoint_bytes(make_checkpoint(m, "ab\n", 1, &opt));
}
std::vector<unsigned char> tiny_packed_bytes(Quant q, int scale_bits = 32) {
    return packed_model_bytes(pack_model(build_model<float>(tiny(q), 12), "ab\n", scale_bits));
}
const Quant kCheckpointQuants[] = {Quant::FP, Quant::FBI, kB158, kDB};
const Quant kPackedQuants[] = {Quant::FBI, kB158, kDB};
const int kScaleBits[] = {32, 2};  // fp32 scales, and 4-level codebooks (the F = 70 vectors need them)
// A file header as the writers lay it out, for sizes no real model could have.
struct Header {
    ByteWriter w;
    Header(const char magic[8], const Config& c, bool checkpoint) {
        w.raw(magic, 8);
        w.put<uint32_t>(checkpoint ? kCheckpointVersion : kPackedVersion);
        if (checkpoint) w.put<uint32_t>(uint32_t(c.quant));
        if (!checkpoint) w.put<uint32_t>(uint32_t(Quant::FBI)), w.put<uint32_t>(32);  // packed: quantizer, scale_bits
        for (int x : {c.V, c.C, c.L, c.NH, c.F, c.T}) w.put<uint32_t>(uint32_t(x));
    }
    std::vector<unsigned char> with_checksum() {  // a correct checksum: the size checks must catch it, not the sum
        std::vector<unsigned char> b = w.buf;
        uint64_t sum = fnv1a(b.data(), b.size());
        const unsigned char* p = reinterpret_cast<const unsigned char*>(&sum);
        b.insert(b.end(), p, p + 8);
        return b;
    }
};
Config big(int V, int C, int L, int NH, int F, int T, Quant q = Quant::FP) { return make_config(q, V, C, L, NH, F, T); }
}  // namespace

TEST_CASE("C5 a checkpoint or packed file cut at ANY byte is a clear 'truncated' error (every quantizer)") {
    auto every_prefix = [](const std::vector<unsigned char>& bytes, bool checkpoint) {
        const char* expect = checkpoint ? "checkpoint 'tiny': truncated" : "packed model 'tiny': truncated";
        size_t failures = 0;
        for (size_t cut = 0; cut < bytes.size(); cut++) {
            std::vector<unsigned char> prefix(bytes.begin(), bytes.begin() + cut);
            try {
                if (checkpoint) parse_checkpoint(prefix, "tiny"); else parse_packed_model(prefix, "tiny");
                failures++;  // a prefix was accepted
                INFO("prefix of " << cut << " bytes accepted");
                CHECK(false);
            } catch (const std::runtime_error& e) {
                if (!std::strstr(e.what(), expect)) { failures++; INFO(cut << ": " << e.what()); CHECK(false); }
            }
        }
        return failures;
    };
    for (Quant q : kCheckpointQuants) {
        auto ck = tiny_checkpoint_bytes(q);
        INFO("checkpoint, quant=" << quant_name(q) << ", " << ck.size() << " bytes");
        CHECK(parse_checkpoint(ck, "tiny").step == 1);  // the whole file loads
        CHECK(every_prefix(ck, true) == 0);
    }
    for (Quant q : kPackedQuants)
        for (int bits : kScaleBits) {
            auto pk = tiny_packed_bytes(q, bits);
            INFO("packed file, quant=" << quant_name(q) << ", scale_bits " << bits << ", " << pk.size() << " bytes");
            CHECK(parse_packed_model(pk, "tiny").vocab == "ab\n");
            CHECK(every_prefix(pk, false) == 0);
        }
}

TEST_CASE("C6 a checkpoint or packed file with ANY one byte changed is refused with an error naming the file") {
    auto every_byte = [](const std::vector<unsigned char>& bytes, bool checkpoint, const char* what) {
        size_t accepted = 0, unnamed = 0;
        for (size_t i = 0; i < bytes.size(); i++) {
            auto bad = bytes;
            bad[i] ^= 0xff;  // every bit of the byte
            try {
                if (checkpoint) parse_checkpoint(bad, "f"); else parse_packed_model(bad, "f");
                accepted++;
            } catch (const std::runtime_error& e) {
                if (!std::strstr(e.what(), checkpoint ? "checkpoint 'f': " : "packed model 'f': ")) unnamed++;
            }
        }
        INFO(what << " of " << bytes.size() << " bytes");
        CHECK(accepted == 0);
        CHECK(unnamed == 0);
    };
    for (Quant q : kCheckpointQuants) every_byte(tiny_checkpoint_bytes(q), true, quant_name(q));
    for (Quant q : kPackedQuants)
        for (int bits : kScaleBits) every_byte(tiny_packed_bytes(q, bits), false, quant_name(q));
}

TEST_CASE("C7 min_param_count: exactly what layout_model lays out for FP, a lower bound for every quantizer") {
    for (Config c : {small(), tiny(Quant::FP), Config{}, big(7, 12, 3, 3, 20, 5)})
        for (int q = 0; q < 8; q++) {  // every quantizer this build knows (check_config refuses the rest)
            c.quant = Quant(q);
            Model m;
            try { layout_model(m, c); } catch (const std::invalid_argument&) { continue; }
            if (c.quant == Quant::FP) CHECK(min_param_count(c) == m.params.size());
            else CHECK(min_param_count(c) <= m.params.size());
        }
    CHECK(min_param_count(big(1 << 24, 1 << 24, 1 << 24, 1, 1 << 24, 1)) == UINT64_MAX);  // saturates
}

// Found by `make fuzz` (an input whose header said C=20996 made parse_checkpoint call layout_model, which
// allocated 7 GB before looking at the file's length). Here C = 2^20, so that code would ask for terabytes
// and fail at once with std::bad_alloc instead of exhausting the machine's memory.
TEST_CASE("C8 fuzz finding: a checkpoint header claiming a huge model is refused before anything is allocated") {
    Header h(kCheckpointMagic, big(3, 1 << 20, 1, 1, 8, 4), true);
    for (uint64_t x : {uint64_t(0), uint64_t(0), uint64_t(0), uint64_t(196), uint64_t(196)}) h.w.put<uint64_t>(x);
    h.w.buf.resize(h.w.buf.size() + 196 * 12, 0);
    CHECK_THROWS_WITH(parse_checkpoint(h.with_checksum(), "huge.ckpt"),
                      doctest::Contains("checkpoint 'huge.ckpt': holds 196 parameters but its config (V=3 C=1048576"));
    CHECK_THROWS_WITH(parse_checkpoint(h.with_checksum(), "huge.ckpt"), doctest::Contains("needs at least"));
}

// Found by review while fixing C8: sizes multiplied before they were bounded by the file's length could wrap
// around 2^64 and match a tiny file. This config needs exactly 2^62 parameters, so 4·n_params wraps to 0 and an
// 88-byte file "had the right size"; the next resize asked for 2^62 floats (std::length_error).
TEST_CASE("C9 a checkpoint whose byte count wraps around 2^64 is 'truncated', not a giant allocation") {
    Config c = big(8388615, 8192, 16777213, 2, 11173889, 1);
    REQUIRE(min_param_count(c) == (uint64_t(1) << 62));
    Header h(kCheckpointMagic, c, true);
    for (uint64_t x : {uint64_t(0), uint64_t(0), uint64_t(0), min_param_count(c), uint64_t(0)}) h.w.put<uint64_t>(x);
    CHECK_THROWS_WITH(parse_checkpoint(h.with_checksum(), "wrap.ckpt"), doctest::Contains("checkpoint 'wrap.ckpt': truncated"));
}

// The same for the packed file: L × (bytes per block) wrapped around 2^64 to make this 52-byte file "the
// right size", and the loader then allocated V×C = 5.4·10^12 floats for the embedding.
TEST_CASE("P5 a packed file whose byte count wraps around 2^64 is 'truncated', not a giant allocation") {
    Header h(kPackedMagic, big(5134573, 1 << 20, 16759744, 1, 1400832, 1), false);
    h.w.put<uint64_t>(0);  // no vocabulary bytes
    CHECK_THROWS_WITH(parse_packed_model(h.with_checksum(), "wrap.fbipack"),
                      doctest::Contains("packed model 'wrap.fbipack': truncated"));
}

// Found by `make fuzz` (a packed file with T = 2^24 took over 10 s to load: RoPE tables of T·C/NH floats,
// although nothing in the file grows with T). The loaders refuse T above 65536; the writers refuse to write it.
TEST_CASE("C10 fuzz finding: a context length no file may have is refused by the loaders and the writers") {
    Header hc(kCheckpointMagic, big(3, 4, 1, 1, 8, 1 << 24), true);
    CHECK_THROWS_WITH(parse_checkpoint(hc.with_checksum(), "longT.ckpt"),
                      doctest::Contains("checkpoint 'longT.ckpt': context length T=16777216 is above the 65536"));
    Header hp(kPackedMagic, big(3, 4, 1, 1, 8, 1 << 24), false);
    CHECK_THROWS_WITH(parse_packed_model(hp.with_checksum(), "longT.fbipack"),
                      doctest::Contains("packed model 'longT.fbipack': context length T=16777216"));
    Config c = tiny(Quant::FBI);
    c.T = kMaxFileContext + 1;
    Model m = build_model<float>(c, 1);
    std::string path = temp_path("longT.ckpt");
    CHECK_THROWS_WITH(save_checkpoint(path, make_checkpoint(m, "abc", 0, nullptr)), doctest::Contains("context length T=65537"));
    CHECK_THROWS_WITH(save_packed_model(path, pack_model(m, "abc")), doctest::Contains("context length T=65537"));
    std::ifstream gone(path);
    CHECK(!gone.good());  // nothing was written
    c.T = kMaxFileContext;  // the limit itself is fine
    Model ok = build_model<float>(c, 1);
    CHECK(parse_checkpoint(checkpoint_bytes(make_checkpoint(ok, "abc", 0, nullptr)), "T.ckpt").cfg.T == kMaxFileContext);
}
