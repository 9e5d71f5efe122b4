// §9 checkpoints: bit-exact round trip, atomic writes, and clear errors for bad files.
#include "testing.hpp"

#include <fstream>

using namespace fbi;

int second_tu_param_count() {  // used by test_main.cpp: the header links from two translation units
    return int(build_model<float>(Config{}, 1).params.size());
}

namespace {
std::string temp_path(const char* name) { return std::string("build/test_") + name; }
Config small() {
    Config c;
    c.V = 11; c.C = 16; c.L = 2; c.NH = 2; c.F = 24; c.T = 8; c.quant = Quant::FBI;
    return c;
}
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
    CHECK_THROWS_WITH(save_checkpoint("build/no_such_dir/x.ckpt", make_checkpoint(m, "ab", 2, nullptr)),
                      doctest::Contains("cannot write 'build/no_such_dir/x.ckpt'"));
    save_checkpoint(path, make_checkpoint(m, "ab", 3, nullptr));  // overwrite works via rename
    CHECK(load_checkpoint(path).step == 3);
    CHECK(read_file_bytes(path).size() == before.size());
    std::remove(path.c_str());
}
