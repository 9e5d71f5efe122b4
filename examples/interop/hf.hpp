// examples/interop/hf.hpp — Hugging Face / official FBI-LLM model directories, both ways.
//   import   config.json + weights (model.safetensors, sharded safetensors, pytorch_model.bin, sharded .bin; F32, F16,
//            BF16) → the header's float model, or → its packed 1-bit model, streaming: one tensor in memory at a time
//   export   a model of the header → config.json + model.safetensors in the official layout (latent `weight`,
//            `wscale`, `wbias` per projection) or folded (dense Ŵ, a stock LLaMA), + fbi_vocab.json
// The official FBI-LLM layer is Ŵ = wscale · sign(weight) + wbias with wscale, wbias of shape [1, in]: exactly the
// header's [F2] with α = wscale, β = wbias. One difference: torch.sign(0) = 0, the header's sign(0) = −1 ([F1]).
// A latent weight of exactly 0 is counted on import (ImportReport::zero_latents); trained weights have none.
// Refused with a one-line message naming the file and key: grouped-query attention, tied embeddings, rope_scaling,
// a rope_theta or rms_norm_eps other than the header's, an activation other than silu, a missing/extra/mis-shaped key,
// a plain (non-FBI) LLaMA asked to pack as 1-bit (its signs alone are not an FBI-LLM: FBI-LLM trains wscale, wbias).
#pragma once
#include "../../fbi_llm.hpp"
#include "formats.hpp"

#include <sys/stat.h>
#include <unistd.h>  // getpid, rmdir

#include <fstream>
#include <set>

