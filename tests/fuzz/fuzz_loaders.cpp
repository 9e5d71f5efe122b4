// libFuzzer target for the two file loaders of §11: parse_checkpoint and parse_packed_model.
//   make fuzz                  (FUZZ_SECONDS=60 by default; build/fuzz/ holds the binary, seeds and corpus)
//
// Every input is tried twice by each loader: as given, and with its last 8 bytes replaced by the FNV-1a
// checksum of the rest. The second pass lets mutated files get past the checksum, so the fuzzer also reaches
// what the loaders check after it (vocabulary, sizes, padding bits) and what runs on an accepted file.
//
// A clean rejection is a std::exception whose message names the source ("checkpoint 'fuzz'" or
// "packed model 'fuzz'"). Everything else is a finding and aborts: a crash, a sanitizer report, a hang
// (-timeout), an allocation above -malloc_limit_mb, std::bad_alloc / std::length_error (a size taken from
// the file without checking it against the file's length), an error message that does not name the file,
// or an accepted file that does not write back to the same bytes or cannot be used.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "../../fbi_llm.hpp"
#include "../../examples/kernels/fast_kernels.hpp"  // Kernel::Fast runs the table-lookup kernel
#include "../../examples/quantizers/b158.hpp"       // files of every quantizer and codebook scales
#include "../../examples/quantizers/codebook.hpp"
#include "../../examples/quantizers/db.hpp"

namespace {

[[noreturn]] void finding(const char* what, const std::string& detail) {
    std::fprintf(stderr, "fuzz_loaders: FINDING: %s: %s\n", what, detail.c_str());
    std::abort();
}

// Runs `load` on the bytes; returns true when the loader accepted them.
template <class F> bool try_load(const char* loader, const char* source, F&& load) {
    try {
        load();
        return true;
    } catch (const std::bad_alloc& e) {
        finding(loader, std::string("std::bad_alloc (a size from the file was not checked): ") + e.what());
    } catch (const std::length_error& e) {
        finding(loader, std::string("std::length_error (a size from the file was not checked): ") + e.what());
    } catch (const std::exception& e) {
        if (std::strstr(e.what(), source) == nullptr)
            finding(loader, std::string("error message does not name the file: ") + e.what());
    }
    return false;
}

void check_checkpoint(const std::vector<unsigned char>& bytes) {
    try_load("parse_checkpoint", "checkpoint 'fuzz'", [&] {
        fbi::Checkpoint ck = fbi::parse_checkpoint(bytes, "fuzz");
        // An accepted checkpoint is a usable model and writes back to exactly the same bytes.
        fbi::Model m = fbi::model_from_checkpoint(ck);
        if (m.params.size() != ck.params.size()) finding("model_from_checkpoint", "parameter count differs");
        if (!ck.opt.m.empty() && (ck.opt.m.size() != ck.params.size() || ck.opt.v.size() != ck.params.size()))
            finding("parse_checkpoint", "optimizer state size differs from the parameter count");
        if (fbi::checkpoint_bytes(ck) != bytes) finding("parse_checkpoint", "accepted file does not round-trip");
        int tok = 0;
        fbi::model_forward(m, &tok, 1, 1);  // one position through the whole model
    });
}

void check_packed(const std::vector<unsigned char>& bytes) {
    try_load("parse_packed_model", "packed model 'fuzz'", [&] {
        fbi::PackedModel pm = fbi::parse_packed_model(bytes, "fuzz");
        // Written back: the same bytes (the format has one version and one canonical layout).
        if (fbi::packed_model_bytes(pm) != bytes) finding("parse_packed_model", "accepted file does not round-trip");
        // one decode step with every kernel: the packed rows (padding included) must be safe to run. Skipped
        // when the KV cache (2·L·T·C floats, T up to 65536) would be large: that memory is the decoder's, not
        // the loader's, and zero-filling it would only slow the fuzzer down.
        const fbi::Config& c = pm.cfg;
        if (uint64_t(c.L) * uint64_t(c.T) * uint64_t(c.C) > (1u << 20)) return;
        fbi::DecodeView d = fbi::decode_view(pm);
        for (fbi::Kernel k : {fbi::Kernel::Reference, fbi::Kernel::Popcount, fbi::Kernel::Fast}) {
            fbi::KVCache cache;
            cache.reset(c.L, c.T, c.C);
            fbi::DecodeScratch s;
            s.resize(c);
            std::vector<float> logits(size_t(c.V));
            fbi::decode_step(d, fbi::PackedLinearFn{&pm, k}, cache, s, 0, logits.data(), pm.rope_cos.data(),
                             pm.rope_sin.data());
        }
    });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::vector<unsigned char> bytes(data, data + size);
    check_checkpoint(bytes);
    check_packed(bytes);
    if (size > 8) {  // the same bytes with a correct checksum
        uint64_t sum = fbi::fnv1a(bytes.data(), size - 8);
        std::memcpy(bytes.data() + size - 8, &sum, 8);
        check_checkpoint(bytes);
        check_packed(bytes);
    }
    return 0;
}
