// db.hpp — DB-LLM as a plug-in for fbi_llm.hpp: Flexible Dual Binarization (FDB) as a quantizer (id 3, "db",
// Config::quant = fbi::kDB) and Deviation-Aware Distillation (DAD) as three losses (ids 3–5: "dad" with the
// teacher's entropy as position weights, "dad-disagreement", "dad-uniform"). Include it after (or instead of)
// the header; it registers itself.
//
// METHOD NOTES (DB-LLM = Chen et al. 2024, arXiv 2402.11960). The whole file is an UNCONFIRMED reading: the paper's
// method section could not be checked here and its repository has no code; what it leaves open is our choice.
//   [Q4] init per row from a 2-bit uniform quantizer with step s: α1 = 2s, α2 = −s (s by least squares: choice)
//   [Q5] Ŵ = α1·B1 + α2·B2, B1 = H(W − (α1+α2)/2), B2 = H(α1·B1 + α2/2 − W), H(z) = [z ≥ 0]
//   [Q6] STE: ∂L/∂W = G, ∂L/∂α1_i = Σ_j G_ij B1_ij, ∂L/∂α2_i = Σ_j G_ij B2_ij
//   [D3] DAD: Σ_t w_t KL(p^T_t ‖ p^S_t) / Σ_t w_t, w_t from the teacher's entropy or the teacher–student
//        disagreement (w_t a choice)
//   [S8] dual binary on the ±1 kernels: α1·Σ_{B1=1} q + α2·Σ_{B2=1} q, Σ_{B=1} q = (Σ (2B−1) q + Σ q) / 2
//
// EQUATION MAP   label → function → test
//   [Q4] FDB init                          fdb_init                          "Q4 ..."
//   [Q5] Ŵ = α1·B1 + α2·B2                 fdb_codes, fdb_forward            "Q5 ..."
//   [Q6] FDB STE                           fdb_backward                      "Q6 ..."
//   [D3] DAD (weighted distillation)       distill_weighted_*, dad_weights   "D3 ..."
//   [S8] two masks, packed forward         db_pack, db_packed_forward        "S8 ..."
#pragma once
#include "../../fbi_llm.hpp"