namespace interop {

// ---- the one table: the header's parameter names ↔ the Hugging Face LLaMA / FBI-LLM keys -------------------------
// Per block (i = the block's index); the three rows after it are the model's own.
inline const std::vector<std::pair<std::string, std::string>>& block_names() {
    static const std::vector<std::pair<std::string, std::string>> rows = {
        {"attn_norm", "input_layernorm.weight"},
        {"wq", "self_attn.q_proj.weight"}, {"wq.alpha", "self_attn.q_proj.wscale"}, {"wq.beta", "self_attn.q_proj.wbias"},
        {"wk", "self_attn.k_proj.weight"}, {"wk.alpha", "self_attn.k_proj.wscale"}, {"wk.beta", "self_attn.k_proj.wbias"},
        {"wv", "self_attn.v_proj.weight"}, {"wv.alpha", "self_attn.v_proj.wscale"}, {"wv.beta", "self_attn.v_proj.wbias"},
        {"wo", "self_attn.o_proj.weight"}, {"wo.alpha", "self_attn.o_proj.wscale"}, {"wo.beta", "self_attn.o_proj.wbias"},
        {"mlp_norm", "post_attention_layernorm.weight"},
        {"w_gate", "mlp.gate_proj.weight"}, {"w_gate.alpha", "mlp.gate_proj.wscale"}, {"w_gate.beta", "mlp.gate_proj.wbias"},
        {"w_up", "mlp.up_proj.weight"}, {"w_up.alpha", "mlp.up_proj.wscale"}, {"w_up.beta", "mlp.up_proj.wbias"},
        {"w_down", "mlp.down_proj.weight"}, {"w_down.alpha", "mlp.down_proj.wscale"}, {"w_down.beta", "mlp.down_proj.wbias"},
    };
    return rows;
}
inline const std::vector<std::pair<std::string, std::string>>& model_names() {
    static const std::vector<std::pair<std::string, std::string>> rows = {
        {"tok_emb", "model.embed_tokens.weight"}, {"final_norm", "model.norm.weight"}, {"lm_head", "lm_head.weight"}};
    return rows;
}
// "block3.wq.alpha" → "model.layers.3.self_attn.q_proj.wscale"; throws for a name the table does not hold.
inline std::string hf_key(const std::string& ours) {
    for (const auto& r : model_names())
        if (r.first == ours) return r.second;
    size_t dot = ours.find('.');
    if (ours.compare(0, 5, "block") == 0 && dot != std::string::npos) {
        std::string layer = ours.substr(5, dot - 5), rest = ours.substr(dot + 1);
        for (const auto& r : block_names())
            if (r.first == rest) return "model.layers." + layer + "." + r.second;
    }
    throw std::invalid_argument("no Hugging Face key for the header's parameter '" + ours + "'");
}
// The shape a key has in Hugging Face files: norms are 1-D [C], wscale and wbias [1, in], matrices [out, in].
inline std::vector<int64_t> hf_shape(const fbi::TensorInfo& t) {
    if (t.rows == 1 && t.name.find("norm") != std::string::npos) return {t.cols};
    return {t.rows, t.cols};
}

// ---- config.json ---------------------------------------------------------------------------------------------------
inline nlohmann::json read_json(const std::string& path) {
    std::ifstream f(path);
    if (!f) fail(path, "cannot open (a model directory needs its config.json)");
    try { return nlohmann::json::parse(f); } catch (const std::exception& e) { fail(path, std::string("not JSON: ") + e.what()); }
}
inline int config_int(const nlohmann::json& j, const char* key, const std::string& path) {
    if (!j.contains(key) || !j[key].is_number_integer()) fail(path, std::string("'") + key + "' missing or not an integer");
    int64_t v = j[key].get<int64_t>();
    if (v < 1 || v > (1 << 24)) fail(path, std::string("'") + key + "' = " + std::to_string(v) + " is implausible");
    return int(v);
}
// A LLaMA config → the header's Config (quant FBI when `fbi`), refusing what the header does not compute.
inline fbi::Config config_from_hf(const nlohmann::json& j, const std::string& path, bool fbi_model) {
    if (!j.is_object()) fail(path, "not a JSON object");
    fbi::Config c;
    c.V = config_int(j, "vocab_size", path);
    c.C = config_int(j, "hidden_size", path);
    c.F = config_int(j, "intermediate_size", path);
    c.L = config_int(j, "num_hidden_layers", path);
    c.NH = config_int(j, "num_attention_heads", path);
    c.T = j.contains("max_position_embeddings") ? config_int(j, "max_position_embeddings", path) : 2048;
    c.quant = fbi_model ? fbi::Quant::FBI : fbi::Quant::FP;
    if (j.contains("num_key_value_heads") && !j["num_key_value_heads"].is_null() && config_int(j, "num_key_value_heads", path) != c.NH)
        fail(path, "num_key_value_heads " + std::to_string(j["num_key_value_heads"].get<int64_t>()) + " ≠ num_attention_heads " +
                       std::to_string(c.NH) + ": grouped-query attention is not supported");
    if (j.value("tie_word_embeddings", false) == true) fail(path, "tie_word_embeddings is true: the header's LM head is untied");
    if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) fail(path, "rope_scaling is set: the header's RoPE is unscaled");
    auto number = [&](const char* key, double def) {
        if (!j.contains(key) || j[key].is_null()) return def;
        if (!j[key].is_number()) fail(path, std::string("'") + key + "' is not a number");
        return j[key].get<double>();
    };
    if (number("rope_theta", 10000.0) != fbi::kRopeBase) fail(path, "rope_theta " + std::to_string(number("rope_theta", 0)) + ": the header's RoPE base is 10000");
    if (number("rms_norm_eps", 1e-5) != fbi::kNormEps) fail(path, "rms_norm_eps " + std::to_string(number("rms_norm_eps", 0)) + ": the header's RMSNorm uses 1e-5");
    if (j.contains("hidden_act") && j["hidden_act"] != "silu") fail(path, "hidden_act '" + j["hidden_act"].dump() + "': the header's MLP is SwiGLU (silu)");
    if (c.T > fbi::kMaxFileContext) fail(path, "max_position_embeddings " + std::to_string(c.T) + " is above " + std::to_string(fbi::kMaxFileContext));
    try { fbi::check_config(c); } catch (const std::exception& e) { fail(path, e.what()); }
    return c;
}
inline nlohmann::ordered_json config_to_hf(const fbi::Config& c) {
    return {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"hidden_act", "silu"},
            {"hidden_size", c.C}, {"intermediate_size", c.F}, {"num_attention_heads", c.NH}, {"num_key_value_heads", c.NH},
            {"num_hidden_layers", c.L}, {"vocab_size", c.V}, {"max_position_embeddings", c.T}, {"rms_norm_eps", fbi::kNormEps},
            {"rope_theta", fbi::kRopeBase}, {"tie_word_embeddings", false}, {"torch_dtype", "float32"}};
}

// ---- a model directory: its config and where each tensor is ---------------------------------------------------------
struct ModelDir {
    std::string dir;
    nlohmann::json config;
    std::map<std::string, TensorRef> tensors;  // by Hugging Face key
    bool fbi = false;                          // wscale/wbias present: an FBI-LLM
    std::string vocab;                         // fbi_vocab.json's bytes, when the directory has one
};
inline bool exists(const std::string& p) { struct stat st; return stat(p.c_str(), &st) == 0; }

