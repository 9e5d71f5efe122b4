// libFuzzer target for the readers of foreign files (examples/interop/): safetensors, torch.save archives (zip + pickle),
// a bare pickle, and config.json.   make fuzz  (runs it after fuzz_loaders, FUZZ_SECONDS each)
//
// The first byte of an input picks the reader (0 safetensors, 1 torch.save archive, 2 pickle, 3 config.json), the rest
// is the file. A clean rejection is an interop::FormatError (or std::invalid_argument from the config check) whose
// message names the file; everything else is a finding and aborts: a crash, a sanitizer report, a hang, an allocation
// above -malloc_limit_mb, std::bad_alloc / std::length_error (a size from the file not checked against the file), or
// an accepted tensor that cannot be read whole.
#include <cstdio>
#include <cstdlib>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include <unistd.h>

#include "../../examples/interop/hf.hpp"

namespace {

[[noreturn]] void finding(const std::string& detail) {
    std::fprintf(stderr, "fuzz_interop: FINDING: %s\n", detail.c_str());
    std::abort();
}
const std::string& scratch_path() {
    static const std::string p = "fuzz_interop." + std::to_string(long(getpid())) + ".input";
    return p;
}
void read_all(const std::vector<interop::TensorRef>& tensors) {
    std::vector<float> v;
    for (const interop::TensorRef& t : tensors) {
        if (t.nbytes() > (64u << 20)) finding("an accepted tensor of " + std::to_string(t.nbytes()) + " bytes in a small file");
        interop::read_tensor(t, v);
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, size_t size) {
    if (size < 1) return 0;
    const std::string& path = scratch_path();
    const unsigned char kind = data[0] % 4;
    std::vector<unsigned char> body(data + 1, data + size);
    try {
        if (kind == 2) {
            interop::Unpickler(body, path).run();
            return 0;
        }
        FILE* f = std::fopen(path.c_str(), "wb");
        if (!f) finding("cannot write the scratch file");
        if (!body.empty()) std::fwrite(body.data(), 1, body.size(), f);
        std::fclose(f);
        if (kind == 0) read_all(interop::list_safetensors(path));
        if (kind == 1) read_all(interop::list_torch_bin(path));
        if (kind == 3) interop::config_from_hf(interop::read_json(path), path, true);
    } catch (const std::bad_alloc& e) {
        finding(std::string("std::bad_alloc (a size from the file was not checked): ") + e.what());
    } catch (const std::length_error& e) {
        finding(std::string("std::length_error: ") + e.what());
    } catch (const std::exception& e) {
        if (std::string(e.what()).find(path) == std::string::npos) finding(std::string("message does not name the file: ") + e.what());
    }
    return 0;
}
