// fbi_llm.hpp — fully binarized LLMs, in one readable C++17 header.
// =====================================================================================================
//
// WHAT THIS IS
//   A LLaMA-style transformer (token ids in, logits out) with a manual forward AND backward pass for every
//   layer, written to be read top to bottom. Its linear layers can be full precision (the teacher) or
//   FBI-linear (FBI-LLM, Ma, Sun & Shen 2024, arXiv 2407.07093): 1-bit weights sign(W) with a learnable
//   scale α and shift β per input column, trained from scratch with the straight-through estimator (STE)
//   and autoregressive distillation (AD) from a frozen full-precision teacher. Also here: AdamW with warm-up
//   + cosine schedule, deterministic batching, evaluation, KV-cache generation and atomic checkpoints.
//   Two related methods share the same model and the same quantizer dispatch (§3): BitNet b1.58 (ternary
//   weights, int8 activations; arXiv 2402.17764) and DB-LLM (dual binarization and deviation-aware
//   distillation; arXiv 2402.11960 — our reading of it is UNCONFIRMED, see [Q4]–[Q6], [D3]).
//
// HOW TO USE
//   #include "fbi_llm.hpp"                      // needs Eigen 3 (-I/usr/include/eigen3); OpenMP optional
//   fbi::Config cfg;  cfg.V = 65;  cfg.quant = fbi::Quant::FBI;
//   auto model = fbi::build_model<float>(cfg, /*seed=*/1337);
//   fbi::model_forward(model, tokens, B, T);     // logits in model.acts.logits  (B×T×V)
//   see examples/pipeline/train_tiny.cpp for the whole teacher → student pipeline, tests/ for worked examples.
//   #include "examples/kernels/fast_kernels.hpp" adds the fast packed kernels (AVX2, table lookup): a plug-in
//   that the packed decoder runs as Kernel::Fast (§9, FastKernel); this header itself has no intrinsics.
//
// COPY-PASTE
//   Three blocks stand alone: the FBI-linear layer, the losses (softmax, CE, AD) and the portable popcount
//   GEMV. Copy the lines between "// >>> copy-paste NAME (needs: …)" and "// <<< copy-paste NAME", add the
//   standard headers and the one-line definitions the marker names; nothing else of this header, no Eigen.
//   `make test` proves it (tests/copy_paste.sh: each block compiled alone gives the header's results).
//
// NOTATION (the letters used in every comment and signature, as in llm.c)
//   B batch, T time (context), C model width, V vocabulary, L layers, NH heads, hs = C/NH head size,
//   F SwiGLU hidden width, N = B·T rows. A linear layer has latent weight W ∈ R^{m×n} (m out, n in; the
//   PyTorch [out, in] layout); a row x ∈ R^n maps to y = x Wᵀ ∈ R^m. All matrices are row-major.
//   Gradients are named d<thing> and are ALWAYS accumulated with +=; callers zero them first.
//
// WHAT IT LEAVES OUT (and where to go next)
//   GPU kernels, mixed precision, BPE tokenizers (the header takes token ids; examples/ brings a char
//   tokenizer), multi-node training, dropout. For those: PyTorch + the official FBI-LLM code, or llm.c.
//
// READING ORDER (the § banners below; § always means a part of this header)
//   §0 config · §1 utilities · §2 layers, forward/backward side by side · §3 quantizers (FBI, b1.58, DB)
//   §4 losses · §5 model · §6 optimizer + schedule · §7 training · §8 inference (KV cache)
//   §9 packed 1-bit inference (popcount kernels) · §10 checkpoints and the packed model file
//
// METHOD NOTES — every equation the code implements, with a label cited as [X] at the line that computes it.
//   Papers: FBI-LLM = Ma, Sun & Shen 2024, arXiv 2407.07093 (v1); b1.58 = Ma et al. 2024, "The Era of 1-bit
//   LLMs", arXiv 2402.17764; BitNet = Wang et al. 2023, arXiv 2310.11453; DB-LLM = Chen et al. 2024,
//   arXiv 2402.11960. "choice" marks what is this project's own decision; "UNCONFIRMED" a reading of a paper
//   whose method text we could not check. FBI-LLM equation numbers are as its authors cite them on the
//   official code's issue tracker (eq. 3, 4–5); the other FBI-LLM items name the method without a number.
//   The derivations, checked numerically against numpy and PyTorch autograd: notebooks/01_equations.ipynb.
//  Model (LLaMA, Touvron et al. 2023, arXiv 2302.13971 §2.2, as FBI-LLM uses it)
//   [M1] logits = H·RMSNorm(block_L(…block_1(E[tokens]))), block: h = x + Attn(RMSNorm(x)), out = h +
//        MLP(RMSNorm(h)); no biases; E, every RMSNorm and the head H (untied) stay full precision, every
//        linear inside a block is quantized (as FBI-LLM binarizes them)
//   [M0] init: every matrix ~ N(0, 0.02²), norm gains 1                                    (choice, GPT-2's)
//   [L1] RMSNorm  y = g ⊙ x / sqrt(mean(x²) + ε), ε = 1e-5                      (Zhang & Sennrich, 1910.07467)
//   [L2] RoPE, rotate half: pairs (i, i + hs/2) turn by p·θ_i, θ_i = 10000^(−2i/hs)  (Su et al., 2104.09864;
//        the pairing is a choice, the Hugging Face LLaMA one; q·k depends only on the position difference)
//   [L3] causal attention  Y = softmax(Q Kᵀ / sqrt(hs) + M) V, M = −∞ above the diagonal
//   [L4] SwiGLU  down(silu(x Gᵀ) ⊙ (x Uᵀ)), silu(g) = g·σ(g), F = 8C/3 rounded up to a multiple of 8
//        (Shazeer, 2002.05202; the rounding is a choice)
//   [L5] linear  y = x Wᵀ;  [L6] embedding  x_t = E[token_t]
//  FBI-linear (FBI-LLM's method section)
//   [F1] W_b = sign(W), sign(w) = +1 for w > 0, −1 otherwise. sign(0) = −1 is a choice: a packed bit cannot
//        hold 0; the official code's torch.sign gives 0 (a real-valued latent weight is essentially never 0)
//   [F2] Ŵ_ij = α_j·W_b,ij + β_j: a learnable scale α and shift β per input column j   (FBI-LLM eq. 3)
//   [F3] y_i = Σ_j W_b,ij·(α_j x_j) + Σ_j β_j x_j: [F2] regrouped; the β term is one scalar per token
//   [F4] init from the latent W: β_j = (1/m) Σ_i W_ij, α_j = (1/m) Σ_i |W_ij − β_j|       (FBI-LLM eq. 4–5,
//        assigned as the official code does: α = column mean absolute deviation, β = column mean)
//   [F5] STE, identity, no clipping; G = ∂L/∂Ŵ: ∂L/∂W_ij = α_j G_ij, ∂L/∂α_j = Σ_i G_ij W_b,ij,
//        ∂L/∂β_j = Σ_i G_ij, ∂L/∂x = g Ŵ                (FBI-LLM; as the official code's STE)
//   [F6] flip-flop ratio: Σ (sign changed since the previous step) / Σ elements, over every FBI-linear
//        (FBI-LLM's training-trajectory analysis; per step here, between checkpoints there)
//  Losses
//   [D0] L_CE = −(1/N) Σ_t log softmax(z_t)[y_t], N = B·T positions
//   [D1] L_AD = −(1/N) Σ_t Σ_v p^T_t(v) log softmax(z^S_t)(v), p^T = softmax(z^T), teacher frozen, labels
//        unused; ∂L/∂z^S_t = (softmax(z^S_t) − p^T_t)/N                        (FBI-LLM's AD loss)
//   [D2] 0.5 L_CE + 0.5 L_AD (the official code's mixed mode); with micro-batches each one's loss is divided
//        by their number (choice)
//   [D3] DAD: Σ_t w_t KL(p^T_t ‖ p^S_t) / Σ_t w_t, w_t from the teacher's entropy or the teacher–student
//        disagreement                       (DB-LLM's deviation-aware distillation: UNCONFIRMED; w_t a choice)
//  Optimizer (Loshchilov & Hutter, 1711.05101)
//   [O1] AdamW, decoupled decay: m ← β1 m + (1−β1) g, v ← β2 v + (1−β2) g², θ ← θ − lr·(m̂/(sqrt(v̂) + ε) +
//        λθ); β1 = 0.9, β2 = 0.95, ε = 1e-8, λ = 0.1 (FBI-LLM's recipe; which tensors decay is a choice)
//   [O2] global clipping: g ← g · min(1, c/‖g‖), c = 1
//   [O3] lr(s) = peak·s/S_w for s < S_w, then floor + ½(1 + cos(π (s−S_w)/(S−S_w)))·(peak − floor), then floor
//  BitNet b1.58 (b1.58 §2)
//   [Q1] γ = mean|W| over the tensor, code = RoundClip(W/(γ + ε), −1, 1) ∈ {−1, 0, +1}, Ŵ = γ·code (eq. 1–3)
//   [Q2] per token: s = 127 / max(max_j |x_j|, 1e-5), q = clamp(round(s·x), −128, 127), x̃ = q/s
//        (BitNet §2.1 eq. 4–5, per token as b1.58 §2 says; the 1e-5 floor is a choice)
//   [Q3] identity STE through both quantizers: ∂L/∂W = ∂L/∂Ŵ, ∂L/∂x = ∂L/∂x̃        (BitNet §2.2)
//  DB-LLM flexible dual binarization — the whole block is an UNCONFIRMED reading of DB-LLM
//   [Q4] init per row from a 2-bit uniform quantizer with step s: α1 = 2s, α2 = −s (s by least squares: choice)
//   [Q5] Ŵ = α1·B1 + α2·B2, B1 = H(W − (α1+α2)/2), B2 = H(α1·B1 + α2/2 − W), H(z) = [z ≥ 0]
//   [Q6] STE: ∂L/∂W = G, ∂L/∂α1_i = Σ_j G_ij B1_ij, ∂L/∂α2_i = Σ_j G_ij B2_ij
//  Packed inference (this project's derivations)
//   [P1] FBI: u = α ⊙ x, q = int8(u) by [Q2], y_i = (Σ_j b_ij q_j)/s + β·x — [F3] with one approximation
//   [S7] Σ_j b_j q_j = 2·Σ_{b=+1} q − Σ q for b ∈ {±1}; o = q + 128 ∈ [0, 255] in 8 bit planes P_k:
//        Σ_{b=+1} o = Σ_k 2^k·popcount(bits & P_k), so Σ_{b=+1} q = that − 128·popcount(bits)
//   [S6] table lookup: per group of 4 inputs the 16 sums ±q_a ±q_b ±q_c ±q_d, indexed by 4 weight bits
//        (the T-MAC idea, arXiv 2407.00088)
//   [S8] ternary: Σ code·q = Σ_{code=+1} q − Σ_{code=−1} q; dual binary: α1·Σ_{B1=1} q + α2·Σ_{B2=1} q
//   [P4] bits per weight: 1 + 2·32/m for fp32 α, β per column (FBI-LLM reports ≈ 1.01 at its shapes)
//   [P6] α, β codebooks: each vector keeps 2^bits levels fitted by 1-D Lloyd (choice; not in the papers)
//
// EQUATION MAP   (label → function → test; run one check with  make test ARGS='-tc="F2*"')
//   label                                 function                         test case(s)
//   [L1] RMSNorm                          rmsnorm_forward/backward         "L1 rmsnorm ..."
//   [L2] RoPE (rotate half)               rope_forward/backward            "L2 rope ...", "L2 RoPE shift ..."
//   [L3] causal attention                 attention_forward/backward       "L3 attention ...", "M2 causality"
//   [L4] SwiGLU                           swiglu_forward/backward          "L4 swiglu ..."
//   [L5] linear y = x Wᵀ                  matmul_forward/backward          "L5 matmul ..."
//   [L6] embedding                        embedding_forward/backward       "L6 embedding ..."
//   [M0] init N(0, 0.02²)                 build_model                      "M0 init ..."
//   [M1] the whole model                  model_forward/backward           "M1 ...", "M2 ...", "M4 ..."
//   [F1] W_b = sign(W), sign(0) = −1      sign_pm1                         "F1 ..."
//   [F2] Ŵ = α·W_b + β                    fbi_forward                      "F2 ..."
//   [F3] y = x Ŵᵀ (fused form)            matmul_forward / §9              "F3 ..."
//   [F4] α, β initialisation              fbi_init                         "F4 ..."
//   [F5] STE gradients                    fbi_backward                     "F5 ..."
//   [F6] flip-flop ratio                  FlipCounter::update              "F6 ..."
//   [D0] L_CE                             cross_entropy_forward/backward   "D0 ..."
//   [D1] L_AD                             distill_forward/backward         "D1 ..."
//   [D2] 0.5 L_CE + 0.5 L_AD              loss_forward_backward            "D2 ..."
//   [D3] DAD (weighted distillation)      distill_weighted_*, dad_weights  "D3 ..."
//   [O1] AdamW                            adamw_step                       "O1 ..."
//   [O2] grad-norm clipping               clip_grad_norm                   "O2 ..."
//   [O3] warm-up + cosine                 lr_schedule                      "O3 ..."
//   [Q1] b1.58 γ, RoundClip ternary codes ternary_forward, ternary_code    "Q1 ..."
//   [Q2] int8 absmax activation           quantize_int8_absmax, act_quant_rows  "S5 ...", "Q2 ..."
//   [Q3] identity STE (weights, activations) quantize_backward, linear_input  "Q3 ..."
//   [Q4] FDB init                         fdb_init                         "Q4 ..."
//   [Q5] FDB Ŵ = α1·B1 + α2·B2            fdb_codes, fdb_forward           "Q5 ..."
//   [Q6] FDB STE                          fdb_backward                     "Q6 ..."
//   [F1] sign bits, padding               pack_signs                       "S7 pack_signs ..."
//   [S7] popcount identity                gemv_popcount (_avx2: plug-in)   "S7 worked example ...", "S7 every kernel ..."
//   [S6] table lookup                     gemv_tl, _avx2 (plug-in: examples/kernels/fast_kernels.hpp)  "S7 table-lookup ...", "S7 every kernel ..."
//   [P1] u = α⊙x, y = Σ b q / s + β·x     PackedLinearFn                   "P1 ...", "P2 ..."
//   [P4] packed file, bits per weight     save/load_packed_model           "P3 ...", "P4 ...", "S8 packed file ..."
//   [P6] bits per weight: α, β codebooks  codebook_quantize, write/read_scales  "P6 ...", "P7 ...", "P8 ..."
//   [S8] ternary / dual-binary masks      pack_linear, signed_gemv         "S8 ..."
//   [Q1]+[Q2] integer b1.58 = dequantized PackedLinearFn (B158)            "S8 b1.58: the train path ..."
//
// BUILD NOTES
//   Compile with -O2/-O3 and, if you can, -fopenmp. Never -ffast-math: the loss uses exp/log of large
//   negative numbers and the tests compare to the last bit. Everything is `inline` in namespace fbi, so the
//   header can be included from several translation units.
// =====================================================================================================
#pragma once

// The header parallelises matrix products itself (for_row_blocks, §2); Eigen's own threads stay off.
#ifndef EIGEN_DONT_PARALLELIZE
#define EIGEN_DONT_PARALLELIZE
#endif
#include <Eigen/Dense>

#include <algorithm>
#include <array>
#include <cassert>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>  // fsync, getpid: atomic checkpoint writes
#endif

