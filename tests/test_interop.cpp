// examples/interop/: the safetensors, zip and pickle readers on hand-made bytes (every prefix, refused globals and
// opcodes), fp16/bf16 conversion over every 16-bit pattern, the config checks, the name table, and export → import.
// The comparisons against PyTorch itself are tests/interop.sh (they need python3-torch).
#include "testing.hpp"
#include "../examples/interop/hf.hpp"
#include "interop_bytes.hpp"

using namespace interop;
using namespace interop_bytes;

namespace {

std::string write_bytes(const std::string& name, const std::vector<unsigned char>& b) {
    std::string path = fbi_test::test_file(name);
    FILE* f = std::fopen(path.c_str(), "wb");
    REQUIRE(f);
    if (!b.empty()) std::fwrite(b.data(), 1, b.size(), f);  // an empty prefix has no data pointer
    std::fclose(f);
    return path;
}

}  // namespace

TEST_CASE("X1 fp16 and bf16 → fp32: every one of the 65,536 bit patterns, against the definition") {
    for (uint32_t h = 0; h < 65536; h++) {
        int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
        double want = e == 0 ? std::ldexp(m / 1024.0, -14) : e == 31 ? (m ? NAN : INFINITY) : std::ldexp(1 + m / 1024.0, e - 15);
        if (s) want = -want;
        float got = f16_to_f32(uint16_t(h));
        if (std::isnan(want)) CHECK(std::isnan(got));
        else CHECK(got == float(want));
        uint32_t u = h << 16;  // bf16: the top half of an fp32
        float bf;
        std::memcpy(&bf, &u, 4);
        float gb = bf16_to_f32(uint16_t(h));
        if (std::isnan(bf)) CHECK(std::isnan(gb));
        else {
            CHECK(std::memcmp(&gb, &bf, 4) == 0);
            CHECK(f32_to_bf16(gb) == h);  // exact values round to themselves
        }
    }
    // rounding to nearest even: 1 + 2^-8 is halfway between two bf16 neighbours and goes to the even one (1.0)
    CHECK(f32_to_bf16(1.0f + std::ldexp(1.0f, -8)) == f32_to_bf16(1.0f));
    CHECK(f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)) == f32_to_bf16(1.0f) + 2);
}

TEST_CASE("X2 torch.save archive by hand: read, every prefix refused cleanly, foreign globals refused by name") {
    std::string path = write_bytes("x2.bin", torch_bin(state_dict_pickle()));
    std::vector<TensorRef> t = list_torch_bin(path);
    REQUIRE(t.size() == 1);
    CHECK(t[0].name == "w");
    CHECK(t[0].shape == std::vector<int64_t>{2, 3});
    std::vector<float> v;
    read_tensor(t[0], v);
    CHECK(v == std::vector<float>{-2.5f, -1.5f, -0.5f, 0.5f, 1.5f, 2.5f});
    std::vector<unsigned char> good = torch_bin(state_dict_pickle());
    for (size_t n = 0; n < good.size(); n++) {  // every prefix: a FormatError, never a crash or a wrong tensor
        std::string p = write_bytes("x2_prefix.bin", std::vector<unsigned char>(good.begin(), good.begin() + long(n)));
        CHECK_THROWS_AS(list_torch_bin(p), FormatError);
    }
    for (const char* evil : {"os\nsystem\n", "builtins\neval\n", "subprocess\nPopen\n", "torch\nload\n"}) {
        std::string p = write_bytes("x2_evil.bin", torch_bin(state_dict_pickle(evil)));
        std::string g = evil;
        g[g.find('\n')] = '.';
        g.pop_back();
        std::string want = "names the global '" + g + "', which is not on this reader's allow-list";
        CHECK_THROWS_WITH(list_torch_bin(p), doctest::Contains(want.c_str()));
    }
    std::vector<unsigned char> bad = state_dict_pickle();
    bad[2] = 'i';  // INST: an opcode torch.save never writes
    CHECK_THROWS_WITH(list_torch_bin(write_bytes("x2_op.bin", torch_bin(bad))), doctest::Contains("opcode 0x69"));
    bad = state_dict_pickle();
    bad.insert(bad.end() - 1, {'h', 9});  // BINGET of a memo entry never stored
    CHECK_THROWS_WITH(list_torch_bin(write_bytes("x2_memo.bin", torch_bin(bad))), doctest::Contains("memo entry 9"));
    std::vector<unsigned char> data(20);  // a storage shorter than its pickle says
    std::string p = write_bytes("x2_short.bin", zip_of({{"archive/data.pkl", state_dict_pickle()}, {"archive/data/0", data}}));
    CHECK_THROWS_WITH(list_torch_bin(p), doctest::Contains("tensor 'w': storage entry holds 20 bytes"));
    p = write_bytes("x2_nostorage.bin", zip_of({{"archive/data.pkl", state_dict_pickle()}}));
    CHECK_THROWS_WITH(list_torch_bin(p), doctest::Contains("its storage 'archive/data/0' is missing"));
}

