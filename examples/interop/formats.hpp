// examples/interop/formats.hpp — the three file formats PyTorch and Hugging Face store weights in, read without
// PyTorch and without running anything from the file:
//   safetensors        8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets}},
//                      then the raw little-endian tensor bytes (data_offsets are relative to their start)
//   torch.save (.bin)  a zip archive of uncompressed entries: <prefix>/data.pkl, a pickle of the state dict whose
//                      tensors point ("persistent ids") at raw storages <prefix>/data/<key>
//   pickle             only the opcodes torch.save writes, and only an allow-list of globals (OrderedDict, the
//                      tensor and parameter rebuild functions, the float storage classes): any other global is
//                      refused by name before anything is built, so a checkpoint can never run code
// Every reader lists tensors (name, dtype, shape, file, byte range) without reading their data, checking every size
// against the file first; read_tensor then reads one tensor as fp32. Errors are one line naming the file and key.
// Needs nlohmann/json (Debian: nlohmann-json3-dev). Used by hf.hpp; the formats are independent of the model (the
// header is included only for its atomic file writer).
#pragma once
#include <nlohmann/json.hpp>

#include "../../fbi_llm.hpp"  // write_file_atomic_with, ByteWriter

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

// Every format here is little-endian; so are the hosts this reads them on (x86-64, arm64, Apple silicon).
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the interop readers copy little-endian bytes as they are");

