// `#include "fbi_llm.hpp"` alone trains and runs an FBI-LLM: no plug-in, no fast kernel (make test builds this
// file without anything from examples/ and runs it). A few AdamW steps of a tiny FBI student distilled ([D1])
// from a tiny teacher, then pack, save, load, decode with the portable popcount kernel; and a packed file of a
// quantizer that only a plug-in knows (b1.58, id 2) is refused with a message that names the plug-in.
#include "../../fbi_llm.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>

using namespace fbi;

static int fail(const char* what) {
    std::printf("header alone: ✗ %s\n", what);
    return 1;
}

int main(int argc, char** argv) {
    const std::string dir = argc > 1 ? argv[1] : ".";
    if (quantizers().size() != 2 || fast_kernel() || scale_codec() || !loss_plugins().empty())
        return fail("something besides the header registered itself");
    std::vector<int> data(4000);
    for (size_t i = 0; i < data.size(); i++) data[i] = int((i * 7 + i / 13) % 11);  // a learnable pattern
    Config tc;
    tc.V = 11, tc.C = 16, tc.L = 1, tc.NH = 2, tc.F = swiglu_width(16), tc.T = 16;
    Config sc = tc;
    sc.quant = Quant::FBI;
    Model teacher = build_model<float>(tc, 1), student = build_model<float>(sc, 2);
    TrainOptions o;
    o.B = 4, o.T = 16, o.schedule.warmup = 2, o.schedule.total = 30;
    AdamW opt_t, opt_s;
    FlipCounter flips_t, flips_s;
    for (long s = 0; s < 30; s++) train_step<float>(teacher, nullptr, opt_t, flips_t, data, o, s);
    o.loss = Loss::AD;
    double first = 0, last = 0;
    for (long s = 0; s < 30; s++) {
        double l = train_step(student, &teacher, opt_s, flips_s, data, o, s).loss;
        (s == 0 ? first : last) = l;
    }
    if (!(last < first)) return fail("the FBI student's AD loss did not go down");
    const std::string path = dir + "/header_alone.fbipack";
    save_packed_model(path, pack_model(student, "v"));
    PackedModel pm = load_packed_model(path);
    std::remove(path.c_str());
    double ce_float = evaluate(student, data, 4, 16, 8);
    double ce_packed = evaluate_decoder(decode_view(pm), PackedLinearFn{&pm, Kernel::Fast}, pm.rope_cos.data(),
                                        pm.rope_sin.data(), data, 16, 8);
    if (!(std::fabs(ce_packed - ce_float) < 0.02)) return fail("packed CE is far from the float student's");
    std::vector<unsigned char> bytes = packed_model_bytes(pm);
    bytes[12] = 2;  // the quantizer field (after magic and version): b1.58's id
    uint64_t sum = fnv1a(bytes.data(), bytes.size() - 8);
    std::memcpy(bytes.data() + bytes.size() - 8, &sum, 8);
    try {
        parse_packed_model(bytes, "b158.fbipack");
        return fail("a b1.58 file loaded without its plug-in");
    } catch (const std::exception& e) {
        if (!std::strstr(e.what(), "unknown packed quantizer id 2") || !std::strstr(e.what(), "b158.hpp"))
            return fail(e.what());
    }
    std::printf("header alone: ✓ FBI student trained (AD loss %.4f → %.4f), packed, saved, loaded; packed CE %.4f vs "
                "float %.4f; a b1.58 file asks for its plug-in\n", first, last, ce_packed, ce_float);
    return 0;
}