TEST_CASE("X3 safetensors: write, read back, every prefix refused, bad headers named") {
    std::vector<float> a = {1, 2, 3, 4, 5, 6}, b = {0.25f, -7.5f};
    std::string path = fbi_test::test_file("x3.safetensors");
    for (DType d : {DType::F32, DType::BF16}) {
        write_safetensors(path, {{"a", {2, 3}, a.data()}, {"b", {2}, b.data()}}, d);
        std::vector<TensorRef> t = list_safetensors(path);
        REQUIRE(t.size() == 2);
        std::vector<float> v;
        read_tensor(t[0].name == "a" ? t[0] : t[1], v);
        CHECK(v == a);  // small integers are exact in bf16 too
    }
    write_safetensors(path, {{"a", {2, 3}, a.data()}, {"b", {2}, b.data()}});
    File f(path);
    std::vector<unsigned char> good = f.bytes(0, f.size);
    for (size_t n = 0; n < good.size(); n++) {
        std::string p = write_bytes("x3_prefix.safetensors", std::vector<unsigned char>(good.begin(), good.begin() + long(n)));
        CHECK_THROWS_AS(list_safetensors(p), FormatError);
    }
    auto with_header = [&](const std::string& json, size_t data_bytes) {
        std::vector<unsigned char> bytes(8);
        for (int i = 0; i < 8; i++) bytes[i] = (uint64_t(json.size()) >> (8 * i)) & 255;
        bytes.insert(bytes.end(), json.begin(), json.end());
        bytes.resize(bytes.size() + data_bytes);
        return write_bytes("x3_bad.safetensors", bytes);
    };
    CHECK_THROWS_WITH(list_safetensors(with_header("{\"a\": {\"dtype\": \"I8\", \"shape\": [2], \"data_offsets\": [0, 2]}}", 2)),
                      doctest::Contains("tensor 'a': unsupported dtype 'I8'"));
    CHECK_THROWS_WITH(list_safetensors(with_header("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 9]}}", 8)),
                      doctest::Contains("run past the data"));
    CHECK_THROWS_WITH(list_safetensors(with_header("{\"a\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 8]}}", 8)),
                      doctest::Contains("shape [3] of F32 needs 12"));
    CHECK_THROWS_WITH(list_safetensors(with_header("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}, "
                                                   "\"b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}", 8)),
                      doctest::Contains("overlap"));
    CHECK_THROWS_WITH(list_safetensors(with_header("{\"a\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 0]}}", 0)),
                      doctest::Contains("negative dimension"));
    CHECK_THROWS_WITH(list_safetensors(with_header("[1, 2]", 0)), doctest::Contains("not a JSON object"));
}

TEST_CASE("X4 config.json: a LLaMA config maps to the header's Config; what the header does not compute is refused") {
    nlohmann::json j = {{"vocab_size", 97}, {"hidden_size", 64}, {"intermediate_size", 176}, {"num_hidden_layers", 2},
                        {"num_attention_heads", 4}, {"num_key_value_heads", 4}, {"max_position_embeddings", 32},
                        {"rms_norm_eps", 1e-5}, {"rope_theta", 10000.0}, {"hidden_act", "silu"}, {"tie_word_embeddings", false}};
    fbi::Config c = config_from_hf(j, "c", true);
    CHECK(c == fbi::Config{97, 64, 2, 4, 176, 32, fbi::Quant::FBI});
    CHECK(config_from_hf(config_to_hf(c), "c", true) == c);  // export's config reads back as the same
    // the fields of the official FBI-LLM 130M config (FBI-LLM_configs/ in the official code): rope_scaling null, no
    // rope_theta (HF's default, 10000), fp16 torch_dtype, pretraining_tp 1
    nlohmann::json official = nlohmann::json::parse(R"({"architectures": ["LlamaForCausalLM"], "bos_token_id": 1,
        "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 2048,
        "max_position_embeddings": 2048, "max_sequence_length": 2048, "model_type": "llama", "num_attention_heads": 12,
        "num_hidden_layers": 12, "num_key_value_heads": 12, "pad_token_id": 0, "pretraining_tp": 1, "rms_norm_eps": 1e-5,
        "rope_scaling": null, "tie_word_embeddings": false, "torch_dtype": "float16", "use_cache": true, "vocab_size": 32000})");
    CHECK(config_from_hf(official, "130m", true) == fbi::Config{32000, 768, 12, 12, 2048, 2048, fbi::Quant::FBI});
    auto refused = [&](const char* key, nlohmann::json value, const char* why) {
        nlohmann::json k = j;
        k[key] = value;
        CHECK_THROWS_WITH(config_from_hf(k, "cfg.json", true), doctest::Contains(why));
    };
    refused("num_key_value_heads", 2, "grouped-query attention");
    refused("tie_word_embeddings", true, "tie_word_embeddings is true");
    refused("rope_scaling", {{"type", "linear"}}, "rope_scaling is set");
    refused("rope_theta", 1e6, "RoPE base is 10000");
    refused("rms_norm_eps", 1e-6, "uses 1e-5");
    refused("hidden_act", "gelu", "SwiGLU");
    refused("hidden_size", 66, "C must be divisible by NH");
    refused("vocab_size", -3, "'vocab_size' = -3 is implausible");
    refused("num_hidden_layers", "12", "'num_hidden_layers' missing or not an integer");
}

