// The quantizer interface (§3, Quantizer): the README's "Adding your own quantizer", word for word between the
// markers, is registered here and then trained, packed, saved and decoded through the header alone. Its STE is
// checked against its formula and its scale gradient against finite differences, like FBI's own ([F5]).
#include "testing.hpp"

using namespace fbi_test;

// >>> README: adding your own quantizer
// Ŵ_ij = a_i·sign(W_ij): one learnable scale per OUTPUT row (XNOR-Net's choice), 1 bit per weight.
namespace my {
constexpr fbi::Quant kRowSign{7};  // any unused id: files store it

template <class R> void init(R* a, R*, const R* W, int m, int n) {  // a_i = mean_j |W_ij|
    for (int i = 0; i < m; i++) {
        double s = 0;
        for (int j = 0; j < n; j++) s += std::fabs(W[size_t(i) * n + j]);
        a[i] = R(s / n);
    }
}
template <class R> void forward(R* w_hat, const R* W, const R* a, const R*, int m, int n) {
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) w_hat[size_t(i) * n + j] = a[i] * fbi::sign_pm1(W[size_t(i) * n + j]);
}
template <class R> void backward(R* dW, R* da, R*, const R* G, const R* W, const R* a, const R*, int m, int n) {
    for (int i = 0; i < m; i++)  // STE: ∂L/∂W = a_i·G,  ∂L/∂a_i = Σ_j G_ij·sign(W_ij)
        for (int j = 0; j < n; j++) {
            dW[size_t(i) * n + j] += a[i] * G[size_t(i) * n + j];
            da[i] += G[size_t(i) * n + j] * fbi::sign_pm1(W[size_t(i) * n + j]);
        }
}
inline void pack(fbi::PackedLinear& p, const float* W, const float* a, const float*) {
    p.mask[0] = fbi::pack_signs(W, p.m, p.n);  // one mask: sign(W)
    p.scale[0].assign(a, a + p.m);
}
inline void packed_forward(const fbi::PackedLinear& p, const float* x, float* y, fbi::PackedScratch& ws) {
    float s = fbi::packed_signed_sums(p, x, ws);  // int8 x, then Σ_j sign(W_ij)·q_j in ws.acc[0]
    for (int i = 0; i < p.m; i++) y[i] = p.scale[0][i] * float(ws.acc[0][i]) / s;
}
inline fbi::Quantizer quantizer() {
    fbi::Quantizer q;
    q.id = kRowSign;
    q.name = "row-sign";
    q.scale_name[0] = "a";  // the tensor "block0.wq.a", one value per output row
    q.per_row[0] = true;
    q.f32 = {&init<float>, &forward<float>, &backward<float>};
    q.f64 = {&init<double>, &forward<double>, &backward<double>};
    q.masks = 1;
    q.packed_scale_sizes = [](int m, int, int sizes[2]) { sizes[0] = m, sizes[1] = 0; };
    q.pack = &pack;
    q.packed_forward = &packed_forward;
    return q;
}
inline const bool registered = fbi::register_quantizer(quantizer());
}  // namespace my
// <<< README: adding your own quantizer

using namespace fbi;

TEST_CASE("I1 a quantizer of your own (the README's example): STE by its formula, scales by finite differences") {
    CHECK(quant_from_name("row-sign") == my::kRowSign);
    GradCase gc(my::kRowSign, 81);
    ModelT<double>& m = gc.m;
    CHECK(m.find("block0.wq.a") >= 0);
    CHECK(m.tensors[m.blocks[0].lin[WQ].scale[0]].cols == m.blocks[0].lin[WQ].m);  // one per output row
    check_latent_grads(gc, [&](const LinearRef& lin, int i, int, double G) { return m.p(lin.scale[0])[i] * G; });
    for (const BlockRef& blk : m.blocks)
        for (int id : {WQ, WDOWN}) {
            double worst = worst_fd_error(m, size_t(blk.lin[id].scale[0]), gc.analytic, [&] { return gc.loss(); }, 6, 82);
            CHECK(worst < 1e-6);
        }
}

TEST_CASE("I1 a quantizer of your own packs, saves, loads and decodes through the header's kernels; checkpoints") {
    Model m = trained_like(my::kRowSign, 83);
    PackedModel pm = pack_model(m, "abc");
    const std::vector<int> toks = {1, 5, 12, 0, 7, 7, 3, 9};
    model_forward(m, toks.data(), 1, int(toks.size()));
    const MaxDiff diff = max_diff(decode_all(pm, Kernel::Fast, toks), m.acts.logits);
    INFO("max |logit difference| " << diff.worst << " (max |logit| " << diff.scale << ")");
    CHECK(diff.worst < 0.05 * diff.scale);  // int8 activations are the only approximation, as for FBI (P2)
    CHECK(diff.worst > 0.0);
    CHECK(decode_all(pm, Kernel::Reference, toks) == decode_all(pm, Kernel::Popcount, toks));
    PackedModel back = parse_packed_model(packed_model_bytes(pm), "mem");
    CHECK(back.cfg.quant == my::kRowSign);
    CHECK(packed_model_bytes(back) == packed_model_bytes(pm));
    CHECK(decode_all(back, Kernel::Fast, toks) == decode_all(pm, Kernel::Fast, toks));
    CHECK(packed_bits_per_weight(pm) > 1.0);
    // and its checkpoint round trip: the quantizer id and the scale tensors come back
    Model again = model_from_checkpoint(parse_checkpoint(checkpoint_bytes(make_checkpoint(m, "abc", 3, nullptr)), "mem"));
    CHECK(again.cfg.quant == my::kRowSign);
    CHECK(again.params == m.params);
    CHECK(again.find("block0.w_down.a") == m.find("block0.w_down.a"));
}

TEST_CASE("I1 the registry refuses a taken id or name and an incomplete table, and names an unregistered id") {
    Quantizer q = my::quantizer();
    CHECK_THROWS_WITH(register_quantizer(q), doctest::Contains("is taken by 'row-sign'"));
    q.id = Quant(8);
    q.name = "fbi";
    CHECK_THROWS_WITH(register_quantizer(q), doctest::Contains("is taken by 'fbi'"));
    q = my::quantizer();
    q.id = Quant(8), q.name = "half-done";
    q.f64.backward = nullptr;
    CHECK_THROWS_WITH(register_quantizer(q), doctest::Contains("'half-done' needs forward and backward for float and double"));
    q = my::quantizer();
    q.id = Quant(8), q.name = "half-done";
    q.packed_forward = nullptr;
    CHECK_THROWS_WITH(register_quantizer(q), doctest::Contains("packs, so it needs packed_forward"));
    q = my::quantizer();
    q.id = Quant(8), q.name = "half-done";
    q.f32.init = nullptr;
    CHECK_THROWS_WITH(register_quantizer(q), doctest::Contains("has scales but no init"));
    CHECK(find_quantizer(Quant(8)) == nullptr);  // nothing half-done was registered
    Config c = tiny_config(Quant::FBI);
    c.quant = Quant(42);
    CHECK_THROWS_WITH(check_config(c), doctest::Contains("unknown quantizer id 42 (not registered"));
    CHECK_THROWS_WITH(quant_from_name("ternary"), doctest::Contains("registered: fp32, fbi"));
}
