// spm_tokenize — a text through a sentencepiece model into a token file train_tiny reads (--tokens), so the same
// teacher → student pipeline runs on BPE ids instead of characters (make train-tiny TOKENIZER=bpe).
//
//   build/spm_tokenize --model bpe.model --text input.txt --out corpus.fbitoks
//
// The whole text is encoded as one string (newlines go through the byte-fallback piece <0x0A>). The file holds
// each piece's surface bytes, so train_tiny decodes samples and counts characters without sentencepiece:
//   "FBITOKS\0" | u32 version 1 | u32 V | V × (u32 length, surface bytes) | u64 n | n × u32 ids | u64 FNV-1a
// The surfaces must give back the text byte for byte (checked here): train with --normalization_rule_name=identity
// --remove_extra_whitespaces=false --add_dummy_prefix=false --byte_fallback=true, as the Makefile does.
#include "../../fbi_llm.hpp"
#include "../common.hpp"
#include "llama.hpp"

using namespace fbi;

// What a piece stands for in the text: "▁" is a space, "<0x0A>" is the byte 0x0A, control pieces are nothing.
static std::string surface(const sentencepiece::SentencePieceProcessor& sp, int id) {
    if (sp.IsControl(id) || sp.IsUnknown(id)) return "";
    std::string p = sp.IdToPiece(id);
    if (sp.IsByte(id)) return std::string(1, char(std::stoi(p.substr(3, 2), nullptr, 16)));
    std::string out;
    for (size_t i = 0; i < p.size();) {
        if (p.compare(i, 3, "\xe2\x96\x81") == 0) out += ' ', i += 3;  // U+2581 LOWER ONE EIGHTH BLOCK
        else out += p[i++];
    }
    return out;
}

int main(int argc, char** argv) try {
    const std::string usage = "usage: spm_tokenize --model bpe.model --text input.txt --out corpus.fbitoks";
    example::Args a(argc, argv, usage);
    a.only({"model", "text", "out"});
    std::string model = a.str("model", ""), text_path = a.str("text", ""), out = a.str("out", "");
    if (model.empty() || text_path.empty() || out.empty()) throw std::invalid_argument("--model, --text and --out are required");
    sentencepiece::SentencePieceProcessor sp;
    auto st = sp.Load(model);
    if (!st.ok()) throw std::invalid_argument(model + ": not a sentencepiece model (" + st.ToString() + ")");
    std::string text = llama::read_text(text_path);
    std::vector<int> ids;
    st = sp.Encode(text, &ids);
    if (!st.ok()) throw std::runtime_error(text_path + ": cannot tokenize (" + st.ToString() + ")");
    int V = sp.GetPieceSize();
    std::vector<std::string> pieces(V);
    for (int v = 0; v < V; v++) pieces[v] = surface(sp, v);
    std::string back;
    for (int id : ids) back += pieces[id];
    if (back != text)
        throw std::invalid_argument(model + ": its pieces do not give back the text byte for byte (train it with "
                                    "--normalization_rule_name=identity --remove_extra_whitespaces=false --add_dummy_prefix=false)");
    write_file_atomic_with(out, [&](ByteWriter& w) {
        w.raw("FBITOKS", 8);
        w.put<uint32_t>(1);
        w.put<uint32_t>(uint32_t(V));
        for (const std::string& p : pieces) w.put<uint32_t>(uint32_t(p.size())), w.raw(p.data(), p.size());
        w.put<uint64_t>(ids.size());
        for (int id : ids) w.put<uint32_t>(uint32_t(id));
        w.put<uint64_t>(w.sum);
    });
    std::printf("%s: %zu bytes → %zu tokens (%.2f characters per token), vocabulary %d → %s\n", text_path.c_str(),
                text.size(), ids.size(), double(text.size()) / ids.size(), V, out.c_str());
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "spm_tokenize: %s\n", e.what());
    return 1;
}