namespace fbi {

// =====================================================================================================
// §0 CONFIG
// =====================================================================================================

// How the linear layers inside the blocks turn their latent parameters into the weight used in the forward
// pass (§3). Embedding, norms and LM head are always full precision ([M1]).
enum class Quant : int {
    FP = 0,    // Ŵ = W                                  (the teacher)
    FBI = 1,   // Ŵ = α ⊙ sign(W) + β, α, β per column   (FBI-LLM, [F2])
    B158 = 2,  // Ŵ = γ · RoundClip(W/γ, −1, 1) ternary, int8 activations  (BitNet b1.58, [Q1])
    DB = 3,    // Ŵ = α1·B1 + α2·B2, B ∈ {0,1}, α per row (DB-LLM FDB, [Q5] — UNCONFIRMED reading)
};

inline const char* quant_name(Quant q) {
    switch (q) {
        case Quant::FP: return "fp32";
        case Quant::FBI: return "fbi";
        case Quant::B158: return "b1.58";
        case Quant::DB: return "db";
    }
    return "?";
}
// Parse a name as written by quant_name (also "fp" and "b158"); throws on anything else.
inline Quant quant_from_name(const std::string& s) {
    for (Quant q : {Quant::FP, Quant::FBI, Quant::B158, Quant::DB})
        if (s == quant_name(q)) return q;
    if (s == "fp") return Quant::FP;
    if (s == "b158") return Quant::B158;
    throw std::invalid_argument("unknown quantizer '" + s + "' (expected fp32, fbi, b1.58 or db)");
}
// BitNet b1.58 also quantizes the activations entering every block linear ([Q2]); the others do not.
inline bool quantizes_activations(Quant q) { return q == Quant::B158; }

// SwiGLU hidden width: 8C/3 rounded to a multiple of 8 ([L4]). C = 128 → 344.
inline int swiglu_width(int C) { return (8 * C / 3 + 7) / 8 * 8; }

struct Config {
    int V = 65;    // vocabulary size (token ids in [0, V))
    int C = 128;   // model width
    int L = 4;     // number of blocks
    int NH = 4;    // attention heads
    int F = 344;   // SwiGLU hidden width (use swiglu_width(C) when you change C)
    int T = 64;    // maximum context length
    Quant quant = Quant::FP;
};

inline bool operator==(const Config& a, const Config& b) {
    return a.V == b.V && a.C == b.C && a.L == b.L && a.NH == b.NH && a.F == b.F && a.T == b.T &&
           a.quant == b.quant;
}
inline bool operator!=(const Config& a, const Config& b) { return !(a == b); }

inline std::string describe(const Config& c) {
    return "V=" + std::to_string(c.V) + " C=" + std::to_string(c.C) + " L=" + std::to_string(c.L) +
           " NH=" + std::to_string(c.NH) + " F=" + std::to_string(c.F) + " T=" + std::to_string(c.T) +
           " quant=" + quant_name(c.quant);
}

inline void check_config(const Config& c) {
    auto fail = [&](const std::string& why) {
        throw std::invalid_argument("fbi::Config (" + describe(c) + "): " + why);
    };
    if (c.V < 1 || c.C < 1 || c.L < 1 || c.NH < 1 || c.F < 1 || c.T < 1) fail("every size must be >= 1");
    if (c.C % c.NH != 0) fail("C must be divisible by NH");
    if ((c.C / c.NH) % 2 != 0) fail("head size C/NH must be even (RoPE rotates pairs)");
    if (int(c.quant) < 0 || int(c.quant) > int(Quant::DB)) fail("unknown quantizer");
}

// =====================================================================================================
// §1 UTILITIES: random numbers, Eigen views, threads, timing
// =====================================================================================================

// A small deterministic RNG (splitmix64). std::normal_distribution differs between standard libraries;
// this one gives the same numbers everywhere, so seeds reproduce across machines.
struct Rng {
    uint64_t state;
    explicit Rng(uint64_t seed) : state(seed) {}
    uint64_t next_u64() {
        uint64_t z = (state += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    double uniform() { return double(next_u64() >> 11) * (1.0 / 9007199254740992.0); }  // [0, 1)
    uint64_t below(uint64_t n) { return next_u64() % n; }  // [0, n); bias < n/2^64, negligible here
    double normal() {  // Box–Muller
        double u1 = uniform(), u2 = uniform();
        if (u1 < 1e-300) u1 = 1e-300;
        return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
    }
};

// Row-major Eigen views over our flat buffers: the same idea as llm.c's named pointers into one buffer.
template <class R> using MatR = Eigen::Matrix<R, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class R> using MapMat = Eigen::Map<MatR<R>>;
template <class R> using ConstMapMat = Eigen::Map<const MatR<R>>;
template <class R> using VecR = Eigen::Matrix<R, Eigen::Dynamic, 1>;
// A T×hs block of a N×C matrix (one head of one sequence): rows are C apart.
template <class R> using HeadView = Eigen::Map<MatR<R>, 0, Eigen::OuterStride<>>;
template <class R> using ConstHeadView = Eigen::Map<const MatR<R>, 0, Eigen::OuterStride<>>;

inline int num_threads() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

// Printed by every program at start: "why is only one core busy?" is the first question users ask.
inline std::string threading_summary() {
#ifdef _OPENMP
    return "OpenMP on, " + std::to_string(num_threads()) + " thread(s) (set OMP_NUM_THREADS to change)";
#else
    return "OpenMP off (built without -fopenmp): 1 thread";
#endif
}

inline double now_seconds() {
    using clock = std::chrono::steady_clock;
    return std::chrono::duration<double>(clock::now().time_since_epoch()).count();
}

// Below this many scalar operations an OpenMP fork/join (a few µs) costs more than it saves: every
// `parallel for` in the header carries `if (work >= kParallelMinWork)`. One-token decoding stays serial.
constexpr long kParallelMinWork = 1L << 15;

template <class R> void zero(std::vector<R>& v) { std::fill(v.begin(), v.end(), R(0)); }

// =====================================================================================================
// §2 LAYERS — forward and backward side by side.
// Shapes in comments; `in`/`out` are N×(features) row-major; every d<x> is accumulated with +=.
// =====================================================================================================

// ---- linear: out = in Wᵀ ------------------------------------------------------------------------------
// Threads split the ROWS of the result into one contiguous block each, and every block is one single-threaded
// Eigen GEMM. (Eigen's own multithreaded GEMM spin-waits between its threads: on a busy laptop, where one core
// is taken by something else, a step then slows down 10-50×. OpenMP blocks degrade gracefully.)
template <class F>
void for_row_blocks(int rows, long work, F&& fn) {
#ifdef _OPENMP
    if (work >= 16 * kParallelMinWork && omp_get_max_threads() > 1 && !omp_in_parallel()) {
#pragma omp parallel
        {
            int parts = omp_get_num_threads(), id = omp_get_thread_num();
            fn(int(long(rows) * id / parts), int(long(rows) * (id + 1) / parts));
        }
        return;
    }
#endif
    fn(0, rows);
}

// out (N×m), in (N×n), W (m×n)
template <class R>
void matmul_forward(R* out, const R* in, const R* W, int N, int n, int m) {
    ConstMapMat<R> W_(W, m, n);
    for_row_blocks(N, long(N) * n * m, [&](int r0, int r1) {
        MapMat<R>(out + size_t(r0) * m, r1 - r0, m).noalias() = ConstMapMat<R>(in + size_t(r0) * n, r1 - r0, n) * W_.transpose();
    });
}
// forward: out = in Wᵀ  ⇒  din += dout W,  dW += doutᵀ in
template <class R>
void matmul_backward(R* din, R* dW, const R* dout, const R* in, const R* W, int N, int n, int m) {
    for_row_blocks(N, long(N) * n * m, [&](int r0, int r1) {  // rows of din
        MapMat<R>(din + size_t(r0) * n, r1 - r0, n).noalias() += ConstMapMat<R>(dout + size_t(r0) * m, r1 - r0, m) * ConstMapMat<R>(W, m, n);
    });
    for_row_blocks(m, long(N) * n * m, [&](int r0, int r1) {  // rows of dW = columns r0..r1 of dout
        Eigen::Map<const MatR<R>, 0, Eigen::OuterStride<>> dout_cols(dout + r0, N, r1 - r0, Eigen::OuterStride<>(m));
        MapMat<R>(dW + size_t(r0) * n, r1 - r0, n).noalias() += dout_cols.transpose() * ConstMapMat<R>(in, N, n);
    });
}

// ---- token embedding: out[t] = E[token_t] ---------------------------------------------------------------
// out (N×C), E (V×C)
template <class R>
void embedding_forward(R* out, const int* tokens, const R* E, int N, int C) {
    for (int t = 0; t < N; t++) std::copy(E + size_t(tokens[t]) * C, E + size_t(tokens[t] + 1) * C, out + size_t(t) * C);
}
template <class R>
void embedding_backward(R* dE, const R* dout, const int* tokens, int N, int C) {
    for (int t = 0; t < N; t++)  // sequential: two rows may share a token
        for (int c = 0; c < C; c++) dE[size_t(tokens[t]) * C + c] += dout[size_t(t) * C + c];
}

// ---- RMSNorm ([L1]): y = g ⊙ x · r,  r = 1/sqrt(mean(x²) + eps) ------------------------------------------
constexpr double kNormEps = 1e-5;

// out, in (N×C), rstd (N) saved for backward, g (C)
template <class R>
void rmsnorm_forward(R* out, R* rstd, const R* in, const R* g, int N, int C) {
#pragma omp parallel for schedule(static) if (long(N) * C >= kParallelMinWork)
    for (int t = 0; t < N; t++) {
        const R* x = in + size_t(t) * C;
        R* y = out + size_t(t) * C;
        R ss = 0;
        for (int c = 0; c < C; c++) ss += x[c] * x[c];
        R r = R(1) / std::sqrt(ss / C + R(kNormEps));
        for (int c = 0; c < C; c++) y[c] = g[c] * x[c] * r;
        rstd[t] = r;
    }
}
// dg_c += Σ_t dy_c x_c r ;   dx = r·(g⊙dy) − (r³/C)·x·Σ_c g_c dy_c x_c
template <class R>
void rmsnorm_backward(R* din, R* dg, const R* dout, const R* in, const R* g, const R* rstd, int N, int C) {
#pragma omp parallel for schedule(static) if (long(N) * C >= kParallelMinWork)
    for (int t = 0; t < N; t++) {
        const R* x = in + size_t(t) * C;
        const R* dy = dout + size_t(t) * C;
        R* dx = din + size_t(t) * C;
        R r = rstd[t], dot = 0;
        for (int c = 0; c < C; c++) dot += g[c] * dy[c] * x[c];
        R k = r * r * r * dot / C;
        for (int c = 0; c < C; c++) dx[c] += r * g[c] * dy[c] - k * x[c];
    }
    for (int t = 0; t < N; t++) {  // sequential: every row adds into the same dg
        const R* x = in + size_t(t) * C;
        const R* dy = dout + size_t(t) * C;
        for (int c = 0; c < C; c++) dg[c] += dy[c] * x[c] * rstd[t];
    }
}

// ---- RoPE ([L2]), the "rotate half" convention -----------------------------------------------------------
// Within each head, feature i is paired with feature i + hs/2 (i < hs/2) and the pair is rotated by the angle
// pos · base^(−2i/hs):   x'_i = x_i cos − x_{i+hs/2} sin,   x'_{i+hs/2} = x_{i+hs/2} cos + x_i sin.
// Rotations compose, so q(p)·k(p') depends only on p − p' (tested in "L2 RoPE shift ...").
constexpr double kRopeBase = 10000.0;

// cos/sin tables (T_max × hs/2), computed in double.
template <class R>
void rope_tables(std::vector<R>& cos_t, std::vector<R>& sin_t, int T_max, int hs) {
    int half = hs / 2;
    cos_t.resize(size_t(T_max) * half);
    sin_t.resize(size_t(T_max) * half);
    for (int p = 0; p < T_max; p++)
        for (int i = 0; i < half; i++) {
            double angle = p * std::pow(kRopeBase, -2.0 * i / hs);
            cos_t[size_t(p) * half + i] = R(std::cos(angle));
            sin_t[size_t(p) * half + i] = R(std::sin(angle));
        }
}
// x (B×T×C) rotated in place; row (b, t) sits at position pos0 + t. sign = +1 rotates, −1 un-rotates.
template <class R>
void rope_rotate(R* x, const R* cos_t, const R* sin_t, int B, int T, int C, int NH, int pos0, int sign) {
    int hs = C / NH, half = hs / 2;
#pragma omp parallel for schedule(static) if (long(B) * T * C >= kParallelMinWork)
    for (int bt = 0; bt < B * T; bt++) {
        const R* cs = cos_t + size_t(pos0 + bt % T) * half;
        const R* sn = sin_t + size_t(pos0 + bt % T) * half;
        for (int h = 0; h < NH; h++) {
            R* v = x + size_t(bt) * C + size_t(h) * hs;
            for (int i = 0; i < half; i++) {
                R a = v[i], b = v[i + half], s = sign * sn[i];
                v[i] = a * cs[i] - b * s;
                v[i + half] = b * cs[i] + a * s;
            }
        }
    }
}
template <class R>
void rope_forward(R* x, const R* cos_t, const R* sin_t, int B, int T, int C, int NH, int pos0 = 0) {
    rope_rotate(x, cos_t, sin_t, B, T, C, NH, pos0, +1);
}
// A rotation is orthogonal, so its backward is the inverse rotation applied to the gradient (in place).
template <class R>
void rope_backward(R* dx, const R* cos_t, const R* sin_t, int B, int T, int C, int NH, int pos0 = 0) {
    rope_rotate(dx, cos_t, sin_t, B, T, C, NH, pos0, -1);
}

// ---- causal multi-head attention ([L3]): per head, Y = softmax(Q Kᵀ / sqrt(hs) + causal mask) V ----------
// q, k, v, out (B×T×C: head h owns columns h·hs … h·hs+hs−1), att (B×NH×T×T) the probabilities P, saved.
template <class R>
void attention_forward(R* out, R* att, const R* q, const R* k, const R* v, int B, int T, int C, int NH) {
    int hs = C / NH;
    R scale = R(1) / std::sqrt(R(hs));
#pragma omp parallel for schedule(static) if (long(B) * NH * T * T * hs >= kParallelMinWork)
    for (int bh = 0; bh < B * NH; bh++) {
        int b = bh / NH, h = bh % NH;
        size_t off = size_t(b) * T * C + size_t(h) * hs;
        Eigen::OuterStride<> stride(C);
        ConstHeadView<R> Q(q + off, T, hs, stride), K(k + off, T, hs, stride), Vv(v + off, T, hs, stride);
        MapMat<R> P(att + size_t(bh) * T * T, T, T);
        P.noalias() = (Q * K.transpose()) * scale;  // scores S
        for (int i = 0; i < T; i++) {               // row-wise softmax over the allowed positions j <= i
            R mx = P.row(i).head(i + 1).maxCoeff(), sum = 0;
            for (int j = 0; j <= i; j++) sum += (P(i, j) = std::exp(P(i, j) - mx));
            for (int j = 0; j <= i; j++) P(i, j) /= sum;
            for (int j = i + 1; j < T; j++) P(i, j) = 0;  // causal mask: the future gets probability 0
        }
        HeadView<R>(out + off, T, hs, stride).noalias() = P * Vv;
    }
}
// Y = P V ⇒ dP = dY Vᵀ, dV += Pᵀ dY;  softmax ⇒ dS = P ⊙ (dP − rowsum(P ⊙ dP));  S = Q Kᵀ·scale ⇒
// dQ += dS K·scale, dK += dSᵀ Q·scale. Masked entries have P = 0, so their dS is 0 too.
template <class R>
void attention_backward(R* dq, R* dk, R* dv, const R* dout, const R* att, const R* q, const R* k, const R* v,
                        int B, int T, int C, int NH) {
    int hs = C / NH;
    R scale = R(1) / std::sqrt(R(hs));
#pragma omp parallel for schedule(static) if (long(B) * NH * T * T * hs >= kParallelMinWork)
    for (int bh = 0; bh < B * NH; bh++) {
        int b = bh / NH, h = bh % NH;
        size_t off = size_t(b) * T * C + size_t(h) * hs;
        Eigen::OuterStride<> stride(C);
        ConstHeadView<R> Q(q + off, T, hs, stride), K(k + off, T, hs, stride), Vv(v + off, T, hs, stride);
        ConstHeadView<R> dY(dout + off, T, hs, stride);
        ConstMapMat<R> P(att + size_t(bh) * T * T, T, T);
        MatR<R> dS = dY * Vv.transpose();  // dP, turned into dS in place below
        HeadView<R>(dv + off, T, hs, stride).noalias() += P.transpose() * dY;
        for (int i = 0; i < T; i++) {
            R rowdot = P.row(i).dot(dS.row(i));
            dS.row(i) = (P.row(i).array() * (dS.row(i).array() - rowdot)).matrix();
        }
        HeadView<R>(dq + off, T, hs, stride).noalias() += (dS * K) * scale;
        HeadView<R>(dk + off, T, hs, stride).noalias() += (dS.transpose() * Q) * scale;
    }
}

// ---- SwiGLU ([L4]): act = silu(gate) ⊙ up,  silu(g) = g·σ(g) -----------------------------------------------
template <class R> R sigmoid(R x) { return R(1) / (R(1) + std::exp(-x)); }

// act (n), sig (n) = σ(gate) saved for the backward, gate (n), up (n)
template <class R>
void swiglu_forward(R* act, R* sig, const R* gate, const R* up, size_t n) {
#pragma omp parallel for schedule(static) if (long(n) >= kParallelMinWork)
    for (long i = 0; i < long(n); i++) {
        sig[i] = sigmoid(gate[i]);
        act[i] = gate[i] * sig[i] * up[i];
    }
}
// d silu(g)/dg = σ(g)·(1 + g·(1 − σ(g)))
template <class R>
void swiglu_backward(R* dgate, R* dup, const R* dact, const R* sig, const R* gate, const R* up, size_t n) {
#pragma omp parallel for schedule(static) if (long(n) >= kParallelMinWork)
    for (long i = 0; i < long(n); i++) {
        R s = sig[i];
        dgate[i] += dact[i] * up[i] * s * (R(1) + gate[i] * (R(1) - s));
        dup[i] += dact[i] * gate[i] * s;
    }
}

// ---- residual: out = a + b ---------------------------------------------------------------------------------------
template <class R>
void add_inplace(R* a, const R* b, size_t n) {
#pragma omp parallel for schedule(static) if (long(n) >= kParallelMinWork)
    for (long i = 0; i < long(n); i++) a[i] += b[i];
}

// =====================================================================================================
// §3 QUANTIZERS — the one place where a block linear's latent parameters become the weight Ŵ used in
// the forward pass, and where ∂L/∂Ŵ is sent back to those parameters.
// =====================================================================================================

// >>> copy-paste fbi_linear (needs: <cmath> <cstddef>; kParallelMinWork)   the FBI-linear layer: [F1]–[F5]
// [F1]: sign(w) = +1 for w > 0, −1 otherwise. NOTE: sign(0) = −1 here, because the packed 1-bit format
// (§9, [S7]) cannot hold a 0. The official PyTorch code uses torch.sign, which maps 0 to 0; latent weights
// are exactly 0 with probability ~0, so the two agree in practice.
template <class R> R sign_pm1(R w) { return w > R(0) ? R(1) : R(-1); }

// [F4]: xnor-style initialisation from the latent weights, per input column j:
//   β_j = (1/m) Σ_i W_ij  (column mean),   α_j = (1/m) Σ_i |W_ij − β_j|  (column mean absolute deviation).
template <class R>
void fbi_init(R* alpha, R* beta, const R* W, int m, int n) {
    for (int j = 0; j < n; j++) {
        double mean = 0, mad = 0;
        for (int i = 0; i < m; i++) mean += W[size_t(i) * n + j];
        mean /= m;
        for (int i = 0; i < m; i++) mad += std::fabs(W[size_t(i) * n + j] - mean);
        beta[j] = R(mean);
        alpha[j] = R(mad / m);
    }
}

// [F2]: Ŵ_ij = α_j · sign(W_ij) + β_j  (one α and one β per input column, broadcast over rows).
template <class R>
void fbi_forward(R* w_hat, const R* W, const R* alpha, const R* beta, int m, int n) {
#pragma omp parallel for schedule(static) if (long(m) * n >= kParallelMinWork)
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++)
            w_hat[size_t(i) * n + j] = alpha[j] * sign_pm1(W[size_t(i) * n + j]) + beta[j];  // [F2]
}
// [F5], identity straight-through estimator (no clipping). G = ∂L/∂Ŵ:
//   ∂L/∂W_ij = α_j G_ij  (sign passes the gradient unchanged; the chain rule keeps α),
//   ∂L/∂α_j = Σ_i G_ij sign(W_ij),   ∂L/∂β_j = Σ_i G_ij.
template <class R>
void fbi_backward(R* dW, R* dalpha, R* dbeta, const R* G, const R* W, const R* alpha, int m, int n) {
#pragma omp parallel for schedule(static) if (long(m) * n >= kParallelMinWork)
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) dW[size_t(i) * n + j] += alpha[j] * G[size_t(i) * n + j];  // [F5]
    for (int i = 0; i < m; i++)  // sequential over rows: every row adds into the same α, β
        for (int j = 0; j < n; j++) {
            R g = G[size_t(i) * n + j];
            dalpha[j] += g * sign_pm1(W[size_t(i) * n + j]);  // [F5]
            dbeta[j] += g;                                     // [F5]
        }
}
// <<< copy-paste fbi_linear

// [F6], the flip-flop ratio: after each optimizer step, the fraction of latent weights (over every
// quantized linear) whose sign differs from the previous step (sign(0) = −1, as in F1).
struct FlipCounter {
    std::vector<uint8_t> prev;  // 1 = positive, one byte per latent weight
    template <class R>
    double update(const std::vector<const R*>& weights, const std::vector<size_t>& sizes) {
        size_t total = 0, flips = 0;
        for (size_t s : sizes) total += s;
        bool first = prev.size() != total;
        if (first) prev.assign(total, 0);
        size_t at = 0;
        for (size_t w = 0; w < weights.size(); w++)
            for (size_t i = 0; i < sizes[w]; i++, at++) {
                uint8_t pos = weights[w][i] > R(0);
                flips += pos != prev[at];
                prev[at] = pos;
            }
        return first || total == 0 ? 0.0 : double(flips) / double(total);
    }
};

// ---- BitNet b1.58 ([Q1]): ternary weights per tensor, 8-bit activations per token ------------------------

// [Q2] activations (also [P1]'s quantizer for the packed FBI kernels): per token (one row u of n values)
//   s = 127 / max(max_j |u_j|, 1e-5),  q_j = clamp(round(s·u_j), −128, 127);  returns s (dequantise: q / s).
// Rounding: std::nearbyint in the default rounding mode = round half to even, the same as torch.round
// (BitNet's reference code). The max |u| maps to ±127, so for finite input the clamp is only a safeguard;
// −128 is never produced here but is a legal input to every kernel (the tests use it).
// An all-zero u gives s = 127e5 and q = 0 everywhere (no division by zero, no NaN).
template <class R>
R quantize_int8_absmax(const R* u, int n, int8_t* q) {
    // max_j |u_j| with 8 independent running maxima: one chain of dependent max instructions would wait
    // ~4 cycles per element; 8 chains let the compiler use one 8-wide vector max per 8 elements.
    R lane_max[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int j8 = 0;
    for (; j8 + 8 <= n; j8 += 8)
        for (int l = 0; l < 8; l++) lane_max[l] = std::max(lane_max[l], R(std::fabs(u[j8 + l])));
    R max_abs = 0;
    for (int l = 0; l < 8; l++) max_abs = std::max(max_abs, lane_max[l]);
    for (int j = j8; j < n; j++) max_abs = std::max(max_abs, R(std::fabs(u[j])));
    const R s = R(127) / std::max(max_abs, R(1e-5));  // [Q2]
    for (int j = 0; j < n; j++) {
        R r = std::nearbyint(s * u[j]);          // [Q2] round(s·x)
        r = std::min(R(127), std::max(R(-128), r));  // [Q2] clamp to [−128, 127]
        q[j] = int8_t(r);
    }
    return s;
}

// [Q2], training form: every row of x (N rows × n) replaced by its dequantized int8 value q/s. The backward
// is the identity STE (∂L/∂x = ∂L/∂x̃), so there is no act_quant_backward: the model passes the gradient on.
template <class R>
void act_quant_rows(R* xq, const R* x, int N, int n) {
#pragma omp parallel if (long(N) * n >= kParallelMinWork)
    {
        std::vector<int8_t> q(n);  // one int8 row per thread
#pragma omp for schedule(static)
        for (int t = 0; t < N; t++) {
            R s = quantize_int8_absmax(x + size_t(t) * n, n, q.data());
            for (int j = 0; j < n; j++) xq[size_t(t) * n + j] = R(q[j]) / s;  // [Q2] dequantized x_q / s
        }
    }
}

// [Q1] weights: γ = mean |W| over the whole tensor, code = RoundClip(W / (γ + ε), −1, 1) ∈ {−1, 0, +1}.
constexpr double kTernaryEps = 1e-5;
template <class R>
R absmean(const R* W, size_t count) {
    double sum = 0;
    for (size_t i = 0; i < count; i++) sum += std::fabs(W[i]);
    return R(sum / double(count));  // [Q1] γ
}
template <class R>
R ternary_code(R w, R gamma) {
    R c = std::nearbyint(w / (gamma + R(kTernaryEps)));  // [Q1] round (half to even, as torch.round)
    return std::max(R(-1), std::min(R(1), c));          // [Q1] clip to [−1, 1]
}
// Ŵ = γ · code ([Q1]). Returns γ. The backward is the identity STE: ∂L/∂W = ∂L/∂Ŵ (γ is not learned).
template <class R>
R ternary_forward(R* w_hat, const R* W, int m, int n) {
    const size_t count = size_t(m) * n;
    const R gamma = absmean(W, count);
    for (size_t i = 0; i < count; i++) w_hat[i] = gamma * ternary_code(W[i], gamma);  // [Q1] dequantized γ·W_q
    return gamma;
}

// ---- DB-LLM Flexible Dual Binarization ([Q5]) — an UNCONFIRMED reading: the paper's method section could not
// be read and its repository has no code. Ŵ = α1·B1 + α2·B2, B1, B2 ∈ {0, 1}, α1, α2 learnable, one per OUTPUT ROW.
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

// ---- The dispatch used by the model: Ŵ from (W, a, b) and ∂L/∂Ŵ back to them ---------------------------------
// The two scale vectors a, b mean: FBI α, β per input column ([F2]); DB α1, α2 per output row ([Q5]);
// unused (null) for FP and b1.58 (whose γ is computed from W, not learned).
template <class R>
void quantize_forward(Quant q, R* w_hat, const R* W, const R* a, const R* b, int m, int n) {
    switch (q) {
        case Quant::FBI: fbi_forward(w_hat, W, a, b, m, n); return;
        case Quant::B158: ternary_forward(w_hat, W, m, n); return;
        case Quant::DB: fdb_forward(w_hat, W, a, b, m, n); return;
        case Quant::FP: std::copy(W, W + size_t(m) * n, w_hat); return;  // full precision: Ŵ = W
    }
}
template <class R>
void quantize_backward(Quant q, R* dW, R* da, R* db, const R* G, const R* W, const R* a, const R* b, int m, int n) {
    switch (q) {
        case Quant::FBI: fbi_backward(dW, da, db, G, W, a, m, n); return;
        case Quant::DB: fdb_backward(dW, da, db, G, W, a, b, m, n); return;
        case Quant::B158:  // [Q3] identity STE, like full precision
        case Quant::FP:
            for (size_t i = 0; i < size_t(m) * n; i++) dW[i] += G[i];
            return;
    }
}
// Initialise the learnable scales from the latent W (after W is drawn or copied).
template <class R>
void quantize_init(Quant q, R* a, R* b, const R* W, int m, int n) {
    if (q == Quant::FBI) fbi_init(a, b, W, m, n);  // [F4]
    if (q == Quant::DB) fdb_init(a, b, W, m, n);   // [Q4]
}

// =====================================================================================================
// §4 LOSSES ([D0]–[D3]). z are logits (N×V); every loss is a mean over the N positions.
// =====================================================================================================

// >>> copy-paste ad_loss (needs: <algorithm> <cmath> <cstddef>; kParallelMinWork)   softmax, CE [D0], AD [D1]
// Row-wise softmax, stable (subtract the max). probs may alias nothing.
template <class R>
void softmax_rows(R* probs, const R* logits, int N, int V) {
#pragma omp parallel for schedule(static) if (long(N) * V >= kParallelMinWork)
    for (int t = 0; t < N; t++) {
        const R* z = logits + size_t(t) * V;
        R* p = probs + size_t(t) * V;
        R mx = *std::max_element(z, z + V), sum = 0;
        for (int v = 0; v < V; v++) sum += (p[v] = std::exp(z[v] - mx));
        for (int v = 0; v < V; v++) p[v] /= sum;
    }
}
// log softmax(z)[v] = z_v − max − log Σ exp(z − max), one row
template <class R> R log_sum_exp(const R* z, int V) {
    R mx = *std::max_element(z, z + V), sum = 0;
    for (int v = 0; v < V; v++) sum += std::exp(z[v] - mx);
    return mx + std::log(sum);
}

// [D0]: L_CE = −(1/N) Σ_t log softmax(z_t)[y_t]. Also fills probs (needed by the backward).
template <class R>
double cross_entropy_forward(R* probs, const R* logits, const int* targets, int N, int V) {
    softmax_rows(probs, logits, N, V);
    double loss = 0;
    for (int t = 0; t < N; t++) {
        const R* z = logits + size_t(t) * V;
        loss -= double(z[targets[t]] - log_sum_exp(z, V));  // [D0] L_CE
    }
    return loss / N;
}
// ∂L_CE/∂z_t = (softmax(z_t) − onehot(y_t)) · scale, scale = 1/N (÷ micro-batches when accumulating).
template <class R>
void cross_entropy_backward(R* dlogits, const R* probs, const int* targets, int N, int V, R scale) {
    for (int t = 0; t < N; t++)
        for (int v = 0; v < V; v++)
            dlogits[size_t(t) * V + v] += (probs[size_t(t) * V + v] - R(v == targets[t])) * scale;
}

// [D1]: L_AD = −(1/N) Σ_t Σ_v p^T_t(v) log softmax(z^S_t)(v),  p^T = softmax(z^T) (temperature 1).
// Fills probs_s = softmax(z^S) and probs_t = p^T for the backward.
template <class R>
double distill_forward(R* probs_s, R* probs_t, const R* logits_s, const R* logits_t, int N, int V) {
    softmax_rows(probs_s, logits_s, N, V);
    softmax_rows(probs_t, logits_t, N, V);
    double loss = 0;
    for (int t = 0; t < N; t++) {
        const R* z = logits_s + size_t(t) * V;
        R lse = log_sum_exp(z, V);
        for (int v = 0; v < V; v++) loss -= double(probs_t[size_t(t) * V + v] * (z[v] - lse));  // [D1]
    }
    return loss / N;
}
// [D1]: ∂L_AD/∂z^S_t = (softmax(z^S_t) − p^T_t) · scale.
template <class R>
void distill_backward(R* dlogits, const R* probs_s, const R* probs_t, int N, int V, R scale) {
    for (size_t i = 0; i < size_t(N) * V; i++) dlogits[i] += (probs_s[i] - probs_t[i]) * scale;
}
// <<< copy-paste ad_loss

// [D3] deviation-aware distillation (DAD, DB-LLM) — an UNCONFIRMED reading: a distillation loss in which
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
// To plug in another, compute w yourself and call distill_weighted_forward/backward.
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

enum class Loss : int { CE = 0, AD = 1, Mix = 2, DAD = 3 };  // Mix = 0.5 L_CE + 0.5 L_AD (the official code's 2nd mode)

inline const char* loss_name(Loss l) {
    return l == Loss::CE ? "ce" : l == Loss::AD ? "ad" : l == Loss::Mix ? "mix" : "dad";
}
inline Loss loss_from_name(const std::string& s) {
    for (Loss l : {Loss::CE, Loss::AD, Loss::Mix, Loss::DAD})
        if (s == loss_name(l)) return l;
    throw std::invalid_argument("unknown loss '" + s + "' (expected ce, ad, mix or dad)");
}

// One place that evaluates the chosen loss and adds its gradient (× grad_scale, e.g. 1/micro-batches) into
// dlogits. logits_t is the frozen teacher's (unused for CE). probs_s/probs_t are N×V scratch. `dad` picks the
// position weights of Loss::DAD.
template <class R>
double loss_forward_backward(Loss kind, R* dlogits, R* probs_s, R* probs_t, const R* logits_s, const R* logits_t,
                             const int* targets, int N, int V, double grad_scale,
                             DadWeight dad = DadWeight::Entropy) {
    R scale = R(grad_scale / N);
    if (kind == Loss::DAD) {  // [D3]: weights from this step's probabilities, then the weighted loss
        softmax_rows(probs_s, logits_s, N, V);
        softmax_rows(probs_t, logits_t, N, V);
        std::vector<R> w(N);
        dad_weights(dad, w.data(), probs_t, probs_s, N, V);
        double l = distill_weighted_value(probs_t, logits_s, w.data(), N, V);
        distill_weighted_backward(dlogits, probs_s, probs_t, w.data(), N, V, R(grad_scale));
        return l;
    }
    if (kind == Loss::CE) {
        double l = cross_entropy_forward(probs_s, logits_s, targets, N, V);
        cross_entropy_backward(dlogits, probs_s, targets, N, V, scale);
        return l;
    }
    double ad = distill_forward(probs_s, probs_t, logits_s, logits_t, N, V);
    if (kind == Loss::AD) {
        distill_backward(dlogits, probs_s, probs_t, N, V, scale);
        return ad;
    }
    double ce = cross_entropy_forward(probs_s, logits_s, targets, N, V);  // [D2] mixed: 0.5 CE + 0.5 AD
    cross_entropy_backward(dlogits, probs_s, targets, N, V, R(0.5) * scale);
    distill_backward(dlogits, probs_s, probs_t, N, V, R(0.5) * scale);
    return 0.5 * ce + 0.5 * ad;
}

// =====================================================================================================
// §5 MODEL ([M1]): embedding → L × [x + Attn(RMSNorm(x)); h + MLP(RMSNorm(h))] → RMSNorm → LM head.
// All parameters live in ONE flat buffer (`params`), all gradients in another of the same layout (`grads`);
// a TensorInfo says where each named tensor starts. AdamW is then one flat loop (§6).
// =====================================================================================================

struct TensorInfo {
    std::string name;
    size_t offset = 0;
    int rows = 0, cols = 0;  // a vector has rows = 1
    bool is_matrix = false;  // 2-D weight (gets weight decay under DecayOn::Matrices)
    size_t size() const { return size_t(rows) * cols; }
};

// The 7 linears of a block, in forward order.
enum LinearId { WQ = 0, WK, WV, WO, WGATE, WUP, WDOWN, N_LINEAR };
inline const char* linear_name(int id) {
    static const char* names[N_LINEAR] = {"wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down"};
    return names[id];
}

struct LinearRef {
    int W = -1, alpha = -1, beta = -1;  // tensor indices; alpha, beta: FBI's α, β per input column ([F2])
                                        // or DB's α1, α2 per output row ([Q5]); −1 for FP and b1.58
    int m = 0, n = 0;                   // out, in
    size_t eff = 0;                     // offset of Ŵ in ModelT::w_eff
};
struct BlockRef {
    int attn_norm = -1, mlp_norm = -1;
    std::array<LinearRef, N_LINEAR> lin;
};

// Saved activations of one block for rows N = B·T.
template <class R> struct BlockActs {
    std::vector<R> rstd1, ln1, q, k, v, att, atty, h, rstd2, ln2, gate, up, sig, act;
    std::vector<R> ln1q, attyq, ln2q, actq;  // b1.58 only: the int8-dequantized inputs of the linears ([Q2])
};
template <class R> struct Activations {
    int B = 0, T = 0;
    std::vector<std::vector<R>> resid;  // L+1 residual streams, N×C: resid[l] enters block l
    std::vector<BlockActs<R>> blocks;
    std::vector<R> lnf, rstdf, logits;   // final norm and logits (N×V)
    std::vector<R> probs, probs_teacher;  // softmaxes for the loss (N×V)
    // gradient scratch (reused by every block)
    std::vector<R> dresid, dln, dq, dk, dv, datty, dact, dgate, dup, dlogits;
};

template <class R> struct ModelT {
    Config cfg;
    std::vector<TensorInfo> tensors;
    std::vector<R> params, grads;
    int tok_emb = -1, final_norm = -1, lm_head = -1;
    std::vector<BlockRef> blocks;
    std::vector<R> w_eff, dw_eff;      // Ŵ of every block linear (made by §3), and ∂L/∂Ŵ
    std::vector<R> rope_cos, rope_sin;  // T × hs/2
    Activations<R> acts;

    R* p(int t) { return params.data() + tensors[t].offset; }
    const R* p(int t) const { return params.data() + tensors[t].offset; }
    R* g(int t) { return grads.data() + tensors[t].offset; }
    const R* p_or_null(int t) const { return t < 0 ? nullptr : p(t); }
    R* p_or_null(int t) { return t < 0 ? nullptr : p(t); }
    R* g_or_null(int t) { return t < 0 ? nullptr : g(t); }
    int find(const std::string& name) const {
        for (size_t i = 0; i < tensors.size(); i++)
            if (tensors[i].name == name) return int(i);
        return -1;
    }
};
using Model = ModelT<float>;

// Lay out every tensor in the flat buffer. Order = the order a student meets them in the forward pass.
template <class R>
void layout_model(ModelT<R>& model, const Config& cfg) {
    check_config(cfg);
    model.cfg = cfg;
    model.tensors.clear();
    model.blocks.assign(cfg.L, BlockRef{});
    size_t offset = 0, eff = 0;
    auto add = [&](const std::string& name, int rows, int cols, bool is_matrix) {
        model.tensors.push_back({name, offset, rows, cols, is_matrix});
        offset += size_t(rows) * cols;
        return int(model.tensors.size() - 1);
    };
    model.tok_emb = add("tok_emb", cfg.V, cfg.C, true);
    const int out_dim[N_LINEAR] = {cfg.C, cfg.C, cfg.C, cfg.C, cfg.F, cfg.F, cfg.C};
    const int in_dim[N_LINEAR] = {cfg.C, cfg.C, cfg.C, cfg.C, cfg.C, cfg.C, cfg.F};
    for (int l = 0; l < cfg.L; l++) {
        std::string pre = "block" + std::to_string(l) + ".";
        BlockRef& blk = model.blocks[l];
        blk.attn_norm = add(pre + "attn_norm", 1, cfg.C, false);
        for (int id = 0; id < N_LINEAR; id++) {
            if (id == WGATE) blk.mlp_norm = add(pre + "mlp_norm", 1, cfg.C, false);
            LinearRef& lin = blk.lin[id];
            lin.m = out_dim[id];
            lin.n = in_dim[id];
            lin.W = add(pre + linear_name(id), lin.m, lin.n, true);
            if (cfg.quant == Quant::FBI) {  // [F2]: α, β ∈ R^n, one per input column
                lin.alpha = add(pre + linear_name(id) + ".alpha", 1, lin.n, false);
                lin.beta = add(pre + linear_name(id) + ".beta", 1, lin.n, false);
            }
            if (cfg.quant == Quant::DB) {  // [Q5]: α1, α2 ∈ R^m, one per output row
                lin.alpha = add(pre + linear_name(id) + ".alpha1", 1, lin.m, false);
                lin.beta = add(pre + linear_name(id) + ".alpha2", 1, lin.m, false);
            }
            lin.eff = eff;
            eff += size_t(lin.m) * lin.n;
        }
    }
    model.final_norm = add("final_norm", 1, cfg.C, false);
    model.lm_head = add("lm_head", cfg.V, cfg.C, true);
    model.params.assign(offset, R(0));
    model.grads.assign(offset, R(0));
    model.w_eff.assign(eff, R(0));
    model.dw_eff.assign(eff, R(0));
    rope_tables(model.rope_cos, model.rope_sin, cfg.T, cfg.C / cfg.NH);
    model.acts = Activations<R>{};
}

// [M0] init: every matrix N(0, 0.02²), norm gains 1; the quantizer's scales from the latent W just drawn
// ([F4] for FBI's α, β; [Q4] for DB's α1, α2).
template <class R>
ModelT<R> build_model(const Config& cfg, uint64_t seed) {
    ModelT<R> model;
    layout_model(model, cfg);
    Rng rng(seed);
    for (const TensorInfo& t : model.tensors) {
        R* x = model.params.data() + t.offset;
        if (t.is_matrix)
            for (size_t i = 0; i < t.size(); i++) x[i] = R(0.02 * rng.normal());
        else
            std::fill(x, x + t.size(), R(1));  // norm gains (α, β are set just below)
    }
    for (BlockRef& blk : model.blocks)
        for (LinearRef& lin : blk.lin)
            quantize_init(cfg.quant, model.p_or_null(lin.alpha), model.p_or_null(lin.beta), model.p(lin.W), lin.m, lin.n);
    return model;
}

// Copy every parameter that two models share by name (used to start a student from the teacher's weights);
// the quantizer's scales are then re-initialised from the copied latent W ([F4], [Q4]). Returns the number copied.
template <class R>
int copy_shared_params(ModelT<R>& dst, const ModelT<R>& src) {
    int copied = 0;
    for (const TensorInfo& t : dst.tensors) {
        int s = src.find(t.name);
        if (s < 0 || src.tensors[s].rows != t.rows || src.tensors[s].cols != t.cols) continue;
        std::copy(src.p(s), src.p(s) + t.size(), dst.params.data() + t.offset);
        copied++;
    }
    for (BlockRef& blk : dst.blocks)
        for (LinearRef& lin : blk.lin)
            quantize_init(dst.cfg.quant, dst.p_or_null(lin.alpha), dst.p_or_null(lin.beta), dst.p(lin.W), lin.m, lin.n);
    return copied;
}

template <class R>
void ensure_activations(ModelT<R>& model, int B, int T) {
    Activations<R>& a = model.acts;
    if (a.B == B && a.T == T) return;
    const Config& c = model.cfg;
    size_t N = size_t(B) * T, NC = N * c.C, NF = N * c.F, NV = N * c.V;
    a.B = B;
    a.T = T;
    a.resid.assign(c.L + 1, std::vector<R>(NC));
    a.blocks.assign(c.L, BlockActs<R>{});
    for (BlockActs<R>& s : a.blocks) {
        s.rstd1.resize(N); s.rstd2.resize(N);
        for (auto* v : {&s.ln1, &s.q, &s.k, &s.v, &s.atty, &s.h, &s.ln2}) v->resize(NC);
        for (auto* v : {&s.gate, &s.up, &s.sig, &s.act}) v->resize(NF);
        s.att.resize(size_t(B) * c.NH * T * T);
        if (quantizes_activations(c.quant)) {
            for (auto* v : {&s.ln1q, &s.attyq, &s.ln2q}) v->resize(NC);
            s.actq.resize(NF);
        }
    }
    a.lnf.resize(NC); a.rstdf.resize(N);
    for (auto* v : {&a.logits, &a.probs, &a.probs_teacher, &a.dlogits}) v->resize(NV);
    for (auto* v : {&a.dresid, &a.dln, &a.dq, &a.dk, &a.dv, &a.datty}) v->resize(NC);
    for (auto* v : {&a.dact, &a.dgate, &a.dup}) v->resize(NF);
}

// Bad input must fail loudly before it indexes out of bounds.
template <class R>
void check_tokens(const ModelT<R>& model, const int* tokens, int B, int T) {
    if (B < 1 || T < 1) throw std::invalid_argument("fbi: batch and sequence length must be >= 1");
    if (T > model.cfg.T)
        throw std::out_of_range("fbi: sequence length " + std::to_string(T) + " exceeds the model's context T=" +
                                std::to_string(model.cfg.T));
    for (long i = 0; i < long(B) * T; i++)
        if (tokens[i] < 0 || tokens[i] >= model.cfg.V)
            throw std::out_of_range("fbi: token id " + std::to_string(tokens[i]) + " at position " + std::to_string(i) +
                                    " is outside the vocabulary [0, " + std::to_string(model.cfg.V) + ")");
}

// Make Ŵ for every block linear (§3). Called at the start of every forward.
template <class R>
void quantize_all(ModelT<R>& model) {
    for (BlockRef& blk : model.blocks)
        for (LinearRef& lin : blk.lin)
            quantize_forward(model.cfg.quant, model.w_eff.data() + lin.eff, model.p(lin.W), model.p_or_null(lin.alpha),
                             model.p_or_null(lin.beta), lin.m, lin.n);
}

template <class R>
const R* weight_of(const ModelT<R>& model, const LinearRef& lin) { return model.w_eff.data() + lin.eff; }

// What a block linear multiplies: its input x, or for b1.58 the int8-dequantized x̃ ([Q2]). The forward makes
// x̃ with quantize_input; the backward uses the same x̃ for ∂L/∂Ŵ = gᵀ x̃ and passes ∂L/∂x̃ to x unchanged
// (identity STE), so only this pointer differs from a full-precision linear.
template <class R>
const R* linear_input(const ModelT<R>& model, const std::vector<R>& x, const std::vector<R>& xq) {
    return quantizes_activations(model.cfg.quant) ? xq.data() : x.data();
}
template <class R>
const R* quantize_input(const ModelT<R>& model, const std::vector<R>& x, std::vector<R>& xq, int N, int n) {
    if (quantizes_activations(model.cfg.quant)) act_quant_rows(xq.data(), x.data(), N, n);  // [Q2]
    return linear_input(model, x, xq);
}

// One block, forward.  x (N×C) → out (N×C)
template <class R>
void block_forward(ModelT<R>& model, int l, R* out, const R* x) {
    const Config& c = model.cfg;
    Activations<R>& a = model.acts;
    BlockActs<R>& s = a.blocks[l];
    const BlockRef& blk = model.blocks[l];
    int B = a.B, T = a.T, N = B * T, C = c.C, F = c.F;
    auto W = [&](int id) { return weight_of(model, blk.lin[id]); };
    // h = x + Attn(RMSNorm(x))
    rmsnorm_forward(s.ln1.data(), s.rstd1.data(), x, model.p(blk.attn_norm), N, C);
    const R* ln1 = quantize_input(model, s.ln1, s.ln1q, N, C);
    matmul_forward(s.q.data(), ln1, W(WQ), N, C, C);
    matmul_forward(s.k.data(), ln1, W(WK), N, C, C);
    matmul_forward(s.v.data(), ln1, W(WV), N, C, C);
    rope_forward(s.q.data(), model.rope_cos.data(), model.rope_sin.data(), B, T, C, c.NH);
    rope_forward(s.k.data(), model.rope_cos.data(), model.rope_sin.data(), B, T, C, c.NH);
    attention_forward(s.atty.data(), s.att.data(), s.q.data(), s.k.data(), s.v.data(), B, T, C, c.NH);
    matmul_forward(s.h.data(), quantize_input(model, s.atty, s.attyq, N, C), W(WO), N, C, C);
    add_inplace(s.h.data(), x, size_t(N) * C);
    // out = h + MLP(RMSNorm(h)),  MLP(u) = down(silu(gate(u)) ⊙ up(u))
    rmsnorm_forward(s.ln2.data(), s.rstd2.data(), s.h.data(), model.p(blk.mlp_norm), N, C);
    const R* ln2 = quantize_input(model, s.ln2, s.ln2q, N, C);
    matmul_forward(s.gate.data(), ln2, W(WGATE), N, C, F);
    matmul_forward(s.up.data(), ln2, W(WUP), N, C, F);
    swiglu_forward(s.act.data(), s.sig.data(), s.gate.data(), s.up.data(), size_t(N) * F);
    matmul_forward(out, quantize_input(model, s.act, s.actq, N, F), W(WDOWN), N, F, C);
    add_inplace(out, s.h.data(), size_t(N) * C);
}

// The whole model, forward: tokens (B×T) → model.acts.logits (B×T×V).
template <class R>
void model_forward(ModelT<R>& model, const int* tokens, int B, int T) {
    check_tokens(model, tokens, B, T);
    ensure_activations(model, B, T);
    quantize_all(model);  // [F1]–[F2] (or Ŵ = W for full precision)
    Activations<R>& a = model.acts;
    const Config& c = model.cfg;
    int N = B * T;
    embedding_forward(a.resid[0].data(), tokens, model.p(model.tok_emb), N, c.C);
    for (int l = 0; l < c.L; l++) block_forward(model, l, a.resid[l + 1].data(), a.resid[l].data());
    rmsnorm_forward(a.lnf.data(), a.rstdf.data(), a.resid[c.L].data(), model.p(model.final_norm), N, c.C);
    matmul_forward(a.logits.data(), a.lnf.data(), model.p(model.lm_head), N, c.C, c.V);
}

// One block, backward, in mirror order of block_forward. On entry a.dresid holds ∂L/∂out; on exit ∂L/∂x.
template <class R>
void block_backward(ModelT<R>& model, int l, const R* x) {
    const Config& c = model.cfg;
    Activations<R>& a = model.acts;
    BlockActs<R>& s = a.blocks[l];
    const BlockRef& blk = model.blocks[l];
    int B = a.B, T = a.T, N = B * T, C = c.C, F = c.F;
    size_t NC = size_t(N) * C, NF = size_t(N) * F;
    auto W = [&](int id) { return weight_of(model, blk.lin[id]); };
    auto dW = [&](int id) { return model.dw_eff.data() + blk.lin[id].eff; };
    R* dres = a.dresid.data();
    // out = h + down(act): dh = dout (already in dres), dact = dout W_down
    zero(a.dact);
    matmul_backward(a.dact.data(), dW(WDOWN), dres, linear_input(model, s.act, s.actq), W(WDOWN), N, F, C);
    // act = silu(gate) ⊙ up
    zero(a.dgate);
    zero(a.dup);
    swiglu_backward(a.dgate.data(), a.dup.data(), a.dact.data(), s.sig.data(), s.gate.data(), s.up.data(), NF);
    // gate = ln2 W_gateᵀ, up = ln2 W_upᵀ
    zero(a.dln);
    const R* ln2 = linear_input(model, s.ln2, s.ln2q);
    matmul_backward(a.dln.data(), dW(WGATE), a.dgate.data(), ln2, W(WGATE), N, C, F);
    matmul_backward(a.dln.data(), dW(WUP), a.dup.data(), ln2, W(WUP), N, C, F);
    // ln2 = RMSNorm(h): dh += ...
    rmsnorm_backward(dres, model.g(blk.mlp_norm), a.dln.data(), s.h.data(), model.p(blk.mlp_norm), s.rstd2.data(), N, C);
    // h = x + atty W_oᵀ: dx = dh (stays in dres), datty = dh W_o
    zero(a.datty);
    matmul_backward(a.datty.data(), dW(WO), dres, linear_input(model, s.atty, s.attyq), W(WO), N, C, C);
    // atty = attention(q, k, v)
    zero(a.dq); zero(a.dk); zero(a.dv);
    attention_backward(a.dq.data(), a.dk.data(), a.dv.data(), a.datty.data(), s.att.data(), s.q.data(), s.k.data(),
                       s.v.data(), B, T, C, c.NH);
    // q, k were rotated after the projection: un-rotate their gradients
    rope_backward(a.dq.data(), model.rope_cos.data(), model.rope_sin.data(), B, T, C, c.NH);
    rope_backward(a.dk.data(), model.rope_cos.data(), model.rope_sin.data(), B, T, C, c.NH);
    // q, k, v = ln1 W_{q,k,v}ᵀ
    zero(a.dln);
    const R* ln1 = linear_input(model, s.ln1, s.ln1q);
    matmul_backward(a.dln.data(), dW(WQ), a.dq.data(), ln1, W(WQ), N, C, C);
    matmul_backward(a.dln.data(), dW(WK), a.dk.data(), ln1, W(WK), N, C, C);
    matmul_backward(a.dln.data(), dW(WV), a.dv.data(), ln1, W(WV), N, C, C);
    // ln1 = RMSNorm(x): dx += ...
    rmsnorm_backward(dres, model.g(blk.attn_norm), a.dln.data(), x, model.p(blk.attn_norm), s.rstd1.data(), N, C);
    (void)NC;
}

// The whole model, backward. Needs model_forward on the same tokens and ∂L/∂logits in model.acts.dlogits.
// Adds every parameter's gradient into model.grads (zero them first with zero_grad).
template <class R>
void model_backward(ModelT<R>& model, const int* tokens) {
    Activations<R>& a = model.acts;
    const Config& c = model.cfg;
    int N = a.B * a.T;
    zero(model.dw_eff);
    zero(a.dresid);
    zero(a.dln);
    // logits = lnf Hᵀ ; lnf = RMSNorm(resid[L])
    matmul_backward(a.dln.data(), model.g(model.lm_head), a.dlogits.data(), a.lnf.data(), model.p(model.lm_head), N, c.C, c.V);
    rmsnorm_backward(a.dresid.data(), model.g(model.final_norm), a.dln.data(), a.resid[c.L].data(),
                     model.p(model.final_norm), a.rstdf.data(), N, c.C);
    for (int l = c.L - 1; l >= 0; l--) block_backward(model, l, a.resid[l].data());
    embedding_backward(model.g(model.tok_emb), a.dresid.data(), tokens, N, c.C);
    // ∂L/∂Ŵ → ∂L/∂(W, scales): [F5] for FBI, [Q6] for DB, identity for full precision and b1.58 ([Q3])
    for (BlockRef& blk : model.blocks)
        for (LinearRef& lin : blk.lin)
            quantize_backward(c.quant, model.g(lin.W), model.g_or_null(lin.alpha), model.g_or_null(lin.beta),
                              model.dw_eff.data() + lin.eff, model.p(lin.W), model.p_or_null(lin.alpha),
                              model.p_or_null(lin.beta), lin.m, lin.n);
}

template <class R> void zero_grad(ModelT<R>& model) { zero(model.grads); }

// Latent weights of every quantized linear, for the flip-flop ratio ([F6]).
template <class R>
void latent_weights(const ModelT<R>& model, std::vector<const R*>& ptrs, std::vector<size_t>& sizes) {
    ptrs.clear();
    sizes.clear();
    for (const BlockRef& blk : model.blocks)
        for (const LinearRef& lin : blk.lin) {
            ptrs.push_back(model.p(lin.W));
            sizes.push_back(size_t(lin.m) * lin.n);
        }
}

// =====================================================================================================
// §6 OPTIMIZER ([O1]–[O3]): AdamW with decoupled weight decay, global grad-norm clipping, warm-up + cosine.
// =====================================================================================================

enum class DecayOn : int { Matrices = 0, All = 1 };  // FBI-LLM decays all parameters; Matrices is common

struct AdamW {
    double beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1;
    DecayOn decay_on = DecayOn::Matrices;
    std::vector<float> m, v;  // first and second moments, same layout as params (kept in fp32)
    long t = 0;               // number of updates done
};

// One AdamW update of every parameter. PyTorch's order: decay first (p -= lr·wd·p), then the Adam step.
template <class R>
void adamw_step(ModelT<R>& model, AdamW& opt, double lr) {
    size_t n = model.params.size();
    if (opt.m.size() != n) { opt.m.assign(n, 0.f); opt.v.assign(n, 0.f); opt.t = 0; }
    opt.t++;
    double bc1 = 1 - std::pow(opt.beta1, double(opt.t)), bc2 = 1 - std::pow(opt.beta2, double(opt.t));
    for (const TensorInfo& ti : model.tensors) {
        double wd = (opt.decay_on == DecayOn::All || ti.is_matrix) ? opt.weight_decay : 0.0;
        R* p = model.params.data() + ti.offset;
        const R* g = model.grads.data() + ti.offset;
        float* m = opt.m.data() + ti.offset;
        float* v = opt.v.data() + ti.offset;
#pragma omp parallel for schedule(static) if (long(ti.size()) >= kParallelMinWork)
        for (long i = 0; i < long(ti.size()); i++) {
            double gi = double(g[i]);
            m[i] = float(opt.beta1 * m[i] + (1 - opt.beta1) * gi);
            v[i] = float(opt.beta2 * v[i] + (1 - opt.beta2) * gi * gi);
            double m_hat = m[i] / bc1, v_hat = v[i] / bc2;
            double pi = double(p[i]) * (1 - lr * wd);                 // decoupled weight decay
            p[i] = R(pi - lr * m_hat / (std::sqrt(v_hat) + opt.eps));  // Adam step
        }
    }
}

// Global gradient-norm clipping: if ‖g‖₂ > max_norm, scale every gradient by max_norm/‖g‖₂.
// Returns the norm before clipping (logged; NaN/inf here means the step must not be taken).
template <class R>
double clip_grad_norm(std::vector<R>& grads, double max_norm) {
    double ss = 0;
    for (R g : grads) ss += double(g) * double(g);
    double norm = std::sqrt(ss);
    if (max_norm > 0 && norm > max_norm && std::isfinite(norm)) {
        R k = R(max_norm / norm);
        for (R& g : grads) g *= k;
    }
    return norm;
}

struct Schedule {
    double peak = 1e-3, floor = 1e-4;
    int warmup = 100, total = 2000;
};

// [O3]: lr(s) = peak·s/S_w for s < S_w; floor + ½(1 + cos(π (s−S_w)/(S_tot−S_w)))·(peak − floor) up to
// S_tot; then floor. Here s counts updates from 1 (the first update uses peak/S_w, not 0).
inline double lr_schedule(const Schedule& sc, long s) {
    if (s < sc.warmup) return sc.peak * double(s) / sc.warmup;
    if (s >= sc.total) return sc.floor;
    double progress = double(s - sc.warmup) / double(std::max(1, sc.total - sc.warmup));
    return sc.floor + 0.5 * (1 + std::cos(3.141592653589793 * progress)) * (sc.peak - sc.floor);
}

// =====================================================================================================
// §7 TRAINING: deterministic batches, one optimizer step (with the teacher for distillation), evaluation.
// =====================================================================================================

// Training windows go through the data in EPOCHS (sampling without replacement). Epoch e starts its windows at a
// random offset, cuts the tokens into K windows of T+1 tokens one T apart and visits them in a random order, so
// that every token is a target once per epoch (independent random starts would leave about e^-1.5 ≈ 22% of the
// tokens unseen in the tiny run's 1.5 epochs). Window i of a run is a pure function of (seed, i), so resuming
// at step k sees exactly the batches the uninterrupted run would have seen.
struct EpochWindows {
    size_t n = 0;             // tokens
    int T = 0;
    uint64_t seed = 0;
    uint64_t span = 0;        // valid window starts are [0, span): span = n − T, so that y's last token exists
    long K = 0;               // windows per epoch
    long epoch = -1;          // the epoch that `offset` and `order` belong to
    uint64_t offset = 0;
    std::vector<long> order;  // a permutation of 0..K−1

    EpochWindows() = default;
    EpochWindows(size_t n_, int T_, uint64_t seed_)
        : n(n_), T(T_), seed(seed_), span(n_ - size_t(T_)), K(std::max<long>(1, long(span / uint64_t(T_)))) {}
    size_t start(long i) {
        const long e = i / K;
        if (e != epoch) {  // a new epoch: draw its offset, then shuffle its windows (Fisher–Yates)
            Rng rng(seed * 0x2545F4914F6CDD1Dull ^ uint64_t(e + 1) * 0x9E3779B97F4A7C15ull);
            offset = rng.below(span - uint64_t(K - 1) * uint64_t(T));  // the last window still fits
            order.resize(size_t(K));
            for (long k = 0; k < K; k++) order[size_t(k)] = k;
            for (long k = K - 1; k > 0; k--) std::swap(order[size_t(k)], order[size_t(rng.below(uint64_t(k) + 1))]);
            epoch = e;
        }
        return size_t(offset + uint64_t(order[size_t(i % K)]) * uint64_t(T));
    }
};

// Batch `step`: windows step·B … step·B + B − 1 of the run.
inline void get_batch(std::vector<int>& x, std::vector<int>& y, const std::vector<int>& data, int B, int T,
                      uint64_t seed, long step) {
    if (data.size() < size_t(T) + 1)
        throw std::invalid_argument("fbi::get_batch: " + std::to_string(data.size()) +
                                    " tokens is shorter than one window of T+1 = " + std::to_string(T + 1));
    // The current epoch's order is kept between calls (one per thread). It depends on (n, T, seed) only, so
    // keeping it never changes a batch; it only makes the shuffle run once per epoch instead of once per step.
    thread_local EpochWindows windows;
    if (windows.n != data.size() || windows.T != T || windows.seed != seed) windows = EpochWindows(data.size(), T, seed);
    x.resize(size_t(B) * T);
    y.resize(size_t(B) * T);
    for (int b = 0; b < B; b++) {
        size_t s = windows.start(step * B + b);
        for (int t = 0; t < T; t++) {
            x[size_t(b) * T + t] = data[s + t];
            y[size_t(b) * T + t] = data[s + t + 1];
        }
    }
}

struct TrainOptions {
    int B = 12, T = 64;
    Loss loss = Loss::CE;
    DadWeight dad = DadWeight::Entropy;  // position weights when loss = DAD ([D3])
    Schedule schedule;
    double clip = 1.0;
    int micro_batches = 1;  // gradient accumulation: each micro-batch's loss is divided by this ([D2])
    uint64_t seed = 1337;
};

struct StepStats {
    double loss = 0, grad_norm = 0, lr = 0, flip_ratio = 0;
};

// Training hits NaN/inf: thrown BEFORE the update, so the parameters still hold the last good values.
struct NonFiniteError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// One optimizer step: forward (and the teacher's forward for AD/Mix), loss, backward, clip, AdamW, flips.
// `step` is 0-based; the update it makes is number step+1 of the schedule.
template <class R>
StepStats train_step(ModelT<R>& model, ModelT<R>* teacher, AdamW& opt, FlipCounter& flips,
                     const std::vector<int>& data, const TrainOptions& o, long step) {
    if (o.loss != Loss::CE && !teacher) throw std::invalid_argument("fbi::train_step: AD/Mix/DAD losses need a teacher");
    StepStats st;
    std::vector<int> x, y;
    zero_grad(model);
    int N = o.B * o.T;
    for (int micro = 0; micro < o.micro_batches; micro++) {
        get_batch(x, y, data, o.B, o.T, o.seed, step * o.micro_batches + micro);
        model_forward(model, x.data(), o.B, o.T);
        const R* logits_t = nullptr;
        if (teacher) {
            model_forward(*teacher, x.data(), o.B, o.T);  // frozen: forward only, no gradient
            logits_t = teacher->acts.logits.data();
        }
        Activations<R>& a = model.acts;
        zero(a.dlogits);
        st.loss += loss_forward_backward(o.loss, a.dlogits.data(), a.probs.data(), a.probs_teacher.data(),
                                         a.logits.data(), logits_t, y.data(), N, model.cfg.V, 1.0 / o.micro_batches, o.dad) /
                   o.micro_batches;
        model_backward(model, x.data());
    }
    st.grad_norm = clip_grad_norm(model.grads, o.clip);
    if (!std::isfinite(st.loss) || !std::isfinite(st.grad_norm))
        throw NonFiniteError("fbi: non-finite " + std::string(std::isfinite(st.loss) ? "gradient norm" : "loss") +
                             " at step " + std::to_string(step + 1) + " (loss " + std::to_string(st.loss) +
                             ", grad norm " + std::to_string(st.grad_norm) +
                             "); the update was not applied. Try a lower learning rate.");
    st.lr = lr_schedule(o.schedule, step + 1);
    adamw_step(model, opt, st.lr);
    std::vector<const R*> ptrs;
    std::vector<size_t> sizes;
    latent_weights(model, ptrs, sizes);
    st.flip_ratio = flips.update(ptrs, sizes);  // [F6]
    return st;
}

// Mean cross-entropy over a fixed set of windows: non-overlapping windows of T+1 tokens from the start of
// `data`, at most `max_windows` of them (0 = all), evenly spread. Deterministic: same windows every call.
template <class R>
double evaluate(ModelT<R>& model, const std::vector<int>& data, int B, int T, long max_windows = 0) {
    long total = data.size() > size_t(T) ? long((data.size() - 1) / T) : 0;
    if (total == 0) throw std::invalid_argument("fbi::evaluate: data shorter than one window");
    long count = (max_windows > 0 && max_windows < total) ? max_windows : total;
    std::vector<int> x, y;
    double sum = 0;
    long positions = 0;
    for (long w0 = 0; w0 < count; w0 += B) {
        int b_now = int(std::min<long>(B, count - w0));
        x.resize(size_t(b_now) * T);
        y.resize(size_t(b_now) * T);
        for (int b = 0; b < b_now; b++) {
            size_t start = size_t((w0 + b) * total / count) * T;
            for (int t = 0; t < T; t++) {
                x[size_t(b) * T + t] = data[start + t];
                y[size_t(b) * T + t] = data[start + t + 1];
            }
        }
        model_forward(model, x.data(), b_now, T);
        Activations<R>& a = model.acts;
        sum += cross_entropy_forward(a.probs.data(), a.logits.data(), y.data(), b_now * T, model.cfg.V) * b_now * T;
        positions += long(b_now) * T;
    }
    return sum / positions;
}

// =====================================================================================================
// §8 INFERENCE: one token at a time with a KV cache (GEMV-shaped work), and sampling.
// The linears are behind a callable `linear(l, id, x, y)` (y = Ŵ x for block l, linear id), so the same
// decoder runs the float model here and, later, the bit-packed model.
// =====================================================================================================

struct KVCache {
    int L = 0, T = 0, C = 0, pos = 0;  // pos = number of positions already cached
    std::vector<float> k, v;           // L × T × C
    void reset(int L_, int T_, int C_) {
        L = L_; T = T_; C = C_; pos = 0;
        k.assign(size_t(L) * T * C, 0.f);
        v.assign(size_t(L) * T * C, 0.f);
    }
};

// y = W x for one row-major m×n matrix: Eigen's GEMV, with the rows split over the threads for large matrices
// (Eigen's GEMV itself is single-threaded), so that the fp32 decoder gets the same threads as the packed kernels.
inline void matvec(float* y, const float* W, const float* x, int m, int n) {
    Eigen::Map<const Eigen::VectorXf> xv(x, n);
    for_row_blocks(m, long(m) * n, [&](int r0, int r1) {
        Eigen::Map<Eigen::VectorXf>(y + r0, r1 - r0).noalias() = ConstMapMat<float>(W + size_t(r0) * n, r1 - r0, n) * xv;
    });
}

// The full-precision pieces a decoder needs, and per-token scratch.
struct DecodeView {
    Config cfg;
    const float* tok_emb = nullptr;     // V×C
    const float* final_norm = nullptr;  // C
    const float* lm_head = nullptr;     // V×C
    std::vector<const float*> attn_norm, mlp_norm;  // L × (C)
};
struct DecodeScratch {
    std::vector<float> x, ln, q, k, v, atty, tmp, gate, up, sig, scores;
    void resize(const Config& c) {
        for (auto* b : {&x, &ln, &q, &k, &v, &atty, &tmp}) b->assign(c.C, 0.f);
        gate.assign(c.F, 0.f);
        up.assign(c.F, 0.f);
        sig.assign(c.F, 0.f);
        scores.assign(c.T, 0.f);
    }
};

inline DecodeView decode_view(const Model& model) {
    DecodeView d;
    d.cfg = model.cfg;
    d.tok_emb = model.p(model.tok_emb);
    d.final_norm = model.p(model.final_norm);
    d.lm_head = model.p(model.lm_head);
    for (const BlockRef& blk : model.blocks) {
        d.attn_norm.push_back(model.p(blk.attn_norm));
        d.mlp_norm.push_back(model.p(blk.mlp_norm));
    }
    return d;
}

// Feed token at position cache.pos; write logits (V). The same maths as block_forward with B = T = 1.
template <class LinearFn>
void decode_step(const DecodeView& d, LinearFn&& linear, KVCache& cache, DecodeScratch& s, int token,
                 float* logits, const float* rope_cos, const float* rope_sin) {
    const Config& c = d.cfg;
    int pos = cache.pos, C = c.C, hs = C / c.NH;
    if (token < 0 || token >= c.V)
        throw std::out_of_range("fbi::decode_step: token id " + std::to_string(token) + " outside [0, " +
                                std::to_string(c.V) + ")");
    if (pos >= c.T) throw std::out_of_range("fbi::decode_step: KV cache full (context T=" + std::to_string(c.T) + ")");
    float rstd;
    std::copy(d.tok_emb + size_t(token) * C, d.tok_emb + size_t(token + 1) * C, s.x.begin());
    for (int l = 0; l < c.L; l++) {
        float* kc = cache.k.data() + (size_t(l) * c.T) * C;
        float* vc = cache.v.data() + (size_t(l) * c.T) * C;
        rmsnorm_forward(s.ln.data(), &rstd, s.x.data(), d.attn_norm[l], 1, C);
        linear(l, WQ, s.ln.data(), s.q.data());
        linear(l, WK, s.ln.data(), kc + size_t(pos) * C);
        linear(l, WV, s.ln.data(), vc + size_t(pos) * C);
        rope_forward(s.q.data(), rope_cos, rope_sin, 1, 1, C, c.NH, pos);
        rope_forward(kc + size_t(pos) * C, rope_cos, rope_sin, 1, 1, C, c.NH, pos);
        float scale = 1.f / std::sqrt(float(hs));
        for (int h = 0; h < c.NH; h++) {  // attend to positions 0..pos
            const float* qh = s.q.data() + h * hs;
            float mx = -std::numeric_limits<float>::infinity(), sum = 0;
            for (int j = 0; j <= pos; j++) {
                const float* kh = kc + size_t(j) * C + h * hs;
                float dot = 0;
                for (int i = 0; i < hs; i++) dot += qh[i] * kh[i];
                s.scores[j] = dot * scale;
                mx = std::max(mx, s.scores[j]);
            }
            for (int j = 0; j <= pos; j++) sum += (s.scores[j] = std::exp(s.scores[j] - mx));
            float* out = s.atty.data() + h * hs;
            std::fill(out, out + hs, 0.f);
            for (int j = 0; j <= pos; j++) {
                const float* vh = vc + size_t(j) * C + h * hs;
                for (int i = 0; i < hs; i++) out[i] += s.scores[j] / sum * vh[i];
            }
        }
        linear(l, WO, s.atty.data(), s.tmp.data());
        add_inplace(s.x.data(), s.tmp.data(), C);
        rmsnorm_forward(s.ln.data(), &rstd, s.x.data(), d.mlp_norm[l], 1, C);
        linear(l, WGATE, s.ln.data(), s.gate.data());
        linear(l, WUP, s.ln.data(), s.up.data());
        swiglu_forward(s.gate.data(), s.sig.data(), s.gate.data(), s.up.data(), size_t(c.F));
        linear(l, WDOWN, s.gate.data(), s.tmp.data());
        add_inplace(s.x.data(), s.tmp.data(), C);
    }
    rmsnorm_forward(s.ln.data(), &rstd, s.x.data(), d.final_norm, 1, C);
    matvec(logits, d.lm_head, s.ln.data(), c.V, C);  // logits = H · ln: a packed model's largest fp32 read
    cache.pos++;
}

// y = Ŵ x with the float model's effective weights (call quantize_all(model) once before decoding). For b1.58
// the input is int8-dequantized first, exactly as in block_forward ([Q2]).
struct FloatLinear {
    const Model* model;
    mutable std::vector<float> xq;
    explicit FloatLinear(const Model* m) : model(m) {}
    void operator()(int l, int id, const float* x, float* y) const {
        const LinearRef& lin = model->blocks[l].lin[id];
        if (quantizes_activations(model->cfg.quant)) {
            xq.resize(lin.n);
            act_quant_rows(xq.data(), x, 1, lin.n);  // [Q2]
            x = xq.data();
        }
        matvec(y, weight_of(*model, lin), x, lin.m, lin.n);
    }
};

// Sample from softmax(logits / temperature); temperature <= 0 means greedy (argmax).
inline int sample_token(const float* logits, int V, double temperature, Rng& rng) {
    if (temperature <= 0) return int(std::max_element(logits, logits + V) - logits);
    double mx = *std::max_element(logits, logits + V), sum = 0;
    std::vector<double> p(V);
    for (int v = 0; v < V; v++) sum += (p[v] = std::exp((logits[v] - mx) / temperature));
    double r = rng.uniform() * sum;
    for (int v = 0; v < V; v++)
        if ((r -= p[v]) < 0) return v;
    return V - 1;
}

// Generate `n_new` tokens after `prompt`. When the context fills up, the cache is rebuilt from the last T/2
// tokens (a sliding window), so generation can run past T.
template <class LinearFn>
std::vector<int> generate(const DecodeView& d, LinearFn&& linear, const float* rope_cos, const float* rope_sin,
                          const std::vector<int>& prompt, int n_new, double temperature, uint64_t seed) {
    const Config& c = d.cfg;
    if (prompt.empty()) throw std::invalid_argument("fbi::generate: empty prompt (give at least one token)");
    if (int(prompt.size()) > c.T)
        throw std::out_of_range("fbi::generate: prompt of " + std::to_string(prompt.size()) +
                                " tokens is longer than the context T=" + std::to_string(c.T));
    KVCache cache;
    cache.reset(c.L, c.T, c.C);
    DecodeScratch s;
    s.resize(c);
    std::vector<float> logits(c.V);
    std::vector<int> out = prompt;
    Rng rng(seed);
    for (int tok : prompt) decode_step(d, linear, cache, s, tok, logits.data(), rope_cos, rope_sin);
    for (int i = 0; i < n_new; i++) {
        int next = sample_token(logits.data(), c.V, temperature, rng);
        out.push_back(next);
        if (cache.pos == c.T) {  // slide: re-encode the most recent T/2 tokens
            cache.reset(c.L, c.T, c.C);
            for (size_t j = out.size() - 1 - c.T / 2; j + 1 < out.size(); j++)
                decode_step(d, linear, cache, s, out[j], logits.data(), rope_cos, rope_sin);
        }
        decode_step(d, linear, cache, s, next, logits.data(), rope_cos, rope_sin);
    }
    return out;
}

// Convenience for the float model.
inline std::vector<int> generate(Model& model, const std::vector<int>& prompt, int n_new, double temperature,
                                 uint64_t seed) {
    quantize_all(model);
    return generate(decode_view(model), FloatLinear{&model}, model.rope_cos.data(), model.rope_sin.data(), prompt,
                    n_new, temperature, seed);
}

// =====================================================================================================
// §9 PACKED 1-BIT INFERENCE ([S7], [P1]): bit-packed sign weights, int8 activations, popcount kernels.
// =====================================================================================================
//
// The problem: one token at generation time needs y = W_b · q, where
//   W_b ∈ {−1,+1}^{rows×cols}  (rows = out features m, cols = in features n, PyTorch [out, in] layout),
//   q   ∈ int8^{cols}           (the token's activations u_j = α_j x_j quantized per token, [Q2], [P1]),
//   y   ∈ int32^{rows}          (exact integer result; dequantise later with one multiply by 1/s).
//
// The kernels here, both returning the same int32 bits (the tests check this):
//   gemv_reference      float ±1 matrix × int8 vector, the obvious loop             — the definition
//   gemv_popcount       8 activation bit planes, AND + popcount per 64 columns     — the one to study
// The fast ones are a plug-in (below, FastKernel): examples/kernels/fast_kernels.hpp holds the same identity
// with AVX2 and the table-lookup kernel ([S6]). How fast each one is, against Eigen's fp32 GEMV on the same
// machine: `make bench` measures it (examples/bench/bench_gemv.cpp; the README's tables come from its CSV).
//
// Per-token work that a real decoder pays before the kernel: quantize_int8_absmax, then make_act_planes
// (or the fast kernel's prepare_acts). The benchmark times them together.

// A second thread only pays above about a million weights (bench_gemv.cpp measures it):
// below that, waking the OpenMP team costs more than the work it shares.
constexpr long kParallelMinWeights = 1L << 20;

// ----------------------------------------------------------------------------------------------------------------
// Packed sign matrix
// ----------------------------------------------------------------------------------------------------------------

// >>> copy-paste popcount (needs: <cassert> <cstddef> <cstdint> <vector>; kParallelMinWeights)   pack, [S7] GEMV
// [S7]: each row of W_b packed into 64-bit words along the input dimension, bit = 1 for +1.
// Row-major: row i occupies bits[i*words .. i*words + words-1]; column j is bit (j % 64) of word (j / 64).
// [F1]: sign(w) = +1 for w > 0 and −1 otherwise, so w == 0 (and −0) packs as bit 0 = −1.
//   (torch.sign maps 0 to 0; a 1-bit format cannot hold 0, hence the difference.)
// Padding: the unused high bits of each row's last word (columns cols .. words*64−1) are always 0.
// The kernels rely on this: a 0 bit never contributes to popcount(W & anything).
struct PackedSigns {
    int rows = 0, cols = 0, words = 0;  // words = (cols + 63) / 64 per row
    std::vector<uint64_t> bits;         // rows × words
};

inline int words_for(int cols) { return (cols + 63) / 64; }

// Any rows × cols bit mask, bit (i, j) = bit(i, j), in the layout above.
template <class BitFn>
PackedSigns pack_bits(int rows, int cols, BitFn&& bit) {
    PackedSigns P;
    P.rows = rows;
    P.cols = cols;
    P.words = words_for(cols);
    P.bits.assign((size_t)rows * P.words, 0);  // zero-filled: padding bits stay 0
    for (int i = 0; i < rows; i++) {
        uint64_t* row = &P.bits[(size_t)i * P.words];
        for (int j = 0; j < cols; j++)
            if (bit(i, j)) row[j / 64] |= uint64_t(1) << (j % 64);
    }
    return P;
}
// [F1] + [S7]: W (rows × cols, row-major floats, the latent weights) → packed sign bits.
inline PackedSigns pack_signs(const float* W, int rows, int cols) {
    // [F1]: sign(0) = −1 → bit 0
    return pack_bits(rows, cols, [&](int i, int j) { return W[(size_t)i * cols + j] > 0.0f; });
}

// The ±1 value stored for W_b[i][j].
inline float unpacked_sign(const PackedSigns& P, int i, int j) {
    uint64_t word = P.bits[(size_t)i * P.words + j / 64];
    return ((word >> (j % 64)) & 1) ? 1.0f : -1.0f;
}

// ----------------------------------------------------------------------------------------------------------------
// Activation quantizer
// ----------------------------------------------------------------------------------------------------------------

// quantize_int8_absmax ([Q2]) lives in §3: BitNet b1.58 training uses the same quantizer.

// ----------------------------------------------------------------------------------------------------------------
// The plain reference kernel (the definition every other kernel is tested against)
// ----------------------------------------------------------------------------------------------------------------

// [S7]: y_i = Σ_j W_b,ij · q_j with W_b given as ±1 floats (rows × cols, row-major), exact in int32.
inline void gemv_reference(const float* Wsign, int rows, int cols, const int8_t* q, int32_t* y) {
    for (int i = 0; i < rows; i++) {
        int32_t sum = 0;
        for (int j = 0; j < cols; j++)
            sum += (Wsign[(size_t)i * cols + j] > 0.0f) ? q[j] : -q[j];  // ±1 · q_j, no float rounding
        y[i] = sum;
    }
}

// ----------------------------------------------------------------------------------------------------------------
// Activation bit planes and the popcount kernel
// ----------------------------------------------------------------------------------------------------------------

// [S7]: write q_j = o_j − 128 with o_j = q_j + 128 ∈ [0, 255] (unsigned), and split o into 8 bit planes:
// bit j of plane k is bit k of o_j. Plane-major layout: word w of plane k is planes[k*words + w].
// Padding bits (columns n .. words*64−1) are 0 in every plane. sum_q = Σ_j q_j (needed by the identity).
struct ActPlanes {
    int n = 0, words = 0;
    std::vector<uint64_t> planes;  // 8 × words
    int32_t sum_q = 0;
};

// All planes zero, sizes and sum_q set.
inline ActPlanes act_planes_empty(const int8_t* q, int n) {
    ActPlanes A;
    A.n = n;
    A.words = words_for(n);
    A.planes.assign((size_t)8 * A.words, 0);
    for (int j = 0; j < n; j++) A.sum_q += q[j];
    return A;
}
// Bit k of o_j = q_j + 128 into plane k, for the columns j0 .. n−1.
inline void set_act_plane_bits(ActPlanes& A, const int8_t* q, int j0, int n) {
    for (int j = j0; j < n; j++) {
        unsigned o = (unsigned)(q[j] + 128);
        for (int k = 0; k < 8; k++)
            A.planes[(size_t)k * A.words + j / 64] |= (uint64_t)((o >> k) & 1) << (j % 64);
    }
}
inline ActPlanes make_act_planes(const int8_t* q, int n) {
    ActPlanes A = act_planes_empty(q, n);
    set_act_plane_bits(A, q, 0, n);
    return A;
}

// Number of 1 bits in a 64-bit word. C++17 has no std::popcount (that is C++20), so we use the GCC/Clang
// builtin; with -mpopcnt or -march=native it compiles to one POPCNT instruction.
inline int popcount64(uint64_t x) { return __builtin_popcountll(x); }

// [S7] identity for one row with sign bits b (bit 1 = +1):
//   Σ_j b_j q_j = 2·Σ_{b_j=+1} q_j − Σ_j q_j                  (the −1 columns are "everything minus the +1 columns")
//   Σ_{b_j=+1} q_j = Σ_{b_j=+1} o_j − 128·popcount(W)          (q_j = o_j − 128)
//   Σ_{b_j=+1} o_j = Σ_k 2^k · popcount(W & P_k)               (o_j = Σ_k 2^k · bit k of o_j)
// Padding bits are 0 in W, so padded columns never count.
inline int32_t dot_popcount_row(const uint64_t* w_row, const ActPlanes& A) {
    int32_t sum_o_plus = 0;  // Σ_{b=+1} o_j
    int32_t n_plus = 0;      // popcount(W) = number of +1 weights in the row
    for (int w = 0; w < A.words; w++) {
        n_plus += popcount64(w_row[w]);
        for (int k = 0; k < 8; k++)
            sum_o_plus += popcount64(w_row[w] & A.planes[(size_t)k * A.words + w]) << k;  // [S7]: 2^k·popcount(W & P_k)
    }
    int32_t sum_q_plus = sum_o_plus - 128 * n_plus;  // [S7]: Σ_{b=+1} q = Σ_{b=+1} o − 128·popcount(W)
    return 2 * sum_q_plus - A.sum_q;                 // [S7]: Σ b q = 2·Σ_{b=+1} q − Σ q
}

// The portable popcount kernel: y_i = Σ_j W_b,ij q_j for every row (8 + 1 popcounts per 64 weights).
inline void gemv_popcount(const PackedSigns& W, const ActPlanes& A, int32_t* y) {
    assert(W.cols == A.n && W.words == A.words);
    const long work = (long)W.rows * W.cols;
    (void)work;
#pragma omp parallel for schedule(static) if (work >= kParallelMinWeights)
    for (int i = 0; i < W.rows; i++) y[i] = dot_popcount_row(&W.bits[(size_t)i * W.words], A);
}
// <<< copy-paste popcount

// ---- faster kernels are plug-ins ------------------------------------------------------------------------------
// The header computes the ±1 sums two ways: gemv_reference (the definition) and gemv_popcount ([S7], the one to
// study). A faster kernel is a plug-in that this header runs without knowing it: three functions, registered once
// (at static initialisation, before any packed model is built or loaded). Kernel::Fast then runs the last one
// registered, or gemv_popcount when there is none. examples/kernels/fast_kernels.hpp registers the table-lookup
// kernel ([S6], AVX2 where the flags allow); a kernel of your own is written the same way. Each must give bit for
// bit the sums of gemv_reference (the tests compare every kernel with it).
//   prepare_weights  once per bit mask, when a packed model is built or loaded: the kernel's own layout of the bits
//   prepare_acts     once per token and linear: the kernel's own form of the int8 activations q
//   gemv             y_i = Σ_j (2·bit_ij − 1)·q_j for every row of the mask
struct FastKernel {
    std::string name;
    std::function<std::shared_ptr<const void>(const PackedSigns& bits)> prepare_weights;
    std::function<std::shared_ptr<const void>(const int8_t* q, int n)> prepare_acts;
    std::function<void(const PackedSigns& bits, const void* weights, const void* acts, int32_t* y)> gemv;
};
inline std::vector<FastKernel>& fast_kernels() {
    static std::vector<FastKernel> registered;
    return registered;
}
inline bool register_fast_kernel(FastKernel k) {
    fast_kernels().push_back(std::move(k));
    return true;
}
inline const FastKernel* fast_kernel() { return fast_kernels().empty() ? nullptr : &fast_kernels().back(); }
// ---- the packed model: a trained student with its block-linear weights as bit masks -----------------------
// [S8]. Each block linear keeps one or two bit masks (and the same bits re-laid out for the table-lookup
// kernel) and its scales; embedding, norms and LM head stay fp32.
//   FBI    1 mask: sign(W) (bit 1 = +1)                      α, β per input column    y = Σ b q / s + β·x
//   b1.58  2 masks: codes = +1, codes = −1 ([S8] ternary)  γ per tensor            y = γ/s · (Σ_P q − Σ_M q)
//   DB     2 masks: B1, B2 ∈ {0, 1} ([S8] dual binary)     α1, α2 per output row   y = (α1 Σ_B1 q + α2 Σ_B2 q) / s
// Every kernel above computes the ±1 sum Σ_j (2·bit_j − 1) q_j; a {0,1} mask's sum follows from it exactly:
//   Σ_{bit_j = 1} q_j = (Σ_j (2·bit_j − 1) q_j + Σ_j q_j) / 2          (the numerator is always even)
// so ternary and dual-binary weights run on the same kernel family, once per mask.

enum class Kernel : int { Reference = 0, Popcount = 1, Fast = 2 };
inline const char* kernel_name(Kernel k) {
    return k == Kernel::Reference ? "reference" : k == Kernel::Popcount ? "popcount" : "fast";
}

struct PackedLinear {
    Quant quant = Quant::FBI;
    int m = 0, n = 0;
    PackedSigns signs;               // FBI: sign(W), bit 1 = +1 ([F1], sign(0) = −1); b1.58: code = +1; DB: B1
    PackedSigns signs2;              // b1.58: code = −1; DB: B2; empty for FBI
    std::shared_ptr<const void> fast, fast2;  // the fast kernel's layout of signs, signs2 (made at load, not stored)
    std::vector<float> alpha, beta;  // FBI: α, β per input column; DB: α1, α2 per output row; b1.58: alpha = {γ}
};
inline int mask_count(Quant q) { return q == Quant::FBI ? 1 : 2; }
// Number of fp32 scales in alpha and beta for an m×n linear.
inline void scale_counts(Quant q, int m, int n, int& n_alpha, int& n_beta) {
    n_alpha = q == Quant::FBI ? n : q == Quant::DB ? m : 1;
    n_beta = q == Quant::FBI ? n : q == Quant::DB ? m : 0;
}

struct PackedModel {
    Config cfg;
    int scale_bits = 32;  // how the file stores α, β: 32 = fp32, 1..8 = a 2^bits-level codebook per vector (below)
    std::string vocab;
    std::vector<float> tok_emb, final_norm, lm_head;
    std::vector<std::vector<float>> attn_norm, mlp_norm;
    std::vector<std::array<PackedLinear, N_LINEAR>> lin;  // [layer][linear id]
    std::vector<float> rope_cos, rope_sin;
};

// The registered fast kernel's own layout of a linear's masks (nothing when no kernel is registered).
inline void prepare_fast(PackedLinear& p) {
    if (const FastKernel* k = fast_kernel()) {
        p.fast = k->prepare_weights(p.signs);
        if (mask_count(p.quant) == 2) p.fast2 = k->prepare_weights(p.signs2);
    }
}

// Bit masks of one trained linear. Codes come from the same functions the training forward used (§3), so the
// packed weights are exactly the trained Ŵ.
inline void pack_linear(PackedLinear& p, Quant quant, const float* W, const float* a, const float* b, int m, int n) {
    p.quant = quant;
    p.m = m;
    p.n = n;
    auto w = [&](int i, int j) { return W[size_t(i) * n + j]; };
    if (quant == Quant::FBI) {
        p.signs = pack_signs(W, m, n);  // [F1]
        p.alpha.assign(a, a + n);
        p.beta.assign(b, b + n);
    } else if (quant == Quant::B158) {
        float gamma = absmean(W, size_t(m) * n);  // [Q1]
        p.signs = pack_bits(m, n, [&](int i, int j) { return ternary_code(w(i, j), gamma) > 0; });   // [S8]: +1 codes
        p.signs2 = pack_bits(m, n, [&](int i, int j) { return ternary_code(w(i, j), gamma) < 0; });  //          −1 codes
        p.alpha = {gamma};
    } else if (quant == Quant::DB) {
        auto code = [&](int i, int j, int which) {  // [Q5]: B1 (which = 1) or B2 (which = 2) of weight (i, j)
            float b1, b2;
            fdb_codes(w(i, j), a[i], b[i], b1, b2);
            return (which == 1 ? b1 : b2) > 0;
        };
        p.signs = pack_bits(m, n, [&](int i, int j) { return code(i, j, 1); });
        p.signs2 = pack_bits(m, n, [&](int i, int j) { return code(i, j, 2); });
        p.alpha.assign(a, a + m);
        p.beta.assign(b, b + m);
    } else {
        throw std::invalid_argument("fbi::pack_model: a full-precision model has no packed form (quantize it first)");
    }
    prepare_fast(p);
}

// Compact scales (optional). The scales are a small part of the file at 1 bit per weight: FBI stores α and β per
// input column, 2 × 32 bits / m per weight ([P4]), which is 0.060 bits at the 130M shape. A codebook shrinks
// them: each scale vector v keeps only 2^bits distinct values ("levels"), fitted to v by 1-D k-means (Lloyd):
// start from the uniform grid of levels between min(v) and max(v), then alternate "each value takes its nearest
// level" and "each level moves to the mean of the values that took it" until no value changes level. Neither
// step can increase the squared error, so the result is never worse than that uniform grid. The file holds 2^bits fp32
// levels and `bits` bits per scale. This rounds α and β, so unlike the int8 activation it changes Ŵ itself:
// measure it (make train-tiny TRAIN_ARGS="--scale-bits 4"). A vector with at most 2^bits distinct values is
// left exactly as it is.
inline bool valid_scale_bits(long bits) { return bits == 32 || (bits >= 1 && bits <= 8); }  // 32 = fp32

// The values of v, ascending, each once (a codebook's levels).
inline std::vector<float> sorted_distinct(std::vector<float> v) {
    std::sort(v.begin(), v.end());
    v.erase(std::unique(v.begin(), v.end()), v.end());
    return v;
}

inline void codebook_quantize(std::vector<float>& v, int bits) {
    const size_t n = v.size(), k = size_t(1) << bits;
    const std::vector<float> distinct = sorted_distinct(v);
    if (distinct.size() <= k) return;
    const double lo = distinct.front(), hi = distinct.back();
    std::vector<double> level(k);
    for (size_t i = 0; i < k; i++) level[i] = lo + (hi - lo) * double(i) / double(k - 1);
    std::vector<size_t> which(n, k);  // k = "no level yet"
    for (int iter = 0; iter < 100; iter++) {
        bool changed = false;
        for (size_t j = 0; j < n; j++) {  // assign: nearest level (the first one on ties)
            size_t best = 0;
            for (size_t i = 1; i < k; i++)
                if (std::fabs(v[j] - level[i]) < std::fabs(v[j] - level[best])) best = i;
            changed |= best != which[j];
            which[j] = best;
        }
        if (!changed) break;
        std::vector<double> sum(k, 0.0);
        std::vector<size_t> count(k, 0);
        for (size_t j = 0; j < n; j++) { sum[which[j]] += v[j]; count[which[j]]++; }
        for (size_t i = 0; i < k; i++)  // update: the mean of its values (a level nobody took stays put)
            if (count[i]) level[i] = sum[i] / double(count[i]);
    }
    for (size_t j = 0; j < n; j++) v[j] = float(level[which[j]]);
}

// scale_bits = 32 keeps α, β exactly (the int8 activation is then the only approximation, [P1]);
// 1..8 stores them through a 2^scale_bits-level codebook per vector (codebook_quantize).
inline PackedModel pack_model(const Model& model, const std::string& vocab, int scale_bits = 32) {
    if (model.cfg.quant == Quant::FP)
        throw std::invalid_argument("fbi::pack_model: a full-precision model has no packed form (quantize it first)");
    if (!valid_scale_bits(scale_bits))
        throw std::invalid_argument("fbi::pack_model: scale_bits must be 32 (fp32) or 1..8 (codebook), not " +
                                    std::to_string(scale_bits));
    PackedModel pm;
    pm.cfg = model.cfg;
    pm.scale_bits = scale_bits;
    pm.vocab = vocab;
    auto copy = [&](int t) { return std::vector<float>(model.p(t), model.p(t) + model.tensors[t].size()); };
    pm.tok_emb = copy(model.tok_emb);
    pm.final_norm = copy(model.final_norm);
    pm.lm_head = copy(model.lm_head);
    pm.lin.resize(model.cfg.L);
    for (int l = 0; l < model.cfg.L; l++) {
        const BlockRef& blk = model.blocks[l];
        pm.attn_norm.push_back(copy(blk.attn_norm));
        pm.mlp_norm.push_back(copy(blk.mlp_norm));
        for (int id = 0; id < N_LINEAR; id++) {
            const LinearRef& ref = blk.lin[id];
            PackedLinear& p = pm.lin[l][id];
            pack_linear(p, model.cfg.quant, model.p(ref.W), model.p_or_null(ref.alpha), model.p_or_null(ref.beta),
                        ref.m, ref.n);
            if (scale_bits < 32) {
                codebook_quantize(p.alpha, scale_bits);
                codebook_quantize(p.beta, scale_bits);
            }
        }
    }
    rope_tables(pm.rope_cos, pm.rope_sin, pm.cfg.T, pm.cfg.C / pm.cfg.NH);
    return pm;
}

inline DecodeView decode_view(const PackedModel& pm) {
    DecodeView d;
    d.cfg = pm.cfg;
    d.tok_emb = pm.tok_emb.data();
    d.final_norm = pm.final_norm.data();
    d.lm_head = pm.lm_head.data();
    for (int l = 0; l < pm.cfg.L; l++) {
        d.attn_norm.push_back(pm.attn_norm[l].data());
        d.mlp_norm.push_back(pm.mlp_norm[l].data());
    }
    return d;
}

// One token's int8 activations in the form each kernel reads (built once, shared by both masks of a linear).
struct TokenActs {
    std::vector<int8_t> q;
    int32_t sum_q = 0;  // Σ_j q_j
    ActPlanes planes;                 // Kernel::Popcount (and Kernel::Fast when no fast kernel is registered)
    std::shared_ptr<const void> fast;  // Kernel::Fast: q in the registered kernel's form
};
// Kernel::Fast with nothing registered is Kernel::Popcount.
inline Kernel effective_kernel(Kernel k) { return k == Kernel::Fast && !fast_kernel() ? Kernel::Popcount : k; }
inline void prepare_token_acts(TokenActs& a, Kernel kernel, int n) {
    kernel = effective_kernel(kernel);
    if (kernel == Kernel::Popcount) {
        a.planes = make_act_planes(a.q.data(), n);
        a.sum_q = a.planes.sum_q;  // make_act_planes has summed q already
        return;
    }
    a.sum_q = 0;
    for (int j = 0; j < n; j++) a.sum_q += a.q[j];
    if (kernel == Kernel::Fast) a.fast = fast_kernel()->prepare_acts(a.q.data(), n);
}
// y_i = Σ_j (2·bit_ij − 1) q_j with the chosen kernel; every kernel gives the same int32 bits.
inline void signed_gemv(Kernel kernel, const PackedSigns& P, const void* fast_layout, const TokenActs& a, int32_t* y,
                        std::vector<float>& scratch) {
    kernel = effective_kernel(kernel);
    if (kernel == Kernel::Reference) {
        scratch.resize(size_t(P.rows) * P.cols);
        for (int i = 0; i < P.rows; i++)
            for (int j = 0; j < P.cols; j++) scratch[size_t(i) * P.cols + j] = unpacked_sign(P, i, j);
        gemv_reference(scratch.data(), P.rows, P.cols, a.q.data(), y);
    } else if (kernel == Kernel::Popcount) {
        gemv_popcount(P, a.planes, y);
    } else {
        fast_kernel()->gemv(P, fast_layout, a.fast.get(), y);
    }
}

// y = Ŵ x for one token through the packed weights ([P1]). The int8 rounding of the activation is the only
// approximation of FBI and DB (trained in float); b1.58 was trained with the same int8 activation ([Q2]), so
// its packed output equals its training forward up to fp32 rounding. The integer sums are exact in every kernel.
struct PackedLinearFn {
    const PackedModel* pm;
    Kernel kernel;
    explicit PackedLinearFn(const PackedModel* model, Kernel k = Kernel::Fast) : pm(model), kernel(k) {}
    mutable std::vector<float> u, scratch;
    mutable std::vector<int32_t> acc, acc2;
    mutable TokenActs a;

    void operator()(int l, int id, const float* x, float* y) const {
        const PackedLinear& p = pm->lin[l][id];
        a.q.resize(p.n);
        acc.resize(p.m);
        acc2.resize(p.m);
        if (p.quant == Quant::FBI) {
            u.resize(p.n);
            float beta_x = 0;
            for (int j = 0; j < p.n; j++) {
                u[j] = p.alpha[j] * x[j];    // [P1]: fold α into the activation
                beta_x += p.beta[j] * x[j];  // [F3]: the β term, one scalar shared by every output
            }
            float s = quantize_int8_absmax(u.data(), p.n, a.q.data());  // [P1]: the only approximation
            prepare_token_acts(a, kernel, p.n);
            signed_gemv(kernel, p.signs, p.fast.get(), a, acc.data(), scratch);
            for (int i = 0; i < p.m; i++) y[i] = float(acc[i]) / s + beta_x;  // [P1]: y = Σ b q / s + β·x
            return;
        }
        float s = quantize_int8_absmax(x, p.n, a.q.data());  // [Q2]: per-token int8 of x itself
        prepare_token_acts(a, kernel, p.n);
        signed_gemv(kernel, p.signs, p.fast.get(), a, acc.data(), scratch);
        signed_gemv(kernel, p.signs2, p.fast2.get(), a, acc2.data(), scratch);
        if (p.quant == Quant::B158) {
            // Σ_j code_j q_j = Σ_P q − Σ_M q = (signed(P) − signed(M)) / 2, then one multiply by γ/s ([Q1])
            float gamma_over_s = p.alpha[0] / s;
            for (int i = 0; i < p.m; i++) y[i] = float((acc[i] - acc2[i]) / 2) * gamma_over_s;
        } else {  // DB: Σ_{B=1} q = (signed + Σ q) / 2 per mask ([S8] dual binary)
            for (int i = 0; i < p.m; i++)
                y[i] = (p.alpha[i] * float((acc[i] + a.sum_q) / 2) + p.beta[i] * float((acc2[i] + a.sum_q) / 2)) / s;
        }
    }
};

inline std::vector<int> generate(const PackedModel& pm, const std::vector<int>& prompt, int n_new, double temperature,
                                 uint64_t seed, Kernel kernel = Kernel::Fast) {
    return generate(decode_view(pm), PackedLinearFn{&pm, kernel}, pm.rope_cos.data(), pm.rope_sin.data(), prompt,
                    n_new, temperature, seed);
}

// Mean cross-entropy of any decoder over the same windows as evaluate(): each window is decoded token by
// token from an empty KV cache.
template <class LinearFn>
double evaluate_decoder(const DecodeView& d, LinearFn&& linear, const float* rope_cos, const float* rope_sin,
                        const std::vector<int>& data, int T, long max_windows = 0) {
    long total = data.size() > size_t(T) ? long((data.size() - 1) / T) : 0;
    if (total == 0) throw std::invalid_argument("fbi::evaluate_decoder: data shorter than one window");
    long count = (max_windows > 0 && max_windows < total) ? max_windows : total;
    KVCache cache;
    DecodeScratch s;
    s.resize(d.cfg);
    std::vector<float> logits(d.cfg.V);
    double sum = 0;
    for (long w = 0; w < count; w++) {
        size_t start = size_t(w * total / count) * T;
        cache.reset(d.cfg.L, d.cfg.T, d.cfg.C);
        for (int t = 0; t < T; t++) {
            decode_step(d, linear, cache, s, data[start + t], logits.data(), rope_cos, rope_sin);
            sum += double(log_sum_exp(logits.data(), d.cfg.V) - logits[data[start + t + 1]]);
        }
    }
    return sum / (double(count) * T);
}

// =====================================================================================================
// §10 CHECKPOINTS: config, opaque vocabulary bytes, parameters and optimizer state, behind a magic, a
// format version, sizes and a checksum. Written atomically: a temp file, fsync, then rename.
//   layout (little-endian):  "FBICKPT\0" | u32 version | u32 quant,V,C,L,NH,F,T | u64 step, adam_t |
//                            u64 vocab_bytes, n_params, n_opt | vocab | f32 params | f32 m, v (n_opt each) |
//                            u64 FNV-1a checksum of everything before it
// =====================================================================================================

constexpr char kCheckpointMagic[8] = {'F', 'B', 'I', 'C', 'K', 'P', 'T', '\0'};
constexpr uint32_t kCheckpointVersion = 1;

// Nothing in a file grows with the context length T, yet loading one builds RoPE tables of T·C/NH floats (and
// decoding, a KV cache of 2·L·T·C): the loaders refuse a T above this, and the writers refuse to write one.
constexpr int kMaxFileContext = 1 << 16;
inline void check_file_context(const Config& c, const std::string& what) {
    if (c.T > kMaxFileContext)
        throw std::runtime_error(what + ": context length T=" + std::to_string(c.T) + " is above the " +
                                 std::to_string(kMaxFileContext) + " that checkpoint and packed files allow");
}

struct Checkpoint {
    Config cfg;
    std::string vocab;     // opaque to the header (the char tokenizer stores its characters here)
    long step = 0;         // optimizer steps done
    std::vector<float> params;
    AdamW opt;             // moments empty when saved without optimizer state
};

inline uint64_t fnv1a(const unsigned char* p, size_t n, uint64_t h = 1469598103934665603ull) {
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

struct ByteWriter {
    std::vector<unsigned char> buf;
    void raw(const void* p, size_t n) {
        const unsigned char* c = static_cast<const unsigned char*>(p);
        buf.insert(buf.end(), c, c + n);
    }
    template <class U> void put(U x) { raw(&x, sizeof(U)); }
};
struct ByteReader {
    const std::vector<unsigned char>& buf;
    size_t at = 0;
    std::string what;  // for error messages
    void raw(void* p, size_t n) {
        if (n > buf.size() - at)
            throw std::runtime_error(what + ": truncated (needs " + std::to_string(at + n) + " bytes, file has " +
                                     std::to_string(buf.size()) + ")");
        if (n) std::memcpy(p, buf.data() + at, n);  // n = 0 may come with p = nullptr (an empty vector)
        at += n;
    }
    template <class U> U get() { U x; raw(&x, sizeof(U)); return x; }
};

inline std::vector<unsigned char> checkpoint_bytes(const Checkpoint& ck) {
    check_file_context(ck.cfg, "fbi::checkpoint_bytes");
    ByteWriter w;
    w.raw(kCheckpointMagic, 8);
    w.put<uint32_t>(kCheckpointVersion);
    const Config& c = ck.cfg;
    for (int x : {int(c.quant), c.V, c.C, c.L, c.NH, c.F, c.T}) w.put<uint32_t>(uint32_t(x));
    bool has_opt = !ck.opt.m.empty();
    w.put<uint64_t>(uint64_t(ck.step));
    w.put<uint64_t>(uint64_t(ck.opt.t));
    w.put<uint64_t>(ck.vocab.size());
    w.put<uint64_t>(ck.params.size());
    w.put<uint64_t>(has_opt ? ck.params.size() : 0);
    w.raw(ck.vocab.data(), ck.vocab.size());
    w.raw(ck.params.data(), ck.params.size() * sizeof(float));
    if (has_opt) {
        w.raw(ck.opt.m.data(), ck.opt.m.size() * sizeof(float));
        w.raw(ck.opt.v.data(), ck.opt.v.size() * sizeof(float));
    }
    w.put<uint64_t>(fnv1a(w.buf.data(), w.buf.size()));
    return w.buf;
}

// Write bytes to `path` atomically: nothing at `path` changes unless the whole new file is on disk.
inline void write_file_atomic(const std::string& path, const std::vector<unsigned char>& bytes) {
    std::string tmp = path + ".tmp";
#if defined(__unix__) || defined(__APPLE__)
    tmp += "." + std::to_string(long(getpid()));
#endif
    FILE* f = std::fopen(tmp.c_str(), "wb");
    if (!f) throw std::runtime_error("cannot write '" + path + "': " + std::strerror(errno));
    bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size() && std::fflush(f) == 0;
#if defined(__unix__) || defined(__APPLE__)
    ok = ok && fsync(fileno(f)) == 0;
#endif
    int err = errno;
    ok = (std::fclose(f) == 0) && ok;
    if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
        if (ok) err = errno;
        std::remove(tmp.c_str());
        throw std::runtime_error("cannot write '" + path + "': " + std::strerror(err));
    }
}

inline std::vector<unsigned char> read_file_bytes(const std::string& path) {
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) throw std::runtime_error("cannot open '" + path + "': " + std::strerror(errno));
    std::vector<unsigned char> bytes;
    unsigned char chunk[1 << 16];
    size_t n;
    while ((n = std::fread(chunk, 1, sizeof chunk, f)) > 0) bytes.insert(bytes.end(), chunk, chunk + n);
    bool err = std::ferror(f);
    std::fclose(f);
    if (err) throw std::runtime_error("error reading '" + path + "'");
    return bytes;
}

inline void save_checkpoint(const std::string& path, const Checkpoint& ck) {
    write_file_atomic(path, checkpoint_bytes(ck));
}

// A lower bound on the parameters of a config, computed without allocating anything: what a full-precision
// model has (every quantizer only adds scales to it). The loader checks a file's sizes against it before
// layout_model allocates what the config claims. Saturates at UINT64_MAX instead of wrapping around, since the
// config may come from a damaged file (every size is at most 2^24 there, so one block's count fits easily).
inline uint64_t min_param_count(const Config& c) {
    uint64_t C = uint64_t(c.C), F = uint64_t(c.F);
    uint64_t per_block = 2 * C + 4 * C * C + 3 * C * F;  // 2 norms, q k v o (C×C), gate up (F×C), down (C×F)
    uint64_t rest = 2 * uint64_t(c.V) * C + C;           // tok_emb, lm_head, final_norm
    if (per_block != 0 && uint64_t(c.L) > (UINT64_MAX - rest) / per_block) return UINT64_MAX;
    return rest + uint64_t(c.L) * per_block;
}

// Parse and validate. `what` names the source in error messages.
inline Checkpoint parse_checkpoint(const std::vector<unsigned char>& bytes, const std::string& what) {
    ByteReader r{bytes, 0, "checkpoint '" + what + "'"};
    char magic[8];
    r.raw(magic, 8);
    if (std::memcmp(magic, kCheckpointMagic, 8) != 0)
        throw std::runtime_error(r.what + ": not an fbi_llm checkpoint (bad magic)");
    uint32_t version = r.get<uint32_t>();
    if (version != kCheckpointVersion)
        throw std::runtime_error(r.what + ": format version " + std::to_string(version) + ", this build reads version " +
                                 std::to_string(kCheckpointVersion));
    Checkpoint ck;
    uint32_t f[7];
    for (uint32_t& x : f) x = r.get<uint32_t>();
    if (f[0] > uint32_t(Quant::DB)) throw std::runtime_error(r.what + ": unknown quantizer id " + std::to_string(f[0]));
    ck.cfg.quant = Quant(f[0]);
    int* dims[6] = {&ck.cfg.V, &ck.cfg.C, &ck.cfg.L, &ck.cfg.NH, &ck.cfg.F, &ck.cfg.T};
    for (int i = 0; i < 6; i++) {
        if (f[i + 1] > (1u << 24)) throw std::runtime_error(r.what + ": implausible config size " + std::to_string(f[i + 1]));
        *dims[i] = int(f[i + 1]);
    }
    try { check_config(ck.cfg); } catch (const std::exception& e) { throw std::runtime_error(r.what + ": " + e.what()); }
    check_file_context(ck.cfg, r.what);
    ck.step = long(r.get<uint64_t>());
    ck.opt.t = long(r.get<uint64_t>());
    uint64_t n_vocab = r.get<uint64_t>(), n_params = r.get<uint64_t>(), n_opt = r.get<uint64_t>();
    // Sizes from the file are bounded before anything is allocated: layout_model allocates what the config
    // claims, so the config must first be shown to fit the parameter count, and that count to fit the file.
    uint64_t at_least = min_param_count(ck.cfg);
    if (n_params < at_least)
        throw std::runtime_error(r.what + ": holds " + std::to_string(n_params) + " parameters but its config (" +
                                 describe(ck.cfg) + ") needs at least " + std::to_string(at_least));
    if (n_vocab > bytes.size() || n_params > bytes.size())  // also so that `expect` below cannot wrap around
        throw std::runtime_error(r.what + ": truncated (its header promises " + std::to_string(n_vocab) +
                                 " vocabulary bytes and " + std::to_string(n_params) + " parameters, file has " +
                                 std::to_string(bytes.size()) + " bytes)");
    ModelT<float> shape;
    layout_model(shape, ck.cfg);
    if (n_params != shape.params.size())
        throw std::runtime_error(r.what + ": holds " + std::to_string(n_params) + " parameters but its config (" +
                                 describe(ck.cfg) + ") needs " + std::to_string(shape.params.size()));
    if (n_opt != 0 && n_opt != n_params) throw std::runtime_error(r.what + ": optimizer state size mismatch");
    uint64_t expect = r.at + n_vocab + 4 * (n_params + 2 * n_opt) + 8;
    if (bytes.size() != expect)
        throw std::runtime_error(r.what + (bytes.size() < expect ? ": truncated" : ": has trailing bytes") +
                                 " (expected " + std::to_string(expect) + " bytes, file has " +
                                 std::to_string(bytes.size()) + ")");
    ck.vocab.resize(n_vocab);
    r.raw(&ck.vocab[0], n_vocab);
    ck.params.resize(n_params);
    r.raw(ck.params.data(), 4 * n_params);
    ck.opt.m.resize(n_opt);
    ck.opt.v.resize(n_opt);
    r.raw(ck.opt.m.data(), 4 * n_opt);
    r.raw(ck.opt.v.data(), 4 * n_opt);
    uint64_t sum = r.get<uint64_t>();
    if (sum != fnv1a(bytes.data(), bytes.size() - 8)) throw std::runtime_error(r.what + ": checksum mismatch (corrupted)");
    return ck;
}

inline Checkpoint load_checkpoint(const std::string& path) { return parse_checkpoint(read_file_bytes(path), path); }

// Checkpoint <-> model.
inline Checkpoint make_checkpoint(const Model& model, const std::string& vocab, long step, const AdamW* opt) {
    Checkpoint ck;
    ck.cfg = model.cfg;
    ck.vocab = vocab;
    ck.step = step;
    ck.params = model.params;
    if (opt) ck.opt = *opt;
    return ck;
}
inline Model model_from_checkpoint(const Checkpoint& ck) {
    Model model;
    layout_model(model, ck.cfg);
    model.params = ck.params;
    return model;
}

// ---- the packed model file ---------------------------------------------------------------------------------
//   "FBIPACK\0" | u32 version (1) | u32 quant | u32 scale_bits | u32 V,C,L,NH,F,T | u64 vocab_bytes | vocab |
//   f32 tok_emb (V×C) | per block: f32 attn_norm (C), f32 mlp_norm (C), per linear (q,k,v,o,gate,up,down):
//   u64 mask bits (m × words), [b1.58, DB: u64 second mask (m × words)], scale vectors (FBI: α (n), β (n);
//   b1.58: γ; DB: α1 (m), α2 (m)) | f32 final_norm (C) | f32 lm_head (V×C) | u64 FNV-1a checksum of everything
//   before it. A scale vector of k values is k × f32 when scale_bits = 32; otherwise 2^scale_bits f32 levels
//   (ascending, the last one repeated to fill) then k level numbers of scale_bits bits each, packed from the
//   lowest bit of each byte up, unused bits of the last byte 0.
// One version, 1. Every size follows from the header, so a truncated or padded file is caught before anything
// is read. (Development builds before the format was frozen wrote versions 2 and 3 under the same magic;
// they are refused with a message that says to pack the checkpoint again.)
constexpr char kPackedMagic[8] = {'F', 'B', 'I', 'P', 'A', 'C', 'K', '\0'};
constexpr uint32_t kPackedVersion = 1;

// Bytes of one stored scale vector of k values (see the layout above).
inline uint64_t scale_bytes(uint64_t k, int bits) {
    if (k == 0) return 0;
    return bits == 32 ? 4 * k : 4 * (uint64_t(1) << bits) + (k * uint64_t(bits) + 7) / 8;
}

inline void write_scales(ByteWriter& w, const std::vector<float>& v, int bits) {
    if (v.empty()) return;
    if (bits == 32) return w.raw(v.data(), 4 * v.size());
    std::vector<float> levels = sorted_distinct(v);
    const size_t k = size_t(1) << bits;
    if (levels.size() > k)
        throw std::logic_error("fbi::write_scales: " + std::to_string(levels.size()) + " distinct scales do not fit a " +
                               std::to_string(bits) + "-bit codebook (pack_model(..., scale_bits) makes them fit)");
    levels.resize(k, levels.back());
    w.raw(levels.data(), 4 * k);
    std::vector<unsigned char> packed((v.size() * bits + 7) / 8, 0);
    for (size_t j = 0; j < v.size(); j++) {
        uint32_t code = uint32_t(std::lower_bound(levels.begin(), levels.end(), v[j]) - levels.begin());
        for (int b = 0; b < bits; b++)
            if (code >> b & 1) packed[(j * bits + b) / 8] |= uint8_t(1u << ((j * bits + b) % 8));
    }
    w.raw(packed.data(), packed.size());
}

inline void read_scales(ByteReader& r, std::vector<float>& v, size_t k, int bits) {
    v.resize(k);
    if (k == 0) return;
    if (bits == 32) return r.raw(v.data(), 4 * k);
    const size_t start = r.at;
    std::vector<float> levels(size_t(1) << bits);
    r.raw(levels.data(), 4 * levels.size());
    for (float x : levels)
        if (!std::isfinite(x)) throw std::runtime_error(r.what + ": a scale codebook level is not finite (corrupted)");
    std::vector<unsigned char> packed((k * bits + 7) / 8);
    r.raw(packed.data(), packed.size());
    for (size_t j = 0; j < k; j++) {
        uint32_t code = 0;
        for (int b = 0; b < bits; b++) code |= uint32_t(packed[(j * bits + b) / 8] >> ((j * bits + b) % 8) & 1) << b;
        v[j] = levels[code];
    }
    // Exactly what write_scales makes of these values (levels ascending and used, padding 0), so that a file
    // reads and writes back to the same bytes; anything else was not written by this header.
    ByteWriter again;
    write_scales(again, v, bits);
    if (!std::equal(again.buf.begin(), again.buf.end(), r.buf.begin() + long(start)))
        throw std::runtime_error(r.what + ": a scale codebook is not in its canonical form (corrupted)");
}

inline std::vector<unsigned char> packed_model_bytes(const PackedModel& pm) {
    check_file_context(pm.cfg, "fbi::packed_model_bytes");
    ByteWriter w;
    w.raw(kPackedMagic, 8);
    w.put<uint32_t>(kPackedVersion);
    const Config& c = pm.cfg;
    w.put<uint32_t>(uint32_t(c.quant));
    w.put<uint32_t>(uint32_t(pm.scale_bits));
    for (int x : {c.V, c.C, c.L, c.NH, c.F, c.T}) w.put<uint32_t>(uint32_t(x));
    w.put<uint64_t>(pm.vocab.size());
    w.raw(pm.vocab.data(), pm.vocab.size());
    auto floats = [&](const std::vector<float>& v) { w.raw(v.data(), 4 * v.size()); };
    floats(pm.tok_emb);
    for (int l = 0; l < c.L; l++) {
        floats(pm.attn_norm[l]);
        floats(pm.mlp_norm[l]);
        for (const PackedLinear& p : pm.lin[l]) {
            w.raw(p.signs.bits.data(), 8 * p.signs.bits.size());
            w.raw(p.signs2.bits.data(), 8 * p.signs2.bits.size());  // empty for FBI
            write_scales(w, p.alpha, pm.scale_bits);
            write_scales(w, p.beta, pm.scale_bits);
        }
    }
    floats(pm.final_norm);
    floats(pm.lm_head);
    w.put<uint64_t>(fnv1a(w.buf.data(), w.buf.size()));
    return w.buf;
}

inline void save_packed_model(const std::string& path, const PackedModel& pm) {
    write_file_atomic(path, packed_model_bytes(pm));
}

// Shapes of the 7 block linears (out m, in n), in file order.
inline void linear_shapes(const Config& c, int m[N_LINEAR], int n[N_LINEAR]) {
    const int out_dim[N_LINEAR] = {c.C, c.C, c.C, c.C, c.F, c.F, c.C};
    const int in_dim[N_LINEAR] = {c.C, c.C, c.C, c.C, c.C, c.C, c.F};
    for (int i = 0; i < N_LINEAR; i++) { m[i] = out_dim[i]; n[i] = in_dim[i]; }
}

// One m×n bit mask; padding bits must be 0 (the kernels rely on it).
inline void read_mask(ByteReader& r, PackedSigns& P, int m, int n) {
    P.rows = m;
    P.cols = n;
    P.words = words_for(n);
    P.bits.resize(size_t(m) * P.words);
    r.raw(P.bits.data(), 8 * P.bits.size());
    int tail = n % 64;
    if (tail)
        for (int row = 0; row < m; row++)
            if (P.bits[size_t(row) * P.words + P.words - 1] >> tail)
                throw std::runtime_error(r.what + ": padding bits set in a packed row (corrupted)");
}

inline PackedModel parse_packed_model(const std::vector<unsigned char>& bytes, const std::string& what) {
    ByteReader r{bytes, 0, "packed model '" + what + "'"};
    char magic[8];
    r.raw(magic, 8);
    if (std::memcmp(magic, kPackedMagic, 8) != 0)
        throw std::runtime_error(r.what + ": not an fbi_llm packed model (bad magic)");
    uint32_t version = r.get<uint32_t>();
    if (version != kPackedVersion)
        throw std::runtime_error(r.what + ": format version " + std::to_string(version) + ", this build reads version " +
                                 std::to_string(kPackedVersion) +
                                 (version == 2 || version == 3 ? " (a pre-release layout: pack the checkpoint again)" : ""));
    PackedModel pm;
    Config& c = pm.cfg;
    uint32_t quant = r.get<uint32_t>();
    if (quant == uint32_t(Quant::FP) || quant > uint32_t(Quant::DB))
        throw std::runtime_error(r.what + ": unknown packed quantizer id " + std::to_string(quant));
    c.quant = Quant(quant);
    uint32_t bits = r.get<uint32_t>();
    if (!valid_scale_bits(long(bits)))
        throw std::runtime_error(r.what + ": scale_bits " + std::to_string(bits) + " (must be 32 or 1..8)");
    pm.scale_bits = int(bits);
    int* dims[6] = {&c.V, &c.C, &c.L, &c.NH, &c.F, &c.T};
    for (int* d : dims) {
        uint32_t x = r.get<uint32_t>();
        if (x > (1u << 24)) throw std::runtime_error(r.what + ": implausible config size " + std::to_string(x));
        *d = int(x);
    }
    try { check_config(c); } catch (const std::exception& e) { throw std::runtime_error(r.what + ": " + e.what()); }
    check_file_context(c, r.what);
    uint64_t n_vocab = r.get<uint64_t>();
    int m[N_LINEAR], n[N_LINEAR];
    linear_shapes(c, m, n);
    uint64_t per_block = 8ull * c.C;
    for (int i = 0; i < N_LINEAR; i++) {
        int na, nb;
        scale_counts(c.quant, m[i], n[i], na, nb);
        per_block += 8ull * mask_count(c.quant) * m[i] * words_for(n[i]) + scale_bytes(na, pm.scale_bits) +
                     scale_bytes(nb, pm.scale_bits);
    }
    if (n_vocab > bytes.size() || uint64_t(c.L) > bytes.size() / per_block)  // first: `expect` cannot wrap around
        throw std::runtime_error(r.what + ": truncated (" + describe(c) + " with " + std::to_string(n_vocab) +
                                 " vocabulary bytes needs more than the file's " + std::to_string(bytes.size()) +
                                 " bytes)");
    uint64_t expect = r.at + n_vocab + 4ull * (2ull * c.V * c.C + c.C) + uint64_t(c.L) * per_block + 8;
    if (bytes.size() != expect)
        throw std::runtime_error(r.what + (bytes.size() < expect ? ": truncated" : ": has trailing bytes") +
                                 " (expected " + std::to_string(expect) + " bytes for " + describe(c) +
                                 ", file has " + std::to_string(bytes.size()) + ")");
    uint64_t stored_sum;  // memcpy: the checksum's offset is not 8-byte aligned (the vocabulary has any length)
    std::memcpy(&stored_sum, bytes.data() + bytes.size() - 8, 8);
    if (fnv1a(bytes.data(), bytes.size() - 8) != stored_sum)
        throw std::runtime_error(r.what + ": checksum mismatch (corrupted)");
    pm.vocab.resize(n_vocab);
    r.raw(&pm.vocab[0], n_vocab);
    auto floats = [&](std::vector<float>& v, size_t count) { v.resize(count); r.raw(v.data(), 4 * count); };
    floats(pm.tok_emb, size_t(c.V) * c.C);
    pm.attn_norm.resize(c.L);
    pm.mlp_norm.resize(c.L);
    pm.lin.resize(c.L);
    for (int l = 0; l < c.L; l++) {
        floats(pm.attn_norm[l], c.C);
        floats(pm.mlp_norm[l], c.C);
        for (int i = 0; i < N_LINEAR; i++) {
            PackedLinear& p = pm.lin[l][i];
            p.quant = c.quant;
            p.m = m[i];
            p.n = n[i];
            read_mask(r, p.signs, m[i], n[i]);
            if (mask_count(c.quant) == 2) read_mask(r, p.signs2, m[i], n[i]);
            if (c.quant == Quant::B158)  // a weight cannot be both +1 and −1
                for (size_t w = 0; w < p.signs.bits.size(); w++)
                    if (p.signs.bits[w] & p.signs2.bits[w])
                        throw std::runtime_error(r.what + ": a ternary weight is marked both +1 and -1 (corrupted)");
            int na, nb;
            scale_counts(c.quant, m[i], n[i], na, nb);
            read_scales(r, p.alpha, size_t(na), pm.scale_bits);
            read_scales(r, p.beta, size_t(nb), pm.scale_bits);
            prepare_fast(p);
        }
    }
    floats(pm.final_norm, c.C);
    floats(pm.lm_head, size_t(c.V) * c.C);
    rope_tables(pm.rope_cos, pm.rope_sin, c.T, c.C / c.NH);
    return pm;
}

inline PackedModel load_packed_model(const std::string& path) { return parse_packed_model(read_file_bytes(path), path); }

// Storage of the quantized layers in bits per weight: the masks' bits (+ row padding) plus the scales as the file
// stores them, over the number of quantized weights ([P4] "bits per weight"). FBI with fp32 scales: 1 + 64/m;
// b1.58 and DB: 2 bits + scales (b1.58's information content is log2 3 ≈ 1.58 bits; two masks are how the kernels
// read it).
inline double packed_bits_per_weight(const PackedModel& pm) {
    double bits = 0, weights = 0;
    for (const auto& block : pm.lin)
        for (const PackedLinear& p : block) {
            bits += 64.0 * (p.signs.bits.size() + p.signs2.bits.size()) +
                    8.0 * double(scale_bytes(p.alpha.size(), pm.scale_bits) + scale_bytes(p.beta.size(), pm.scale_bits));
            weights += double(p.m) * p.n;
        }
    return bits / weights;
}

}  // namespace fbi