namespace interop {

struct FormatError : std::runtime_error {
    using std::runtime_error::runtime_error;
};
[[noreturn]] inline void fail(const std::string& what, const std::string& why) { throw FormatError(what + ": " + why); }

// ---- element types ----------------------------------------------------------------------------------------------
enum class DType { F32, F16, BF16 };
inline int dtype_size(DType d) { return d == DType::F32 ? 4 : 2; }
inline const char* dtype_name(DType d) { return d == DType::F32 ? "F32" : d == DType::F16 ? "F16" : "BF16"; }

// bf16 is the top half of an fp32: exact. fp16 → fp32 is exact too (every half is a float), subnormals included.
inline float bf16_to_f32(uint16_t h) {
    uint32_t u = uint32_t(h) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline float f16_to_f32(uint16_t h) {
    uint32_t sign = uint32_t(h >> 15) << 31, exp = (h >> 10) & 31, mant = h & 1023, u;
    if (exp == 31) u = sign | 0x7F800000u | (mant << 13);        // inf, NaN
    else if (exp) u = sign | ((exp + 112) << 23) | (mant << 13);  // normal: rebias 15 → 127
    else if (!mant) u = sign;                                     // ±0
    else {                                                        // subnormal: normalise
        int e = -1;
        do { mant <<= 1; e++; } while (!(mant & 1024));
        u = sign | (uint32_t(112 - e) << 23) | ((mant & 1023) << 13);
    }
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
// The nearest bf16 (round half to even), as torch's .to(torch.bfloat16) does; NaN stays NaN.
inline uint16_t f32_to_bf16(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return uint16_t((u >> 16) | 0x40);
    return uint16_t((u + 0x7FFFu + ((u >> 16) & 1)) >> 16);
}

// ---- one tensor in a file: where its bytes are -------------------------------------------------------------------
struct TensorRef {
    std::string name;
    DType dtype = DType::F32;
    std::vector<int64_t> shape;
    std::string file;      // the file that holds it
    uint64_t offset = 0;   // byte offset of its first element in that file
    uint64_t numel() const {
        uint64_t n = 1;
        for (int64_t d : shape) n *= uint64_t(d);
        return n;
    }
    uint64_t nbytes() const { return numel() * uint64_t(dtype_size(dtype)); }
};
inline std::string shape_str(const std::vector<int64_t>& s) {
    std::string r = "[";
    for (size_t i = 0; i < s.size(); i++) r += (i ? ", " : "") + std::to_string(s[i]);
    return r + "]";
}

// Element count of a shape read from a file, refusing negative sizes and products past 2^48 (no wrap-around).
inline uint64_t checked_numel(const std::vector<int64_t>& shape, const std::string& what) {
    uint64_t n = 1;
    for (int64_t d : shape) {
        if (d < 0) fail(what, "negative dimension in shape " + shape_str(shape));
        if (d && n > (uint64_t(1) << 48) / uint64_t(d)) fail(what, "implausible shape " + shape_str(shape));
        n *= uint64_t(d);
    }
    return n;
}

// ---- files ---------------------------------------------------------------------------------------------------------
struct File {
    FILE* f = nullptr;
    std::string path;
    uint64_t size = 0;
    explicit File(const std::string& p) : path(p) {
        f = std::fopen(p.c_str(), "rb");
        if (!f) fail(p, std::string("cannot open: ") + std::strerror(errno));
        if (fseeko(f, 0, SEEK_END) != 0) fail(p, "cannot seek");
        size = uint64_t(ftello(f));
    }
    ~File() { if (f) std::fclose(f); }
    File(const File&) = delete;
    File& operator=(const File&) = delete;
    void read(uint64_t at, void* dst, uint64_t n) const {
        if (at > size || n > size - at)
            fail(path, "truncated (needs bytes " + std::to_string(at) + ".." + std::to_string(at + n) + ", file has " +
                           std::to_string(size) + ")");
        if (n == 0) return;
        if (fseeko(f, off_t(at), SEEK_SET) != 0 || std::fread(dst, 1, n, f) != n) fail(path, "read error");
    }
    std::vector<unsigned char> bytes(uint64_t at, uint64_t n) const {
        std::vector<unsigned char> b(n);
        read(at, b.data(), n);
        return b;
    }
};

template <class U> U le(const unsigned char* p) {  // little-endian integer at p
    U x = 0;
    for (size_t i = 0; i < sizeof(U); i++) x |= U(p[i]) << (8 * i);
    return x;
}

// One tensor as fp32 (the caller bounds it: its range was checked against the file when it was listed).
inline void read_tensor(const TensorRef& t, std::vector<float>& out) {
    File f(t.file);
    out.resize(t.numel());
    if (t.dtype == DType::F32) {
        f.read(t.offset, out.data(), t.nbytes());  // little-endian host (static_assert above)
        return;
    }
    std::vector<uint16_t> half(t.numel());
    f.read(t.offset, half.data(), t.nbytes());
    for (size_t i = 0; i < half.size(); i++) out[i] = t.dtype == DType::BF16 ? bf16_to_f32(half[i]) : f16_to_f32(half[i]);
}

// ---- safetensors ---------------------------------------------------------------------------------------------------
constexpr uint64_t kMaxJsonHeader = 100u << 20;  // the format's own limit (100 MB)

inline DType dtype_from_safetensors(const std::string& s, const std::string& what) {
    if (s == "F32") return DType::F32;
    if (s == "F16") return DType::F16;
    if (s == "BF16") return DType::BF16;
    fail(what, "unsupported dtype '" + s + "' (this reader takes F32, F16 and BF16)");
}

// Every tensor of a .safetensors file. Checks: header length, JSON, each entry's dtype, shape and offsets (inside the
// data, matching the size, no two overlapping).
inline std::vector<TensorRef> list_safetensors(const std::string& path) {
    File f(path);
    unsigned char len8[8];
    f.read(0, len8, 8);
    uint64_t n = le<uint64_t>(len8);
    if (n > kMaxJsonHeader || n > f.size - 8)
        fail(path, "header length " + std::to_string(n) + " is larger than the file (" + std::to_string(f.size) + " bytes) or 100 MB");
    std::vector<unsigned char> hdr = f.bytes(8, n);
    nlohmann::json j;
    try { j = nlohmann::json::parse(hdr.begin(), hdr.end()); } catch (const std::exception& e) { fail(path, std::string("header is not JSON: ") + e.what()); }
    if (!j.is_object()) fail(path, "header is not a JSON object");
    const uint64_t data0 = 8 + n, data_len = f.size - data0;
    std::vector<TensorRef> out;
    std::vector<std::pair<uint64_t, uint64_t>> ranges;
    for (auto it = j.begin(); it != j.end(); ++it) {
        if (it.key() == "__metadata__") continue;
        const std::string what = path + ": tensor '" + it.key() + "'";
        const auto& e = it.value();
        if (!e.is_object() || !e.contains("dtype") || !e.contains("shape") || !e.contains("data_offsets") ||
            !e["dtype"].is_string() || !e["shape"].is_array() || !e["data_offsets"].is_array() || e["data_offsets"].size() != 2)
            fail(what, "entry needs dtype (string), shape (array) and data_offsets ([begin, end])");
        TensorRef t;
        t.name = it.key();
        t.file = path;
        t.dtype = dtype_from_safetensors(e["dtype"].get<std::string>(), what);
        for (const auto& d : e["shape"]) {
            if (!d.is_number_integer()) fail(what, "shape holds a non-integer");
            t.shape.push_back(d.get<int64_t>());
        }
        uint64_t numel = checked_numel(t.shape, what);
        const auto& o = e["data_offsets"];
        if (!o[0].is_number_unsigned() || !o[1].is_number_unsigned()) fail(what, "data_offsets must be non-negative integers");
        uint64_t b = o[0].get<uint64_t>(), en = o[1].get<uint64_t>();
        if (b > en || en > data_len)
            fail(what, "data_offsets [" + std::to_string(b) + ", " + std::to_string(en) + "] run past the data (" +
                           std::to_string(data_len) + " bytes)");
        if (en - b != numel * uint64_t(dtype_size(t.dtype)))
            fail(what, "data_offsets hold " + std::to_string(en - b) + " bytes, shape " + shape_str(t.shape) + " of " +
                           dtype_name(t.dtype) + " needs " + std::to_string(numel * dtype_size(t.dtype)));
        t.offset = data0 + b;
        ranges.push_back({b, en});
        out.push_back(std::move(t));
    }
    std::sort(ranges.begin(), ranges.end());
    for (size_t i = 1; i < ranges.size(); i++)
        if (ranges[i].first < ranges[i - 1].second) fail(path, "two tensors' data_offsets overlap");
    return out;
}

// A tensor to write: its name, shape and fp32 values (stored as F32, or BF16 rounded to nearest even).
struct TensorOut {
    std::string name;
    std::vector<int64_t> shape;
    const float* data = nullptr;
};

inline void write_safetensors(const std::string& path, const std::vector<TensorOut>& tensors, DType dtype = DType::F32,
                              const std::map<std::string, std::string>& metadata = {}) {
    nlohmann::ordered_json j;
    if (!metadata.empty()) j["__metadata__"] = metadata;
    uint64_t at = 0;
    for (const TensorOut& t : tensors) {
        uint64_t bytes = checked_numel(t.shape, path + ": tensor '" + t.name + "'") * dtype_size(dtype);
        j[t.name] = {{"dtype", dtype_name(dtype)}, {"shape", t.shape}, {"data_offsets", {at, at + bytes}}};
        at += bytes;
    }
    std::string hdr = j.dump();
    hdr.append((8 - hdr.size() % 8) % 8, ' ');  // pad so that the data starts 8-byte aligned
    fbi::write_file_atomic_with(path, [&](fbi::ByteWriter& f) {  // the header's atomic, streamed write
        f.put<uint64_t>(hdr.size());                             // little-endian host (static_assert above)
        f.raw(hdr.data(), hdr.size());
        std::vector<uint16_t> half;
        for (const TensorOut& t : tensors) {
            size_t n = size_t(checked_numel(t.shape, t.name));
            if (dtype == DType::F32) { f.raw(t.data, 4 * n); continue; }
            half.resize(n);
            for (size_t i = 0; i < n; i++) half[i] = f32_to_bf16(t.data[i]);
            f.raw(half.data(), 2 * n);
        }
    });
}

// ---- zip (torch.save's container): the central directory, stored entries only, zip64 when sizes need it ----------
struct ZipEntry {
    std::string name;
    uint64_t data = 0, size = 0;  // where the entry's bytes start in the file, and how many
};

inline std::vector<ZipEntry> list_zip(const File& f) {
    const std::string& p = f.path;
    if (f.size < 22) fail(p, "not a zip archive (too short)");
    uint64_t tail = std::min<uint64_t>(f.size, 22 + 65535);
    std::vector<unsigned char> t = f.bytes(f.size - tail, tail);
    long eocd = -1;
    for (long i = long(tail) - 22; i >= 0; i--)
        if (le<uint32_t>(&t[i]) == 0x06054b50u) { eocd = i; break; }
    if (eocd < 0) fail(p, "not a zip archive (no end-of-central-directory record; a torch.save file is one)");
    uint64_t count = le<uint16_t>(&t[eocd + 10]), cd_size = le<uint32_t>(&t[eocd + 12]), cd_off = le<uint32_t>(&t[eocd + 16]);
    uint64_t eocd_at = f.size - tail + uint64_t(eocd);
    if (count == 0xFFFF || cd_size == 0xFFFFFFFFu || cd_off == 0xFFFFFFFFu) {  // zip64: locator just before the record
        if (eocd_at < 20) fail(p, "zip64 locator missing");
        std::vector<unsigned char> loc = f.bytes(eocd_at - 20, 20);
        if (le<uint32_t>(&loc[0]) != 0x07064b50u) fail(p, "zip64 locator missing");
        std::vector<unsigned char> r = f.bytes(le<uint64_t>(&loc[8]), 56);
        if (le<uint32_t>(&r[0]) != 0x06064b50u) fail(p, "bad zip64 end-of-central-directory record");
        count = le<uint64_t>(&r[32]);
        cd_size = le<uint64_t>(&r[40]);
        cd_off = le<uint64_t>(&r[48]);
    }
    if (cd_off > f.size || cd_size > f.size - cd_off || count > cd_size / 46)
        fail(p, "central directory (" + std::to_string(count) + " entries, " + std::to_string(cd_size) + " bytes at " +
                    std::to_string(cd_off) + ") does not fit the file");
    std::vector<unsigned char> cd = f.bytes(cd_off, cd_size);
    std::vector<ZipEntry> out;
    size_t at = 0;
    for (uint64_t e = 0; e < count; e++) {
        if (at + 46 > cd.size() || le<uint32_t>(&cd[at]) != 0x02014b50u) fail(p, "damaged central directory entry " + std::to_string(e));
        uint16_t method = le<uint16_t>(&cd[at + 10]), nlen = le<uint16_t>(&cd[at + 28]), xlen = le<uint16_t>(&cd[at + 30]),
                 clen = le<uint16_t>(&cd[at + 32]);
        uint64_t csize = le<uint32_t>(&cd[at + 20]), usize = le<uint32_t>(&cd[at + 24]), local = le<uint32_t>(&cd[at + 42]);
        if (at + 46 + nlen + xlen + clen > cd.size()) fail(p, "damaged central directory entry " + std::to_string(e));
        ZipEntry z;
        z.name.assign(reinterpret_cast<const char*>(&cd[at + 46]), nlen);
        const size_t xend = at + 46 + nlen + xlen;
        for (size_t x = at + 46 + nlen; x + 4 <= xend; x += 4 + le<uint16_t>(&cd[x + 2])) {  // zip64 extra: saturated sizes
            size_t v = x + 4, end = std::min<size_t>(v + le<uint16_t>(&cd[x + 2]), xend);
            if (le<uint16_t>(&cd[x]) != 1) continue;
            if (usize == 0xFFFFFFFFu && v + 8 <= end) usize = le<uint64_t>(&cd[v]), v += 8;
            if (csize == 0xFFFFFFFFu && v + 8 <= end) csize = le<uint64_t>(&cd[v]), v += 8;
            if (local == 0xFFFFFFFFu && v + 8 <= end) local = le<uint64_t>(&cd[v]), v += 8;
        }
        at += 46 + nlen + xlen + clen;
        if (method != 0) fail(p, "entry '" + z.name + "' is compressed (method " + std::to_string(method) + "); torch.save stores entries uncompressed");
        if (csize != usize) fail(p, "entry '" + z.name + "': stored sizes disagree");
        std::vector<unsigned char> lh = f.bytes(local, 30);
        if (le<uint32_t>(&lh[0]) != 0x04034b50u) fail(p, "entry '" + z.name + "': bad local header");
        z.data = local + 30 + le<uint16_t>(&lh[26]) + le<uint16_t>(&lh[28]);
        z.size = usize;
        if (z.data > f.size || z.size > f.size - z.data) fail(p, "entry '" + z.name + "' runs past the end of the file (truncated?)");
        out.push_back(std::move(z));
    }
    return out;
}

// ---- pickle: the subset torch.save writes, with an allow-list of globals -------------------------------------------
struct PV;
using PVp = std::shared_ptr<PV>;
struct PV {
    enum Kind { None, Bool, Int, Float, Str, Tuple, List, Dict, Global, Storage, Tensor, Mark } kind = None;
    int64_t i = 0;
    double f = 0;
    std::string s;               // Str; Global "module.name"; Storage: its key
    std::vector<PVp> items;      // Tuple, List; Dict as key, value, key, value, …
    DType dtype = DType::F32;    // Storage, Tensor
    int64_t numel = 0;           // Storage: elements
    PVp storage;                 // Tensor
    int64_t offset = 0;          // Tensor: first element within its storage
    std::vector<int64_t> shape, stride;
};

// The only globals a torch.save state dict needs. Anything else (os.system, builtins.eval, …) is refused.
inline bool allowed_global(const std::string& g) {
    static const char* ok[] = {"collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
                               "torch._tensor._rebuild_from_type_v2", "torch._utils._rebuild_from_type_v2",
                               "torch.nn.parameter.Parameter", "torch.Tensor", "torch.FloatStorage", "torch.HalfStorage",
                               "torch.BFloat16Storage"};
    for (const char* a : ok)
        if (g == a) return true;
    return false;
}

class Unpickler {
  public:
    Unpickler(const std::vector<unsigned char>& b, std::string what) : b_(b), what_(std::move(what)) {}
    PVp run() {
        while (true) {
            if (at_ >= b_.size()) bad("ends without STOP");
            unsigned char op = b_[at_++];
            if (op == '.') {
                if (stack_.size() != 1) bad("STOP with " + std::to_string(stack_.size()) + " values on the stack");
                return stack_.back();
            }
            step(op);
            if (stack_.size() > 1000000 || memo_.size() > 10000000) bad("too many objects");
        }
    }

  private:
    const std::vector<unsigned char>& b_;
    std::string what_;
    size_t at_ = 0;
    std::vector<PVp> stack_;
    std::vector<size_t> marks_;
    std::map<uint64_t, PVp> memo_;

    [[noreturn]] void bad(const std::string& why) { fail(what_, "pickle " + why + " (at byte " + std::to_string(at_) + ")"); }
    const unsigned char* take(size_t n) {
        if (n > b_.size() - at_) bad("truncated");
        const unsigned char* p = &b_[at_];
        at_ += n;
        return p;
    }
    std::string line() {
        size_t e = at_;
        while (e < b_.size() && b_[e] != '\n') e++;
        if (e == b_.size()) bad("truncated");
        std::string s(reinterpret_cast<const char*>(&b_[at_]), e - at_);
        at_ = e + 1;
        return s;
    }
    static PVp make(PV::Kind k) { auto v = std::make_shared<PV>(); v->kind = k; return v; }
    PVp pop() {
        if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back())) bad("stack underflow");
        PVp v = stack_.back();
        stack_.pop_back();
        return v;
    }
    PVp& top() {
        if (stack_.empty()) bad("stack underflow");
        return stack_.back();
    }
    std::vector<PVp> pop_mark() {
        if (marks_.empty()) bad("no MARK");
        std::vector<PVp> v(stack_.begin() + long(marks_.back()), stack_.end());
        stack_.resize(marks_.back());
        marks_.pop_back();
        return v;
    }
    void push_str(size_t n) { PVp v = make(PV::Str); v->s.assign(reinterpret_cast<const char*>(take(n)), n); stack_.push_back(v); }
    void push_int(int64_t x) { PVp v = make(PV::Int); v->i = x; stack_.push_back(v); }
    void push_global(const std::string& mod, const std::string& name) {
        std::string g = mod + "." + name;
        if (!allowed_global(g)) bad("names the global '" + g + "', which is not on this reader's allow-list (a checkpoint may only hold tensors)");
        PVp v = make(PV::Global);
        v->s = g;
        stack_.push_back(v);
    }
    void put_memo(uint64_t k) { memo_[k] = top(); }
    void get_memo(uint64_t k) {
        auto it = memo_.find(k);
        if (it == memo_.end()) bad("refers to memo entry " + std::to_string(k) + ", which was never stored");
        stack_.push_back(it->second);
    }
    PVp tuple(std::vector<PVp> items) { PVp v = make(PV::Tuple); v->items = std::move(items); return v; }
    std::vector<int64_t> ints(const PVp& v, const char* name) {
        if (v->kind != PV::Tuple && v->kind != PV::List) bad(std::string(name) + " is not a tuple");
        std::vector<int64_t> r;
        for (const PVp& x : v->items) {
            if (x->kind != PV::Int) bad(std::string(name) + " holds a non-integer");
            r.push_back(x->i);
        }
        return r;
    }
    PVp reduce(const PVp& fn, const PVp& args) {
        if (fn->kind != PV::Global || args->kind != PV::Tuple) bad("REDUCE of something that is not an allowed global");
        const std::vector<PVp>& a = args->items;
        if (fn->s == "collections.OrderedDict") return make(PV::Dict);
        if (fn->s == "torch._utils._rebuild_tensor_v2") {
            if (a.size() < 4 || a[0]->kind != PV::Storage || a[1]->kind != PV::Int) bad("_rebuild_tensor_v2 with unexpected arguments");
            PVp t = make(PV::Tensor);
            t->storage = a[0];
            t->dtype = a[0]->dtype;
            t->offset = a[1]->i;
            t->shape = ints(a[2], "tensor size");
            t->stride = ints(a[3], "tensor stride");
            return t;
        }
        if (fn->s == "torch._utils._rebuild_parameter" || fn->s == "torch.nn.parameter.Parameter") {
            if (a.empty() || a[0]->kind != PV::Tensor) bad(fn->s + " of something that is not a tensor");
            return a[0];
        }
        if (fn->s == "torch._tensor._rebuild_from_type_v2" || fn->s == "torch._utils._rebuild_from_type_v2") {
            if (a.size() < 3 || a[0]->kind != PV::Global) bad("_rebuild_from_type_v2 with unexpected arguments");
            return reduce(a[0], a[2]);
        }
        bad("calls '" + fn->s + "' in a way this reader does not know");
    }
    void step(unsigned char op) {
        switch (op) {
            case 0x80: take(1); break;  // PROTO
            case 0x95: take(8); break;  // FRAME
            case '}': stack_.push_back(make(PV::Dict)); break;
            case ']': stack_.push_back(make(PV::List)); break;
            case ')': stack_.push_back(tuple({})); break;
            case '(': marks_.push_back(stack_.size()); break;
            case 'q': put_memo(*take(1)); break;
            case 'r': put_memo(le<uint32_t>(take(4))); break;
            case 0x94: put_memo(memo_.size()); break;  // MEMOIZE
            case 'h': get_memo(*take(1)); break;
            case 'j': get_memo(le<uint32_t>(take(4))); break;
            case 'X': case 'T': case 'B': push_str(le<uint32_t>(take(4))); break;     // BINUNICODE, BINSTRING, BINBYTES
            case 0x8c: case 'U': case 'C': push_str(*take(1)); break;                // SHORT_BINUNICODE, …STRING, …BYTES
            case 'c': { std::string m = line(); push_global(m, line()); break; }    // GLOBAL
            case 0x93: {                                                              // STACK_GLOBAL
                PVp name = pop(), mod = pop();
                if (name->kind != PV::Str || mod->kind != PV::Str) bad("STACK_GLOBAL of non-strings");
                push_global(mod->s, name->s);
                break;
            }
            case 'K': push_int(*take(1)); break;
            case 'M': push_int(le<uint16_t>(take(2))); break;
            case 'J': push_int(int32_t(le<uint32_t>(take(4)))); break;
            case 0x8a: {  // LONG1: n little-endian two's-complement bytes
                size_t n = *take(1);
                if (n > 8) bad("integer wider than 64 bits");
                const unsigned char* p = take(n);
                uint64_t u = 0;
                for (size_t k = 0; k < n; k++) u |= uint64_t(p[k]) << (8 * k);
                if (n && n < 8 && (p[n - 1] & 0x80)) u |= ~uint64_t(0) << (8 * n);
                push_int(int64_t(u));
                break;
            }
            case 'G': {  // BINFLOAT, big-endian
                const unsigned char* p = take(8);
                uint64_t u = 0;
                for (int k = 0; k < 8; k++) u = (u << 8) | p[k];
                PVp v = make(PV::Float);
                std::memcpy(&v->f, &u, 8);
                stack_.push_back(v);
                break;
            }
            case 'N': stack_.push_back(make(PV::None)); break;
            case 0x88: case 0x89: { PVp v = make(PV::Bool); v->i = op == 0x88; stack_.push_back(v); break; }
            case 't': stack_.push_back(tuple(pop_mark())); break;
            case 0x85: { PVp a = pop(); stack_.push_back(tuple({a})); break; }
            case 0x86: { PVp b = pop(), a = pop(); stack_.push_back(tuple({a, b})); break; }
            case 0x87: { PVp c = pop(), b = pop(), a = pop(); stack_.push_back(tuple({a, b, c})); break; }
            case 'Q': {  // BINPERSID: ('storage', storage type, key, location, numel)
                PVp id = pop();
                if (id->kind != PV::Tuple || id->items.size() < 5 || id->items[0]->kind != PV::Str || id->items[0]->s != "storage" ||
                    id->items[1]->kind != PV::Global || id->items[2]->kind != PV::Str || id->items[4]->kind != PV::Int)
                    bad("persistent id is not ('storage', type, key, location, numel)");
                PVp st = make(PV::Storage);
                const std::string& type = id->items[1]->s;
                if (type == "torch.FloatStorage") st->dtype = DType::F32;
                else if (type == "torch.HalfStorage") st->dtype = DType::F16;
                else if (type == "torch.BFloat16Storage") st->dtype = DType::BF16;
                else bad("storage of type '" + type + "' (this reader takes float, half and bfloat16 storages)");
                st->s = id->items[2]->s;
                st->numel = id->items[4]->i;
                stack_.push_back(st);
                break;
            }
            case 'R': { PVp args = pop(), fn = pop(); stack_.push_back(reduce(fn, args)); break; }
            case 'b': pop(); break;  // BUILD: the state of a dict or tensor (hooks, metadata) is not needed
            case 's': { PVp v = pop(), k = pop(); PVp& d = top(); setitems(d, {k, v}); break; }
            case 'u': { std::vector<PVp> kv = pop_mark(); setitems(top(), kv); break; }
            case 'a': { PVp v = pop(); append(top(), {v}); break; }
            case 'e': { std::vector<PVp> v = pop_mark(); append(top(), v); break; }
            default: {
                char hex[8];
                std::snprintf(hex, sizeof hex, "0x%02x", op);
                bad(std::string("opcode ") + hex + ", which torch.save does not write");
            }
        }
    }
    void setitems(PVp& d, const std::vector<PVp>& kv) {
        if (d->kind != PV::Dict || kv.size() % 2) bad("SETITEM(S) on something that is not a dict");
        d->items.insert(d->items.end(), kv.begin(), kv.end());
    }
    void append(PVp& l, const std::vector<PVp>& v) {
        if (l->kind != PV::List) bad("APPEND(S) on something that is not a list");
        l->items.insert(l->items.end(), v.begin(), v.end());
    }
};

// Every tensor of a torch.save file: the pickle's state dict, each tensor pointing into its storage entry.
inline std::vector<TensorRef> list_torch_bin(const std::string& path) {
    File f(path);
    std::vector<ZipEntry> entries = list_zip(f);
    const ZipEntry* pkl = nullptr;
    for (const ZipEntry& e : entries) {
        size_t slash = e.name.find('/');
        if (slash != std::string::npos && e.name.compare(slash, std::string::npos, "/data.pkl") == 0) { pkl = &e; break; }
    }
    if (!pkl) fail(path, "no <prefix>/data.pkl in the archive (not a torch.save file)");
    const std::string prefix = pkl->name.substr(0, pkl->name.size() - 8);  // "<prefix>/"
    if (pkl->size > (64u << 20)) fail(path, "data.pkl of " + std::to_string(pkl->size) + " bytes (a state dict's is far smaller)");
    std::vector<unsigned char> bytes = f.bytes(pkl->data, pkl->size);
    PVp root = Unpickler(bytes, path).run();
    if (root->kind != PV::Dict) fail(path, "the pickle is not a state dict (a dict of tensors)");
    std::map<std::string, const ZipEntry*> by_name;
    for (const ZipEntry& e : entries) by_name[e.name] = &e;
    std::vector<TensorRef> out;
    for (size_t i = 0; i + 1 < root->items.size(); i += 2) {
        const PVp& k = root->items[i];
        const PVp& v = root->items[i + 1];
        if (k->kind != PV::Str) fail(path, "state dict key is not a string");
        const std::string what = path + ": tensor '" + k->s + "'";
        if (v->kind != PV::Tensor) fail(what, "is not a tensor");
        auto it = by_name.find(prefix + "data/" + v->storage->s);
        if (it == by_name.end()) fail(what, "its storage '" + prefix + "data/" + v->storage->s + "' is missing from the archive");
        const ZipEntry& z = *it->second;
        TensorRef t;
        t.name = k->s;
        t.file = path;
        t.dtype = v->dtype;
        t.shape = v->shape;
        uint64_t numel = checked_numel(t.shape, what), es = uint64_t(dtype_size(t.dtype));
        if (v->storage->numel < 0 || uint64_t(v->storage->numel) * es != z.size)
            fail(what, "storage entry holds " + std::to_string(z.size) + " bytes, its pickle says " +
                           std::to_string(v->storage->numel) + " elements of " + dtype_name(t.dtype));
        int64_t expect = 1;  // row-major contiguous strides
        for (size_t d = t.shape.size(); d-- > 0;) {
            if (d >= v->stride.size() || (t.shape[d] > 1 && v->stride[d] != expect)) fail(what, "is not contiguous (stride " + shape_str(v->stride) + ")");
            expect *= t.shape[d];
        }
        if (v->stride.size() != t.shape.size()) fail(what, "stride and size disagree");
        if (v->offset < 0 || uint64_t(v->offset) > uint64_t(v->storage->numel) || numel > uint64_t(v->storage->numel) - uint64_t(v->offset))
            fail(what, "offset " + std::to_string(v->offset) + " + " + std::to_string(numel) + " elements run past its storage");
        t.offset = z.data + uint64_t(v->offset) * es;
        out.push_back(std::move(t));
    }
    return out;
}

}  // namespace interop