namespace fbi {

constexpr Quant kDB{3};

// ---- Flexible Dual Binarization ([Q5]). Ŵ = α1·B1 + α2·B2, B1, B2 ∈ {0, 1}, α1, α2 learnable, one per OUTPUT ROW.
// With α1 > 0 > α2 the four levels are 0, α2, α1 + α2, α1; at initialisation (α1 = 2s, α2 = −s) they are
// s·{−1, 0, 1, 2}, a 2-bit uniform quantizer. ------------------------------------------------------------------

// [Q5] codes with the current scales, H(z) = 1 for z >= 0 (H(0) = 1):
//   B1 = H(W − (α1+α2)/2)          (above the midpoint between 0 and α1 + α2)
//   B2 = H(α1·B1 + α2/2 − W)       (then: the lower of the two remaining levels)
template <class R>
void fdb_codes(R w, R a1, R a2, R& b1, R& b2) {
    b1 = w - (a1 + a2) / R(2) >= R(0) ? R(1) : R(0);      // [Q5] B1
    b2 = a1 * b1 + a2 / R(2) - w >= R(0) ? R(1) : R(0);   // [Q5] B2
}
// Squared error of the 2-bit quantizer with step s on one row (its Ŵ at α1 = 2s, α2 = −s).
template <class R>
double fdb_init_error(const R* row, int n, R s) {
    double err = 0;
    for (int j = 0; j < n; j++) {
        R b1, b2;
        fdb_codes(row[j], R(2) * s, -s, b1, b2);
        double d = double(row[j]) - double(R(2) * s * b1 - s * b2);
        err += d * d;
    }
    return err;
}
// [Q4] initialisation, per row i: α1 = 2s, α2 = −s, with the step s chosen (the project's choice: the reading leaves it open)
// as the one among s = k/8 · mean|W_i|, k = 2 … 24, with the least squared error. For N(0, σ²) rows the choice
// lands near s ≈ σ.
template <class R>
void fdb_init(R* a1, R* a2, const R* W, int m, int n) {
    for (int i = 0; i < m; i++) {
        const R* row = W + size_t(i) * n;
        R mean_abs = std::max(absmean(row, size_t(n)), R(1e-12)), best_s = mean_abs;
        double best = std::numeric_limits<double>::infinity();
        for (int k = 2; k <= 24; k++) {
            R s = mean_abs * R(k) / R(8);
            double e = fdb_init_error(row, n, s);
            if (e < best) { best = e; best_s = s; }
        }
        a1[i] = R(2) * best_s;  // [Q4] α1 = 2s
        a2[i] = -best_s;        // [Q4] α2 = −s
    }
}
// [Q5]: Ŵ_ij = α1_i·B1_ij + α2_i·B2_ij.
template <class R>
void fdb_forward(R* w_hat, const R* W, const R* a1, const R* a2, int m, int n) {
#pragma omp parallel for schedule(static) if (long(m) * n >= kParallelMinWork)
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            R b1, b2;
            fdb_codes(W[size_t(i) * n + j], a1[i], a2[i], b1, b2);
            w_hat[size_t(i) * n + j] = a1[i] * b1 + a2[i] * b2;  // [Q5] Ŵ = α1·B1 + α2·B2
        }
}
// [Q6] identity STE, in our reading: the quantizer passes ∂L/∂Ŵ to W unchanged (∂L/∂W = G), and the scales
// get their exact gradient with the codes held fixed: ∂L/∂α1_i = Σ_j G_ij B1_ij, ∂L/∂α2_i = Σ_j G_ij B2_ij.
template <class R>
void fdb_backward(R* dW, R* da1, R* da2, const R* G, const R* W, const R* a1, const R* a2, int m, int n) {
#pragma omp parallel for schedule(static) if (long(m) * n >= kParallelMinWork)
    for (int i = 0; i < m; i++)  // rows are independent: each owns its α1_i, α2_i
        for (int j = 0; j < n; j++) {
            R g = G[size_t(i) * n + j], b1, b2;
            fdb_codes(W[size_t(i) * n + j], a1[i], a2[i], b1, b2);
            dW[size_t(i) * n + j] += g;  // [Q6] identity STE
            da1[i] += g * b1;            // [Q6] ∂L/∂α1
            da2[i] += g * b2;            // [Q6] ∂L/∂α2
        }
}

// ---- packed: two masks, B1 and B2, and α1, α2 per output row ([S8] dual binary) ---------------------------------
inline void db_pack(PackedLinear& p, const float* W, const float* a1, const float* a2) {
    auto code = [&](int i, int j, int which) {  // [Q5]: B1 (which = 1) or B2 (which = 2) of weight (i, j)
        float b1, b2;
        fdb_codes(W[size_t(i) * p.n + j], a1[i], a2[i], b1, b2);
        return (which == 1 ? b1 : b2) > 0;
    };
    p.mask[0] = pack_bits(p.m, p.n, [&](int i, int j) { return code(i, j, 1); });
    p.mask[1] = pack_bits(p.m, p.n, [&](int i, int j) { return code(i, j, 2); });
    p.scale[0].assign(a1, a1 + p.m);
    p.scale[1].assign(a2, a2 + p.m);
}
// y_i = (α1_i Σ_{B1=1} q + α2_i Σ_{B2=1} q) / s, q the int8 of x; Σ_{B=1} q = (signed + Σ q) / 2 per mask ([S8]).
inline void db_packed_forward(const PackedLinear& p, const float* x, float* y, PackedScratch& ws) {
    const float s = packed_signed_sums(p, x, ws);
    const int32_t sum_q = ws.a.sum_q;
    for (int i = 0; i < p.m; i++)
        y[i] = (p.scale[0][i] * float((ws.acc[0][i] + sum_q) / 2) + p.scale[1][i] * float((ws.acc[1][i] + sum_q) / 2)) / s;
}