inline void add_tensors(ModelDir& m, const std::vector<TensorRef>& list) {
    for (const TensorRef& t : list)
        if (!m.tensors.emplace(t.name, t).second) fail(t.file, "tensor '" + t.name + "' appears twice in the model directory");
}
// Sharded weights: every file the index names must exist and hold exactly the keys the index gives it.
inline void add_sharded(ModelDir& m, const std::string& index_path, bool safetensors) {
    nlohmann::json idx = read_json(index_path);
    if (!idx.contains("weight_map") || !idx["weight_map"].is_object()) fail(index_path, "no 'weight_map' object");
    std::map<std::string, std::set<std::string>> by_file;
    for (auto it = idx["weight_map"].begin(); it != idx["weight_map"].end(); ++it) {
        if (!it.value().is_string()) fail(index_path, "weight_map['" + it.key() + "'] is not a file name");
        std::string f = it.value().get<std::string>();
        if (f.empty() || f.find('/') != std::string::npos || f[0] == '.') fail(index_path, "weight_map['" + it.key() + "'] names '" + f + "', not a file in the directory");
        by_file[f].insert(it.key());
    }
    for (const auto& [file, keys] : by_file) {
        std::string path = m.dir + "/" + file;
        if (!exists(path)) fail(index_path, "shard '" + file + "' (holding '" + *keys.begin() + "', …) is missing from the directory");
        std::vector<TensorRef> list = safetensors ? list_safetensors(path) : list_torch_bin(path);
        std::set<std::string> have;
        for (const TensorRef& t : list) {
            if (!keys.count(t.name)) fail(path, "holds '" + t.name + "', which the index places elsewhere or not at all");
            have.insert(t.name);
        }
        for (const std::string& k : keys)
            if (!have.count(k)) fail(path, "the index places '" + k + "' in this shard, which does not hold it");
        add_tensors(m, list);
    }
}
inline ModelDir open_model_dir(const std::string& dir) {
    ModelDir m;
    m.dir = dir;
    m.config = read_json(dir + "/config.json");
    if (exists(dir + "/model.safetensors")) add_tensors(m, list_safetensors(dir + "/model.safetensors"));
    else if (exists(dir + "/model.safetensors.index.json")) add_sharded(m, dir + "/model.safetensors.index.json", true);
    else if (exists(dir + "/pytorch_model.bin")) add_tensors(m, list_torch_bin(dir + "/pytorch_model.bin"));
    else if (exists(dir + "/pytorch_model.bin.index.json")) add_sharded(m, dir + "/pytorch_model.bin.index.json", false);
    else fail(dir, "no weights (model.safetensors, model.safetensors.index.json, pytorch_model.bin or pytorch_model.bin.index.json)");
    for (auto it = m.tensors.begin(); it != m.tensors.end();)  // RoPE buffers some exports keep: recomputed here
        it = it->first.size() > 21 && it->first.compare(it->first.size() - 21, 21, ".rotary_emb.inv_freq") == 0 ? m.tensors.erase(it) : std::next(it);
    for (const auto& kv : m.tensors) m.fbi = m.fbi || (kv.first.size() > 7 && kv.first.compare(kv.first.size() - 7, 7, ".wscale") == 0);
    if (exists(dir + "/fbi_vocab.json")) {
        nlohmann::json v = read_json(dir + "/fbi_vocab.json");
        if (!v.contains("bytes") || !v["bytes"].is_array()) fail(dir + "/fbi_vocab.json", "no 'bytes' array");
        for (const auto& b : v["bytes"]) {
            if (!b.is_number_unsigned() || b.get<uint64_t>() > 255) fail(dir + "/fbi_vocab.json", "'bytes' holds something other than 0..255");
            m.vocab.push_back(char(b.get<int>()));
        }
    }
    return m;
}

// The tensors of a config in the header's order (names and shapes, as layout_model makes them) without allocating.
inline std::vector<fbi::TensorInfo> expected_tensors(const fbi::Config& c) {
    std::vector<fbi::TensorInfo> t;
    auto add = [&](const std::string& name, int rows, int cols) { t.push_back({name, 0, rows, cols, rows > 1}); };
    add("tok_emb", c.V, c.C);
    for (int l = 0; l < c.L; l++) {
        std::string pre = "block" + std::to_string(l) + ".";
        add(pre + "attn_norm", 1, c.C);
        for (int id = 0; id < fbi::N_LINEAR; id++) {
            if (id == fbi::WGATE) add(pre + "mlp_norm", 1, c.C);
            int m, n;
            fbi::linear_shape(c, id, m, n);
            add(pre + fbi::linear_name(id), m, n);
            if (c.quant == fbi::Quant::FBI) add(pre + fbi::linear_name(id) + ".alpha", 1, n), add(pre + fbi::linear_name(id) + ".beta", 1, n);
        }
    }
    add("final_norm", 1, c.C);
    add("lm_head", c.V, c.C);
    return t;
}