TEST_CASE("X5 the name table: one Hugging Face key per parameter, in the layout's order and shapes") {
    for (fbi::Quant q : {fbi::Quant::FP, fbi::Quant::FBI}) {
        fbi::Config c{97, 64, 3, 4, 176, 32, q};
        fbi::Model m;
        fbi::layout_model(m, c);
        std::vector<fbi::TensorInfo> e = expected_tensors(c);
        REQUIRE(e.size() == m.tensors.size());
        std::set<std::string> keys;
        for (size_t i = 0; i < e.size(); i++) {
            CHECK(e[i].name == m.tensors[i].name);
            CHECK(e[i].rows == m.tensors[i].rows);
            CHECK(e[i].cols == m.tensors[i].cols);
            keys.insert(hf_key(e[i].name));
        }
        CHECK(keys.size() == e.size());  // one-to-one
    }
    CHECK(hf_key("block2.w_down.alpha") == "model.layers.2.mlp.down_proj.wscale");
    CHECK(hf_key("block0.mlp_norm") == "model.layers.0.post_attention_layernorm.weight");
    CHECK_THROWS_WITH(hf_key("block0.nonsense"), doctest::Contains("no Hugging Face key"));
}

TEST_CASE("X6 export → import: the official layout gives back every parameter bit for bit; folded gives Ŵ") {
    fbi::Model m = fbi::build_model<float>(fbi::Config{97, 64, 2, 4, 176, 32, fbi::Quant::FBI}, 21);
    for (float& x : m.params) x *= 1.0f + 1e-3f * float((&x - m.params.data()) % 7);  // not just the init's values
    std::string dir = fbi_test::test_file("x6_official"), folded = fbi_test::test_file("x6_folded");
    for (const std::string& d : {dir, folded}) {
        for (const char* f : {"config.json", "model.safetensors", "fbi_vocab.json"}) std::remove((d + "/" + f).c_str());
        rmdir(d.c_str());
    }
    export_hf(m, "abc", dir, false);
    export_hf(m, "abc", folded, true);
    ModelDir md = open_model_dir(dir);
    CHECK(md.fbi);
    CHECK(md.vocab == "abc");
    ImportReport r;
    fbi::Model back = import_model(md, &r);
    CHECK(back.cfg == m.cfg);
    CHECK(std::memcmp(back.params.data(), m.params.data(), 4 * m.params.size()) == 0);
    CHECK(r.zero_latents == 0);
    fbi::Model dense = import_model(open_model_dir(folded));  // a plain LLaMA whose weights are the student's Ŵ
    CHECK(dense.cfg.quant == fbi::Quant::FP);
    fbi::quantize_all(m);
    for (size_t l = 0; l < m.blocks.size(); l++)
        for (int id = 0; id < fbi::N_LINEAR; id++) {
            const fbi::LinearRef &a = m.blocks[l].lin[size_t(id)], &b = dense.blocks[l].lin[size_t(id)];
            CHECK(std::memcmp(m.w_eff.data() + a.eff, dense.p(b.W), 4 * size_t(a.m) * size_t(a.n)) == 0);
        }
    fbi::PackedModel pm = import_packed(md), direct = fbi::pack_model(back, "abc");
    CHECK(fbi::packed_model_bytes(pm) == fbi::packed_model_bytes(direct));  // streaming import = packing the float model
    std::string packed = fbi_test::test_file("x6.fbipack");
    fbi::save_packed_model(packed, pm);  // written streamed: the same bytes as in memory
    CHECK(fbi::read_file_bytes(packed) == fbi::packed_model_bytes(pm));
    CHECK_THROWS_WITH(export_hf(m, "abc", dir, false), doctest::Contains("exists and is not an empty directory"));
}