template <class R> QuantOps<R> db_ops() {
    QuantOps<R> o;
    o.init = &fdb_init<R>;          // [Q4]
    o.forward = &fdb_forward<R>;    // [Q5]
    o.backward = &fdb_backward<R>;  // [Q6]
    return o;
}
inline Quantizer db_quantizer() {
    Quantizer q;
    q.id = kDB;
    q.name = "db";
    q.scale_name[0] = "alpha1";  // α1 ∈ R^m, one per output row ([Q5])
    q.scale_name[1] = "alpha2";  // α2 ∈ R^m
    q.per_row[0] = q.per_row[1] = true;
    q.f32 = db_ops<float>();
    q.f64 = db_ops<double>();
    q.masks = 2;
    q.packed_scale_sizes = [](int m, int, int sizes[2]) { sizes[0] = sizes[1] = m; };
    q.pack = &db_pack;
    q.packed_forward = &db_packed_forward;
    return q;
}
inline const bool kDBRegistered = register_quantizer(db_quantizer());

// ---- Deviation-Aware Distillation ([D3]) ----------------------------------------------------------------------------
// [D3]: a distillation loss in which
// position t has a weight w_t ≥ 0 (how ambiguous the position is), normalised by Σ w:
//   L_DAD = −Σ_t w_t Σ_v p^T_t(v) log softmax(z^S_t)(v) / Σ_t w_t.
// [D3] is Σ_t w_t KL(p^T_t ‖ p^S_t) / Σ_t w_t; KL = (the cross-entropy above) − H(p^T_t), and the entropy
// term does not depend on the student, so the gradients are identical. We report the cross-entropy form so that
// DAD with w_t = 1 equals L_AD (D1) — the same gradient, the same value up to summation order — and loss curves
// compare directly.
// The weights are constants in the backward (no gradient flows through w_t):
//   ∂L_DAD/∂z^S_t = w_t (softmax(z^S_t) − p^T_t) / Σ_t w_t.
// If every weight is 0 (e.g. a teacher certain everywhere under DadWeight::Entropy) the loss falls back to w_t = 1.
// The value, given p^T in probs_t (distill_weighted_forward computes both softmaxes first).
template <class R>
double distill_weighted_value(const R* probs_t, const R* logits_s, const R* w, int N, int V) {
    double loss = 0, wsum = 0;
    for (int t = 0; t < N; t++) wsum += double(w[t]);
    bool uniform = !(wsum > 0);
    for (int t = 0; t < N; t++) {
        const R* z = logits_s + size_t(t) * V;
        R lse = log_sum_exp(z, V);
        double ce = 0;
        for (int v = 0; v < V; v++) ce -= double(probs_t[size_t(t) * V + v] * (z[v] - lse));
        loss += (uniform ? 1.0 : double(w[t])) * ce;  // [D3] Σ w_t (·)
    }
    return loss / (uniform ? double(N) : wsum);  // [D3] / Σ w_t
}
template <class R>
double distill_weighted_forward(R* probs_s, R* probs_t, const R* logits_s, const R* logits_t, const R* w, int N,
                                int V) {
    softmax_rows(probs_s, logits_s, N, V);
    softmax_rows(probs_t, logits_t, N, V);
    return distill_weighted_value(probs_t, logits_s, w, N, V);
}
template <class R>
void distill_weighted_backward(R* dlogits, const R* probs_s, const R* probs_t, const R* w, int N, int V, R scale) {
    double wsum = 0;  // scale = grad_scale (NOT divided by N: Σ w plays that part)
    for (int t = 0; t < N; t++) wsum += double(w[t]);
    bool uniform = !(wsum > 0);
    for (int t = 0; t < N; t++) {
        R k = uniform ? R(scale / double(N)) : R(double(w[t]) * scale / wsum);  // [D3] w_t / Σ w
        for (int v = 0; v < V; v++) dlogits[size_t(t) * V + v] += (probs_s[size_t(t) * V + v] - probs_t[size_t(t) * V + v]) * k;
    }
}

