// Hand-made torch.save bytes, for tests/test_interop.cpp and the fuzzer's seeds (tests/fuzz/make_seeds.cpp): a stored
// zip archive, and the protocol-2 pickle torch.save writes for a one-tensor state dict, opcode by opcode.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

namespace interop_bytes {

struct Bytes {
    std::vector<unsigned char> b;
    void u8(unsigned v) { b.push_back((unsigned char)v); }
    void u16(unsigned v) { u8(v & 255), u8(v >> 8); }
    void u32(uint32_t v) { u16(v & 0xFFFF), u16(v >> 16); }
    void str(const std::string& s) { b.insert(b.end(), s.begin(), s.end()); }
    void raw(const void* p, size_t n) { auto c = (const unsigned char*)p; b.insert(b.end(), c, c + n); }
};
inline std::vector<unsigned char> zip_of(const std::vector<std::pair<std::string, std::vector<unsigned char>>>& entries) {
    Bytes z, cd;
    for (const auto& [name, data] : entries) {
        uint32_t at = uint32_t(z.b.size());
        z.u32(0x04034b50), z.u16(20), z.u16(0), z.u16(0), z.u16(0), z.u16(0), z.u32(0);  // sig, version, flags, stored, time, date, crc
        z.u32(uint32_t(data.size())), z.u32(uint32_t(data.size())), z.u16(uint16_t(name.size())), z.u16(0);
        z.str(name), z.raw(data.data(), data.size());
        cd.u32(0x02014b50), cd.u16(20), cd.u16(20), cd.u16(0), cd.u16(0), cd.u16(0), cd.u16(0), cd.u32(0);
        cd.u32(uint32_t(data.size())), cd.u32(uint32_t(data.size())), cd.u16(uint16_t(name.size())), cd.u16(0), cd.u16(0);
        cd.u16(0), cd.u16(0), cd.u32(0), cd.u32(at), cd.str(name);
    }
    uint32_t cd_at = uint32_t(z.b.size());
    z.raw(cd.b.data(), cd.b.size());
    z.u32(0x06054b50), z.u16(0), z.u16(0), z.u16(uint16_t(entries.size())), z.u16(uint16_t(entries.size()));
    z.u32(uint32_t(cd.b.size())), z.u32(cd_at), z.u16(0);
    return z.b;
}
// The pickle torch.save writes for {"w": FloatStorage tensor of shape [2, 3]} (protocol 2), opcode by opcode.
inline std::vector<unsigned char> state_dict_pickle(const std::string& global = "torch._utils\n_rebuild_tensor_v2\n") {
    Bytes p;
    auto unicode = [&](const std::string& s) { p.u8('X'), p.u32(uint32_t(s.size())), p.str(s); };
    p.u8(0x80), p.u8(2);
    p.str("ccollections\nOrderedDict\n"), p.u8(')'), p.u8('R');  // OrderedDict()
    p.u8('q'), p.u8(0);
    p.u8('('), unicode("w");
    p.u8('c'), p.str(global);
    p.u8('(');
    p.u8('('), unicode("storage"), p.str("ctorch\nFloatStorage\n"), unicode("0"), unicode("cpu"), p.u8('K'), p.u8(6), p.u8('t');
    p.u8('Q');                                                   // BINPERSID → the storage
    p.u8('K'), p.u8(0);                                          // storage offset
    p.u8('K'), p.u8(2), p.u8('K'), p.u8(3), p.u8(0x86);          // size (2, 3)
    p.u8('K'), p.u8(3), p.u8('K'), p.u8(1), p.u8(0x86);          // stride (3, 1)
    p.u8(0x89);                                                  // requires_grad False
    p.str("ccollections\nOrderedDict\n"), p.u8(')'), p.u8('R');  // backward hooks
    p.u8('t'), p.u8('R');                                        // _rebuild_tensor_v2(...)
    p.u8('u'), p.u8('.');                                        // SETITEMS, STOP
    return p.b;
}
// The archive for that pickle, with its storage of 6 floats −2.5 … 2.5.
inline std::vector<unsigned char> torch_bin(const std::vector<unsigned char>& pickle) {
    std::vector<unsigned char> data(24);
    for (int i = 0; i < 6; i++) { float v = float(i) - 2.5f; std::memcpy(&data[4 * i], &v, 4); }
    return zip_of({{"archive/data.pkl", pickle}, {"archive/data/0", data}, {"archive/version", {'3', '\n'}}});
}

}  // namespace interop_bytes