// Every key the layout of `cfg` needs is there with its shape, and nothing else is.
inline void check_keys(const ModelDir& m, const std::vector<fbi::TensorInfo>& tensors) {
    std::set<std::string> want;
    for (const fbi::TensorInfo& t : tensors) {
        std::string k = hf_key(t.name);
        want.insert(k);
        auto it = m.tensors.find(k);
        if (it == m.tensors.end()) fail(m.dir, "key '" + k + "' is missing");
        if (it->second.shape != hf_shape(t))
            fail(it->second.file, "key '" + k + "' has shape " + shape_str(it->second.shape) + ", the config needs " + shape_str(hf_shape(t)));
    }
    for (const auto& kv : m.tensors)
        if (!want.count(kv.first)) fail(kv.second.file, "key '" + kv.first + "' is not part of a LLaMA/FBI-LLM of this config");
}

struct ImportReport {
    uint64_t zero_latents = 0;  // latent weights exactly 0: torch.sign gives 0 there, the header −1 ([F1])
    uint64_t tensors = 0, bytes_read = 0;
};
inline void note_tensor(ImportReport& r, const TensorRef& t, const std::vector<float>& v, bool latent) {
    r.tensors++;
    r.bytes_read += t.nbytes();
    if (latent)
        for (float x : v) r.zero_latents += x == 0.0f;
}
inline bool is_latent(const std::string& ours) {  // the latent W of a block linear
    return ours.compare(0, 5, "block") == 0 && ours.find("norm") == std::string::npos && ours.find(".alpha") == std::string::npos &&
           ours.find(".beta") == std::string::npos;
}

// The header's float model (fp32 teacher, or FBI with its latent weights and scales as they were trained).
// with_grads = false: for inference only (no gradient buffers: half the memory).
inline fbi::Model import_model(const ModelDir& m, ImportReport* report = nullptr, bool with_grads = true) {
    fbi::Config cfg = config_from_hf(m.config, m.dir + "/config.json", m.fbi);
    check_keys(m, expected_tensors(cfg));
    fbi::Model model;
    fbi::layout_model(model, cfg, with_grads);
    ImportReport r;
    std::vector<float> v;
    for (const fbi::TensorInfo& t : model.tensors) {
        const TensorRef& ref = m.tensors.at(hf_key(t.name));
        read_tensor(ref, v);
        note_tensor(r, ref, v, m.fbi && is_latent(t.name));
        std::copy(v.begin(), v.end(), model.params.begin() + long(t.offset));
    }
    if (report) *report = r;
    return model;
}

// The packed 1-bit model, streaming: one tensor read at a time, each linear packed as soon as its three tensors are in.
// fast_layout = false: without the fast kernel's layouts (for a model that is only written to a file; half the memory).
inline fbi::PackedModel import_packed(const ModelDir& m, ImportReport* report = nullptr, bool fast_layout = true) {
    if (!m.fbi)
        fail(m.dir, "a plain LLaMA (no wscale/wbias keys) has no 1-bit form: FBI-LLM trains its scales from scratch; import it as a float model");
    fbi::Config cfg = config_from_hf(m.config, m.dir + "/config.json", true);
    check_keys(m, expected_tensors(cfg));
    ImportReport r;
    fbi::PackedModel pm;
    pm.cfg = cfg;
    pm.vocab = m.vocab;
    std::vector<float> W, a, b;
    auto get = [&](const std::string& ours, std::vector<float>& v) {
        const TensorRef& ref = m.tensors.at(hf_key(ours));
        read_tensor(ref, v);
        note_tensor(r, ref, v, is_latent(ours));
    };
    get("tok_emb", W);
    pm.tok_emb = fbi::make_rows(W.data(), cfg.V, cfg.C, fbi::RowFormat::F32);
    pm.attn_norm.resize(cfg.L);
    pm.mlp_norm.resize(cfg.L);
    pm.lin.resize(cfg.L);
    for (int l = 0; l < cfg.L; l++) {
        std::string pre = "block" + std::to_string(l) + ".";
        get(pre + "attn_norm", pm.attn_norm[l]);
        get(pre + "mlp_norm", pm.mlp_norm[l]);
        for (int id = 0; id < fbi::N_LINEAR; id++) {
            std::string n = pre + fbi::linear_name(id);
            int rows, cols;
            fbi::linear_shape(cfg, id, rows, cols);
            get(n, W), get(n + ".alpha", a), get(n + ".beta", b);
            fbi::pack_linear(pm.lin[l][id], fbi::Quant::FBI, W.data(), a.data(), b.data(), rows, cols);
            if (!fast_layout) pm.lin[l][id].fast[0].reset();
        }
    }
    get("final_norm", pm.final_norm);
    get("lm_head", W);
    pm.lm_head = fbi::make_rows(W.data(), cfg.V, cfg.C, fbi::RowFormat::F32);
    std::vector<float>().swap(W);
    fbi::rope_tables(pm.rope_cos, pm.rope_sin, cfg.T, cfg.C / cfg.NH);
    if (report) *report = r;
    return pm;
}