// The weight functions shipped with the header ([D3] leaves w_t open; these are our choices, each in [0, 1]):
//   Uniform       w_t = 1                                  (DAD = AD)
//   Entropy       w_t = H(p^T_t) / log V                   (how unsure the teacher is)
//   Disagreement  w_t = ½ Σ_v |p^T_t(v) − p^S_t(v)|        (total-variation distance teacher ↔ student)
// To try another, compute w yourself and call distill_weighted_forward/backward.
enum class DadWeight : int { Uniform = 0, Entropy = 1, Disagreement = 2 };
inline const char* dad_weight_name(DadWeight d) {
    return d == DadWeight::Uniform ? "uniform" : d == DadWeight::Entropy ? "entropy" : "disagreement";
}
inline DadWeight dad_weight_from_name(const std::string& s) {
    for (DadWeight d : {DadWeight::Uniform, DadWeight::Entropy, DadWeight::Disagreement})
        if (s == dad_weight_name(d)) return d;
    throw std::invalid_argument("unknown DAD weight '" + s + "' (expected uniform, entropy or disagreement)");
}
template <class R>
void dad_weights(DadWeight kind, R* w, const R* probs_t, const R* probs_s, int N, int V) {
    for (int t = 0; t < N; t++) {
        const R* pt = probs_t + size_t(t) * V;
        const R* ps = probs_s + size_t(t) * V;
        double x = 0;
        if (kind == DadWeight::Uniform) x = 1;
        else if (kind == DadWeight::Entropy) {
            for (int v = 0; v < V; v++) if (pt[v] > 0) x -= double(pt[v]) * std::log(double(pt[v]));
            x = V > 1 ? x / std::log(double(V)) : 0.0;
        } else {
            for (int v = 0; v < V; v++) x += 0.5 * std::fabs(double(pt[v]) - double(ps[v]));
        }
        w[t] = R(x);
    }
}


// The three registered losses: DAD with each weight function (the header's loss_forward_backward calls them).
template <class R, DadWeight kind>
double dad_loss(R* dlogits, R* probs_s, R* probs_t, const R* logits_s, const R* logits_t, const int*, int N, int V,
                double grad_scale) {
    if (!logits_t) throw std::invalid_argument("fbi: the DAD loss needs a teacher");
    softmax_rows(probs_s, logits_s, N, V);  // [D3]: weights from this step's probabilities, then the weighted loss
    softmax_rows(probs_t, logits_t, N, V);
    std::vector<R> w(N);
    dad_weights(kind, w.data(), probs_t, probs_s, N, V);
    double l = distill_weighted_value(probs_t, logits_s, w.data(), N, V);
    distill_weighted_backward(dlogits, probs_s, probs_t, w.data(), N, V, R(grad_scale));
    return l;
}
constexpr Loss kLossDAD{3}, kLossDADDisagreement{4}, kLossDADUniform{5};
template <DadWeight kind>
LossPlugin dad_plugin(Loss id, const char* name) {
    return LossPlugin{id, name, &dad_loss<float, kind>, &dad_loss<double, kind>};
}
inline const bool kDADRegistered = register_loss(dad_plugin<DadWeight::Entropy>(kLossDAD, "dad")) &&
                                   register_loss(dad_plugin<DadWeight::Disagreement>(kLossDADDisagreement, "dad-disagreement")) &&
                                   register_loss(dad_plugin<DadWeight::Uniform>(kLossDADUniform, "dad-uniform"));
// The loss of a DadWeight (what train_tiny's --dad-weight picks).
inline Loss dad_loss_id(DadWeight d) {
    return d == DadWeight::Entropy ? kLossDAD : d == DadWeight::Disagreement ? kLossDADDisagreement : kLossDADUniform;
}

}  // namespace fbi