// ---- export ---------------------------------------------------------------------------------------------------------
// Writes DIR (which must not exist, or be empty) through a temporary sibling directory renamed at the end, so an
// error leaves nothing behind. official: latent weight + wscale + wbias; folded: dense Ŵ per projection.
inline void remove_tree(const std::string& dir, const std::vector<std::string>& files) {
    for (const std::string& f : files) std::remove((dir + "/" + f).c_str());
    rmdir(dir.c_str());
}
inline void export_hf(const fbi::Model& model_in, const std::string& vocab, const std::string& dir, bool folded) {
    const fbi::Config& c = model_in.cfg;
    if (c.quant != fbi::Quant::FP && c.quant != fbi::Quant::FBI)
        throw std::invalid_argument(std::string("export: a ") + fbi::quant_name(c.quant) +
                                    " model has no Hugging Face layout here (fp32 and fbi do)");
    if (exists(dir) && rmdir(dir.c_str()) != 0) throw std::invalid_argument("export: '" + dir + "' exists and is not an empty directory");
    std::string tmp = dir + ".tmp." + std::to_string(long(getpid()));
    if (mkdir(tmp.c_str(), 0755) != 0) throw std::runtime_error("export: cannot create '" + tmp + "': " + std::strerror(errno));
    std::vector<std::string> files = {"config.json", "model.safetensors", "fbi_vocab.json"};
    try {
        fbi::Model model = model_in;  // Ŵ for the folded form
        fbi::quantize_all(model);
        std::vector<TensorOut> out;
        for (const fbi::TensorInfo& t : model.tensors) {
            bool scale = t.name.find(".alpha") != std::string::npos || t.name.find(".beta") != std::string::npos;
            if (folded && scale) continue;
            const float* data = model.params.data() + t.offset;
            if (folded && c.quant == fbi::Quant::FBI && is_latent(t.name)) {  // the linear's Ŵ
                int l = std::stoi(t.name.substr(5));
                for (const fbi::LinearRef& lin : model.blocks[size_t(l)].lin)
                    if (model.tensors[size_t(lin.W)].name == t.name) data = model.w_eff.data() + lin.eff;
            }
            out.push_back({hf_key(t.name), hf_shape(t), data});
        }
        std::map<std::string, std::string> meta = {{"format", "pt"}, {"fbi_llm", folded ? "folded" : "official"}};
        write_safetensors(tmp + "/model.safetensors", out, DType::F32, meta);
        nlohmann::ordered_json cfg = config_to_hf(c);
        if (c.quant == fbi::Quant::FBI && !folded) cfg["fbi_llm"] = "FBI-linear: W_hat = wscale * sign(weight) + wbias";
        std::string text = cfg.dump(2) + "\n";
        fbi::write_file_atomic(tmp + "/config.json", std::vector<unsigned char>(text.begin(), text.end()));
        nlohmann::ordered_json v = {{"format", "fbi_llm character vocabulary: token id i is the byte bytes[i]"}, {"bytes", nlohmann::json::array()}};
        for (unsigned char ch : vocab) v["bytes"].push_back(int(ch));
        std::string vt = v.dump() + "\n";
        fbi::write_file_atomic(tmp + "/fbi_vocab.json", std::vector<unsigned char>(vt.begin(), vt.end()));
        if (std::rename(tmp.c_str(), dir.c_str()) != 0) throw std::runtime_error("export: cannot rename to '" + dir + "': " + std::strerror(errno));
    } catch (...) {
        remove_tree(tmp, files);
        throw;
    }
}

}  // namespace interop
