// fbi_llm.hpp — fully binarized LLMs, in one readable C++17 header.
// =====================================================================================================
//
// WHAT THIS IS
//   A LLaMA-style transformer (token ids in, logits out) with a hand-written forward AND backward pass for every
//   layer. Its block linears are full precision (the teacher) or FBI-linear (FBI-LLM, Ma, Sun & Shen 2024, arXiv
//   2407.07093): 1-bit weights sign(W) with a learnable scale α and shift β per input column, trained from scratch
//   with the straight-through estimator (STE) and autoregressive distillation (AD) from a frozen teacher. Also:
//   AdamW with warm-up + cosine, deterministic batches, evaluation, KV-cache generation, and bit-packed 1-bit
//   inference with popcount kernels.
//
// TWO PARTS
//   PART I (§1–§9) is the paper's path, to read top to bottom: no intrinsics, no file formats, no registries.
//   PART II (§10–§11) is reference: the registries plug-ins fill and the checkpoint and packed-model files.
//   §1 config, utilities · §2 layers, forward/backward side by side · §3 FBI-linear and the quantizer interface ·
//   §4 losses · §5 model · §6 optimizer · §7 training · §8 inference (KV cache, prefill) · §9 packed 1-bit inference ·
//   §10 registries · §11 files.  (§ always means a part of this header.)
//
// PLUG-INS (companion headers: include after this one; each registers itself)
//   The model, the packed decoder and the files see a block linear's quantizer only through a small table (§3:
//   init, weight forward, STE backward, optional input quantization, pack, packed forward); losses, fast kernels
//   and compact scales plug in the same way (§10). Each plug-in has METHOD NOTES and a map like the ones below.
//     examples/quantizers/b158.hpp      BitNet b1.58: ternary weights, int8 activations (arXiv 2402.17764)
//     examples/quantizers/db.hpp        DB-LLM: dual binarization + deviation-aware distillation (arXiv
//                                       2402.11960; our reading of it is UNCONFIRMED)
//     examples/quantizers/codebook.hpp  α, β stored as 2^bits-level codebooks in packed files
//     examples/kernels/fast_kernels.hpp AVX2 / AVX-512 popcount and table-lookup GEMV and GEMM (Kernel::Fast),
//                                       F16C and VNNI kernels for fp16 / int8 embedding and head rows
//
// HOW TO USE
//   #include "fbi_llm.hpp"                      // needs Eigen 3 (-I/usr/include/eigen3); OpenMP optional
//   fbi::Config cfg;  cfg.V = 65;  cfg.quant = fbi::Quant::FBI;
//   auto model = fbi::build_model<float>(cfg, /*seed=*/1337);
//   fbi::model_forward(model, tokens, B, T);     // logits in model.acts.logits  (B×T×V)
//   examples/pipeline/train_tiny.cpp is the whole teacher → student pipeline; tests/ has worked examples.
//
// COPY-PASTE
//   Three blocks stand alone: the FBI-linear layer, the losses (softmax, CE, AD) and the portable popcount GEMV.
//   Copy from "// >>> copy-paste NAME (needs: …)" to "// <<< copy-paste NAME", add the standard headers and the
//   one-line definitions the marker names; no Eigen. tests/copy_paste.sh (in `make test`) proves it.
//
// NOTATION (as in llm.c)
//   B batch, T time (context), C model width, V vocabulary, L layers, NH heads, hs = C/NH head size,
//   F SwiGLU hidden width, N = B·T rows. A linear has latent weight W ∈ R^{m×n} (m out, n in; PyTorch's
//   [out, in] layout); a row x ∈ R^n maps to y = x Wᵀ ∈ R^m. All matrices are row-major.
//   Gradients are named d<thing> and are ALWAYS accumulated with +=; callers zero them first.
//   Left out: GPU kernels, mixed precision, tokenizers (examples/ brings a char tokenizer; examples/llama/ reads
//   LLaMA's sentencepiece model and trains a BPE one), multi-node training, dropout; for those, PyTorch and the
//   official FBI-LLM code, or llm.c.
//
// METHOD NOTES — every equation the code implements, with a label cited as [X] at the line that computes it.
//   Papers: FBI-LLM = Ma, Sun & Shen 2024, arXiv 2407.07093 (v1); BitNet = Wang et al. 2023, arXiv 2310.11453
//   (the int8 activation). "choice" marks this project's own decision; "UNCONFIRMED" a reading of a paper whose
//   method text we could not check. FBI-LLM equation numbers are as its authors cite them on the official code's
//   issue tracker (eq. 3, 4–5); other FBI-LLM items name the method without a number. The derivations, checked
//   numerically against numpy and PyTorch autograd: notebooks/01_equations.ipynb.
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
//  Optimizer (Loshchilov & Hutter, 1711.05101)
//   [O1] AdamW, decoupled decay: m ← β1 m + (1−β1) g, v ← β2 v + (1−β2) g², θ ← θ − lr·(m̂/(sqrt(v̂) + ε) +
//        λθ); β1 = 0.9, β2 = 0.95, ε = 1e-8, λ = 0.1 (FBI-LLM's recipe; which tensors decay is a choice)
//   [O2] global clipping: g ← g · min(1, c/‖g‖), c = 1
//   [O3] lr(s) = peak·s/S_w for s < S_w, then floor + ½(1 + cos(π (s−S_w)/(S−S_w)))·(peak − floor), then floor
//  Inference (§8)
//   [G1] nucleus (top-p) sampling: the most likely tokens, in order, until their probabilities sum to >= top_p,
//        renormalised; the rest never drawn (Holtzman et al. 2019, arXiv 1904.09751)
//  Packed inference (this project's derivations)
//   [Q2] int8 per token: s = 127 / max(max_j |x_j|, 1e-5), q = clamp(round(s·x), −128, 127), x̃ = q/s
//        (BitNet §2.1 eq. 4–5, per token as b1.58 §2 says; the 1e-5 floor is a choice)
//   [P1] FBI: u = α ⊙ x, q = int8(u) by [Q2], y_i = (Σ_j b_ij q_j)/s + β·x — [F3] with one approximation
//   [S7] Σ_j b_j q_j = 2·Σ_{b=+1} q − Σ q for b ∈ {±1}; o = q + 128 ∈ [0, 255] in 8 bit planes P_k:
//        Σ_{b=+1} o = Σ_k 2^k·popcount(bits & P_k), so Σ_{b=+1} q = that − 128·popcount(bits)
//   [P4] bits per weight: 1 + 2·32/m for fp32 α, β per column (FBI-LLM reports ≈ 1.01 at its shapes)
//   [H1] E and H in fp16 (IEEE binary16): half → float exact; float → half to nearest, ties to even, ±∞ from
//        65520 on (the official FBI-LLM evaluation casts every parameter to float16)
//   [H2] E and H in int8: per row s_i = max_j |w_ij| / 127, c_ij = round(w_ij / s_i); the head runs on q = int8(x)
//        by [Q2] with scale s: logit_i = s_i · (Σ_j c_ij q_j) / s, the integer sums exact       (choice, as q8_0)
//
// EQUATION MAP   (label → function → test; run one check with  make test ARGS='-tc="F2*"')
//   [L1] rmsnorm_forward/backward "L1 …"  · [L2] rope_forward/backward "L2 …"  · [L3] attention_forward/backward
//   "L3 …", "M2 causality"  · [L4] swiglu_forward/backward "L4 …"  · [L5] matmul_forward/backward "L5 …"  ·
//   [L6] embedding_forward/backward "L6 …"  · [M0] build_model "M0 …"  · [M1] model_forward/backward "M1 …",
//   "M2 …", "M4 …"
//   [F1] sign_pm1 "F1 …", pack_signs "S7 pack_signs …"  · [F2] fbi_forward "F2 …"  · [F3] matmul_forward and
//   fbi_packed_forward "F3 …"  · [F4] fbi_init "F4 …"  · [F5] fbi_backward "F5 …"  · [F6] FlipCounter "F6 …"
//   [D0] cross_entropy_forward/backward "D0 …"  · [D1] distill_forward/backward "D1 …"  · [D2]
//   loss_forward_backward "D2 …"  · [O1] adamw_step "O1 …"  · [O2] clip_grad_norm "O2 …"  · [O3] lr_schedule "O3 …"
//   [Q2] quantize_int8_absmax "S5 …", "Q2 …"  · [S7] gemv_popcount "S7 worked example …", "S7 every kernel …"  ·
//   [P1] fbi_packed_forward "P1 …", "P2 …"  · [P4] save/load_packed_model, packed_bits_per_weight "P3 …", "P4 …",
//   "S8 packed file …", "P8 …"  · [H1] f16_to_f32, f32_to_f16, rows_dot_f16 "H1 …"  · [H2] quantize_row_int8,
//   rows_dot_i8, rows_gemv "H2 …"  · [G1] sample_token_top_p "G1 …"  · prefill (the [M1] path for many tokens at once,
//   cached_attention [L3]) "M7 …", KVCache "M8 …", inference mode (Keep::Logits) "M9 …"  · the quantizer interface:
//   Quantizer, register_quantizer "I1 …" (README's worked example)
//
// BUILD NOTES
//   -O2/-O3 and, if you can, -fopenmp. Never -ffast-math: the losses take exp/log of large negative numbers and
//   the tests compare to the last bit. Everything is `inline` in namespace fbi (include it from many files).
//   Optional: -DEIGEN_USE_BLAS -DFBI_OPENBLAS and -lopenblas (the Makefile's default when OpenBLAS links) run the
//   matrix products in OpenBLAS, one thread per call; results differ from Eigen's in float rounding only.
// =====================================================================================================
#pragma once

// The header parallelises matrix products itself (for_row_blocks, §2); Eigen's own threads stay off.
#ifndef EIGEN_DONT_PARALLELIZE
#define EIGEN_DONT_PARALLELIZE
#endif
#include <Eigen/Dense>

// Built with -DEIGEN_USE_BLAS, Eigen hands its large products to a BLAS library instead of its own GEMM; the
// Makefile does so with OpenBLAS when it links (-DFBI_OPENBLAS names it): 1.1-1.4x Eigen's speed at the
// training step's shapes on the AVX-512 machines we measured (README, Training throughput). Our threads each
// call it on one row block, so OpenBLAS's own threads stay off too. Matrix-vector products (the decoders') keep
// Eigen's own kernel (matvec_rows, §8). Without the flags: Eigen only.
#if defined(EIGEN_USE_BLAS) && defined(FBI_OPENBLAS)
extern "C" void openblas_set_num_threads(int);
extern "C" char* openblas_get_corename(void);
namespace fbi {
inline const bool openblas_single_threaded = (openblas_set_num_threads(1), true);
}
#endif

#include <algorithm>
#include <array>
#include <cassert>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>  // fsync, getpid: atomic checkpoint writes
#endif
#include <sys/stat.h>  // fstat: the size of a packed model file before it is parsed

namespace fbi {

// =====================================================================================================
// PART I — THE PAPER'S PATH.  §1 CONFIG AND UTILITIES: the model's sizes, random numbers, Eigen views, threads
// =====================================================================================================

// How the linear layers inside the blocks turn their latent parameters into the weight used in the forward
// pass (§3). Embedding, norms and LM head are always full precision ([M1]). The header knows two; a plug-in
// (examples/quantizers/) registers more under its own id, which files store (b1.58 = 2, DB = 3).
enum class Quant : int {
    FP = 0,   // Ŵ = W                                  (the teacher)
    FBI = 1,  // Ŵ = α ⊙ sign(W) + β, α, β per column   (FBI-LLM, [F2])
};
struct Quantizer;                                  // §3: the quantizer interface (its registry: §10)
inline const Quantizer* find_quantizer(Quant id);  // null when nothing is registered under id
inline const char* quant_name(Quant id);           // "fp32", "fbi", or a plug-in's name
inline std::string unknown_quantizer(Quant id, const std::string& kind = "");  // the message for an unknown id
inline const Quantizer& quantizer(Quant id);       // the table registered under id; throws when none is

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
    return a.V == b.V && a.C == b.C && a.L == b.L && a.NH == b.NH && a.F == b.F && a.T == b.T && a.quant == b.quant;
}
inline std::string describe(const Config& c) {
    return "V=" + std::to_string(c.V) + " C=" + std::to_string(c.C) + " L=" + std::to_string(c.L) +
           " NH=" + std::to_string(c.NH) + " F=" + std::to_string(c.F) + " T=" + std::to_string(c.T) +
           " quant=" + quant_name(c.quant);
}
inline void check_config(const Config& c) {
    auto fail = [&](const std::string& why) { throw std::invalid_argument("fbi::Config (" + describe(c) + "): " + why); };
    if (c.V < 1 || c.C < 1 || c.L < 1 || c.NH < 1 || c.F < 1 || c.T < 1) fail("every size must be >= 1");
    if (c.C % c.NH != 0) fail("C must be divisible by NH");
    if ((c.C / c.NH) % 2 != 0) fail("head size C/NH must be even (RoPE rotates pairs)");
    if (!find_quantizer(c.quant)) fail(unknown_quantizer(c.quant));
}

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
// A T×hs block of a N×C matrix (one head of one sequence): rows are C apart.
template <class R> using HeadView = Eigen::Map<MatR<R>, 0, Eigen::OuterStride<>>;
template <class R> using ConstHeadView = Eigen::Map<const MatR<R>, 0, Eigen::OuterStride<>>;

// Below this many scalar operations an OpenMP fork/join (a few µs) costs more than it saves: every
// `parallel for` in the header carries `if (work >= kParallelMinWork)`. One-token decoding stays serial.
inline constexpr long kParallelMinWork = 1L << 15;
template <class R> void zero(std::vector<R>& v);  // v[i] = 0, both threads on a large v (defined below)
// Seconds on a steady clock (progress lines, benchmarks, StepTimes).
inline double now_seconds() {
    using clock = std::chrono::steady_clock;
    return std::chrono::duration<double>(clock::now().time_since_epoch()).count();
}

// =====================================================================================================
// §2 LAYERS — forward and backward side by side.
// Shapes in comments; `in`/`out` are N×(features) row-major; every d<x> is accumulated with +=.
// =====================================================================================================

// ---- threads: one contiguous range of [0, n) per thread, when the work pays for the fork ---------------------
// Each thread calls fn(i0, i1) on its own range; below the threshold (or inside a parallel region) fn(0, n) runs
// here. Eigen's own threads stay off: they spin-wait, and with one core busy elsewhere a step slows 10-50×.
template <class I, class F>
void split_ranges(I n, bool worth_a_fork, F&& fn) {
#ifdef _OPENMP
    if (worth_a_fork && omp_get_max_threads() > 1 && !omp_in_parallel()) {
#pragma omp parallel
        {
            long parts = omp_get_num_threads(), id = omp_get_thread_num();
            fn(I(long(n) * id / parts), I(long(n) * (id + 1) / parts));
        }
        return;
    }
#endif
    fn(I(0), n);
}
// Matrix products split the ROWS of their result, one single-threaded Eigen GEMM a block.
template <class F> void for_row_blocks(int rows, long work, F&& fn) {
    split_ranges(rows, work >= 16 * kParallelMinWork, fn);
}
// Element-wise work over [0, n).
template <class F> void for_ranges(long n, F&& fn) { split_ranges(n, n >= kParallelMinWork, fn); }

template <class R> void zero(std::vector<R>& v) {
    for_ranges(long(v.size()), [&](long i0, long i1) { std::fill(v.begin() + i0, v.begin() + i1, R(0)); });
}
template <class R> using ArrayMap = Eigen::Map<Eigen::Array<R, Eigen::Dynamic, 1>>;

// y[i] = exp(x[i]) for i < n, through Eigen's vectorized exp (std::exp is one library call per element, the
// largest cost of softmax and SwiGLU). Every element takes the same path, the tail through a padded packet, so a
// value never depends on where its buffer starts (an Eigen array expression would do the first, unaligned
// elements with std::exp instead, and a resumed run, whose buffers sit elsewhere, would differ in the last bit).
// y may be x.
template <class R>
void exp_into(R* y, const R* x, long n) {
    namespace ei = Eigen::internal;
    using P = typename ei::packet_traits<R>::type;
    constexpr int W = ei::packet_traits<R>::size;
    if constexpr (W == 1 || !ei::packet_traits<R>::HasExp) {
        for (long i = 0; i < n; i++) y[i] = std::exp(x[i]);
    } else {
        long i = 0;
        for (; i + W <= n; i += W) ei::pstoreu(y + i, ei::pexp(ei::ploadu<P>(x + i)));
        if (i < n) {
            R pad[W] = {};
            std::copy(x + i, x + n, pad);
            ei::pstoreu(pad, ei::pexp(ei::ploadu<P>(pad)));
            std::copy(pad, pad + (n - i), y + i);
        }
    }
}

// Σ_i a_i (· b_i · c_i …: the product of the arrays given, element by element) in 8 interleaved partial sums
// ("lanes") added in a fixed order at the end. One running sum is a chain of dependent additions (a float sum may
// not be reordered without -ffast-math, so the compiler keeps it scalar: about 4 cycles an element); the 8 lanes
// are one vector register, and the bits still do not depend on where the data sits in memory (a library reduction
// that first steps to an aligned address sums in an order that does, and a KV cache's address changes run to run).
template <class R> using Lanes = Eigen::Array<R, 8, 1>;
template <class R> Eigen::Map<const Lanes<R>> lanes_at(const R* x) { return Eigen::Map<const Lanes<R>>(x); }
template <class R, class... P>
R sum_lanes(long n, const R* a, const P*... b) {
    Lanes<R> lane = Lanes<R>::Zero();
    long i = 0;
    for (; i + 8 <= n; i += 8) lane += (lanes_at(a + i) * ... * lanes_at(b + i));
    R sum = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
    for (; i < n; i++) sum += (a[i] * ... * b[i]);
    return sum;
}

// ---- linear: out = in Wᵀ ------------------------------------------------------------------------------
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
    // dW sums over all N rows; it goes through them 192 at a time (one product each, in order): at N = 768 this
    // ran Eigen's product about 2× faster for 128×128 weights on the machines we measured (bench_train).
    constexpr int kRowsPerPass = 192;
    for_row_blocks(m, long(N) * n * m, [&](int r0, int r1) {  // rows of dW = columns r0..r1 of dout
        for (int t0 = 0; t0 < N; t0 += kRowsPerPass) {
            int rows = std::min(kRowsPerPass, N - t0);
            Eigen::Map<const MatR<R>, 0, Eigen::OuterStride<>> dout_cols(dout + size_t(t0) * m + r0, rows, r1 - r0,
                                                                         Eigen::OuterStride<>(m));
            MapMat<R>(dW + size_t(r0) * n, r1 - r0, n).noalias() +=
                dout_cols.transpose() * ConstMapMat<R>(in + size_t(t0) * n, rows, n);
        }
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
    // Two rows may share a token: threads split the columns (16 at a time), rows stay in order.
#pragma omp parallel for schedule(static) if (long(N) * C >= kParallelMinWork)
    for (int c0 = 0; c0 < C; c0 += 16)
        for (int t = 0; t < N; t++)
            for (int c = c0; c < std::min(C, c0 + 16); c++) dE[size_t(tokens[t]) * C + c] += dout[size_t(t) * C + c];
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
        R r = R(1) / std::sqrt(sum_lanes(C, x, x) / C + R(kNormEps));
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
        R r = rstd[t], dot = sum_lanes(C, g, dy, x);
        R k = r * r * r * dot / C;
        for (int c = 0; c < C; c++) dx[c] += r * g[c] * dy[c] - k * x[c];
    }
    // Every row adds into the same dg: threads split the columns (16 at a time), rows stay in order, summed in a
    // local block first (written into dg, which might alias the inputs, each step would go through memory).
#pragma omp parallel for schedule(static) if (long(N) * C >= kParallelMinWork)
    for (int c0 = 0; c0 < C; c0 += 16) {
        const int w = std::min(C - c0, 16);
        R sum[16] = {};
        for (int t = 0; t < N; t++)
            for (int c = 0; c < w; c++) sum[c] += dout[size_t(t) * C + c0 + c] * in[size_t(t) * C + c0 + c] * rstd[t];
        for (int c = 0; c < w; c++) dg[c0 + c] += sum[c];
    }
}

// ---- RoPE ([L2]), "rotate half": in each head, feature i < hs/2 pairs with i + hs/2, turned by pos·base^(−2i/hs):
//   x'_i = x_i cos − x_{i+hs/2} sin,   x'_{i+hs/2} = x_{i+hs/2} cos + x_i sin   (q(p)·k(p') depends on p − p' only).
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
// One row of causal attention probabilities: z[0 … seen−1] are its scores, z[seen … len−1] the future. Softmax over
// the positions seen (stable: the max first; a max is exact in any order, so vectorized); the future gets 0.
template <class R>
void softmax_prefix(R* z, int seen, int len) {
    R mx = ArrayMap<R>(z, seen).maxCoeff();
    for (int j = 0; j < seen; j++) z[j] -= mx;
    exp_into(z, z, seen);
    R sum = sum_lanes(seen, z);
    for (int j = 0; j < seen; j++) z[j] /= sum;
    std::fill(z + seen, z + len, R(0));  // causal mask: M = −∞ above the diagonal
}

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
        // scores S; written scale · (product), the scale is the product's own factor (no temporary, no extra pass)
        P.noalias() = scale * (Q * K.transpose());
        for (int i = 0; i < T; i++) softmax_prefix(&P(i, 0), i + 1, T);  // row i sees positions j <= i
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
        HeadView<R>(dq + off, T, hs, stride).noalias() += scale * (dS * K);
        HeadView<R>(dk + off, T, hs, stride).noalias() += scale * (dS.transpose() * Q);
    }
}

// ---- SwiGLU ([L4]): act = silu(gate) ⊙ up,  silu(g) = g·σ(g) -----------------------------------------------
template <class R> R sigmoid(R x) { return R(1) / (R(1) + std::exp(-x)); }
// act (n), sig (n) = σ(gate) saved for the backward, gate (n), up (n). sigmoid() above, with exp_into's exp.
template <class R>
void swiglu_forward(R* act, R* sig, const R* gate, const R* up, size_t n) {
    for_ranges(long(n), [&](long r0, long r1) {
        for (long i0 = r0; i0 < r1; i0 += 512) {  // 512 at a time, so that the four passes run in the L1 cache
            long i1 = std::min(r1, i0 + 512);
            for (long i = i0; i < i1; i++) sig[i] = -gate[i];
            exp_into(sig + i0, sig + i0, i1 - i0);  // exp(−gate)
            for (long i = i0; i < i1; i++) {
                sig[i] = R(1) / (R(1) + sig[i]);  // σ(gate)
                act[i] = gate[i] * sig[i] * up[i];
            }
        }
    });
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

// ---- residual: a += b ------------------------------------------------------------------------------------------
template <class R>
void add_inplace(R* a, const R* b, size_t n) {
#pragma omp parallel for schedule(static) if (long(n) >= kParallelMinWork)
    for (long i = 0; i < long(n); i++) a[i] += b[i];
}

// =====================================================================================================
// §3 QUANTIZERS — the one place where a block linear's latent parameters become the weight Ŵ used in
// the forward pass, and where ∂L/∂Ŵ is sent back to those parameters.
// =====================================================================================================

// >>> copy-paste fbi_linear (needs: <algorithm> <cmath> <cstddef>; kParallelMinWork)   the FBI-linear layer: [F1]–[F5]
// [F1]: sign(w) = +1 for w > 0, −1 otherwise: sign(0) = −1, since a packed bit (§9) cannot hold 0 (torch.sign,
// in the official code, gives 0; a latent weight is exactly 0 with probability ~0).
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
// [F5], identity straight-through estimator (no clipping), G = ∂L/∂Ŵ: ∂L/∂W_ij = α_j G_ij (sign passes the
// gradient unchanged, the chain rule keeps α), ∂L/∂α_j = Σ_i G_ij sign(W_ij), ∂L/∂β_j = Σ_i G_ij.
template <class R>
void fbi_backward(R* dW, R* dalpha, R* dbeta, const R* G, const R* W, const R* alpha, int m, int n) {
#pragma omp parallel for schedule(static) if (long(m) * n >= kParallelMinWork)
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) dW[size_t(i) * n + j] += alpha[j] * G[size_t(i) * n + j];  // [F5]
    // Every row adds into the same α, β: threads split the columns (16 at a time), rows stay in order, summed in
    // a local block first (written into dα, dβ, which might alias G, each step would go through memory).
#pragma omp parallel for schedule(static) if (long(m) * n >= kParallelMinWork)
    for (int j0 = 0; j0 < n; j0 += 16) {
        const int w = std::min(n - j0, 16);
        R sa[16] = {}, sb[16] = {};
        for (int i = 0; i < m; i++)
            for (int j = 0; j < w; j++) {
                R g = G[size_t(i) * n + j0 + j];
                sa[j] += g * sign_pm1(W[size_t(i) * n + j0 + j]);  // [F5] ∂L/∂α
                sb[j] += g;                                         // [F5] ∂L/∂β
            }
        for (int j = 0; j < w; j++) dalpha[j0 + j] += sa[j], dbeta[j0 + j] += sb[j];
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
        for (size_t w = 0; w < weights.size(); at += sizes[w], w++) {
            const R* W = weights[w];
            uint8_t* was = prev.data() + at;
            long n = long(sizes[w]), count = 0;  // an integer sum: the same whatever the threads
#pragma omp parallel for schedule(static) reduction(+ : count) if (n >= kParallelMinWork)
            for (long i = 0; i < n; i++) {
                uint8_t pos = W[i] > R(0);
                count += pos != was[i];
                was[i] = pos;
            }
            flips += size_t(count);
        }
        return first || total == 0 ? 0.0 : double(flips) / double(total);
    }
};

// ---- The quantizer interface: what the model asks of a block linear's quantizer ---------------------------------
// A quantizer turns a block linear's latent W (m×n) and at most two learnable scale vectors s1, s2 into the forward
// pass's Ŵ, sends ∂L/∂Ŵ back to them (its STE), and packs the trained layer into bit masks for §9's kernels. The
// model, the packed decoder and the files only go through this table, so a method of your own is one more table
// (README, "Adding your own quantizer"; FP and FBI's are in §10). Gradients are added (+=); null where noted.
struct PackedLinear;   // §9: one linear as bit masks and scales
struct PackedScratch;  // §9: one token's work buffers

template <class R> struct QuantOps {  // the training side, for one scalar type R (float, or double in the tests)
    void (*init)(R* s1, R* s2, const R* W, int m, int n) = nullptr;  // scales from the latent W; null: no scales
    void (*forward)(R* w_hat, const R* W, const R* s1, const R* s2, int m, int n) = nullptr;  // Ŵ
    void (*backward)(R* dW, R* ds1, R* ds2, const R* G, const R* W, const R* s1, const R* s2, int m, int n) = nullptr;
    //                ^ G = ∂L/∂Ŵ → ∂L/∂W, ∂L/∂s1, ∂L/∂s2 (the STE)
    void (*input)(R* xq, const R* x, int N, int n) = nullptr;  // quantize each of N input rows; null: x as it is
};
struct Quantizer {
    Quant id = Quant::FP;  // stored in checkpoint and packed files
    std::string name;      // "fbi": files' messages, describe(), train_tiny --student-quant
    std::string scale_name[2];         // tensor-name suffix of the learnable scales s1, s2 ("" = none)
    bool per_row[2] = {false, false};  // length m (one per output row) or n (one per input column)
    QuantOps<float> f32;
    QuantOps<double> f64;
    // Packed inference (§9). pack: p.m, p.n are set; fill p.mask[0 .. masks−1] and p.scale[0..1] (null: no packed
    // form). packed_forward: y = Ŵ x for one token. check: refuse a damaged file's linear (optional).
    int masks = 1;
    void (*packed_scale_sizes)(int m, int n, int sizes[2]) = nullptr;
    void (*pack)(PackedLinear& p, const float* W, const float* s1, const float* s2) = nullptr;
    void (*packed_forward)(const PackedLinear& p, const float* x, float* y, PackedScratch& ws) = nullptr;
    void (*check)(const PackedLinear& p, const std::string& what) = nullptr;

    template <class R> const QuantOps<R>& ops() const { if constexpr (std::is_same<R, float>::value) return f32; else return f64; }
};
// Length of the learnable scale vector k (0 or 1) of an m×n linear; 0 = none.
inline int scale_length(const Quantizer& q, int k, int m, int n) { return q.scale_name[k].empty() ? 0 : q.per_row[k] ? m : n; }

// =====================================================================================================
// §4 LOSSES ([D0]–[D2]). z are logits (N×V); every loss is a mean over the N positions.
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

// The losses the header knows (Mix = [D2], the official code's 2nd mode), and any other id: a plug-in's, registered
// in §10 (examples/quantizers/db.hpp registers DB-LLM's DAD as ids 3–5).
enum class Loss : int { CE = 0, AD = 1, Mix = 2 };
template <class R>
double plugin_loss(Loss kind, R* dlogits, R* probs_s, R* probs_t, const R* logits_s, const R* logits_t,
                   const int* targets, int N, int V, double grad_scale);
// One place that evaluates the chosen loss and adds its gradient (× grad_scale, e.g. 1/micro-batches) into
// dlogits. logits_t is the frozen teacher's (unused for CE). probs_s/probs_t are N×V scratch.
template <class R>
double loss_forward_backward(Loss kind, R* dlogits, R* probs_s, R* probs_t, const R* logits_s, const R* logits_t,
                             const int* targets, int N, int V, double grad_scale) {
    R scale = R(grad_scale / N);
    if (kind == Loss::CE) {
        double l = cross_entropy_forward(probs_s, logits_s, targets, N, V);
        cross_entropy_backward(dlogits, probs_s, targets, N, V, scale);
        return l;
    }
    if (kind != Loss::AD && kind != Loss::Mix)
        return plugin_loss(kind, dlogits, probs_s, probs_t, logits_s, logits_t, targets, N, V, grad_scale);

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

// The 7 linears of a block, in forward order, with their shapes (out m, in n): the one place that knows them.
enum LinearId {
    WQ = 0,  // (C, C)   q = ln1 Wqᵀ
    WK,      // (C, C)   k
    WV,      // (C, C)   v
    WO,      // (C, C)   attention output
    WGATE,   // (F, C)   SwiGLU gate
    WUP,     // (F, C)   SwiGLU up
    WDOWN,   // (C, F)   SwiGLU down
    N_LINEAR
};
inline const char* linear_name(int id) {
    static const char* names[N_LINEAR] = {"wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down"};
    return names[id];
}
inline void linear_shape(const Config& c, int id, int& m, int& n) {
    m = id == WGATE || id == WUP ? c.F : c.C;
    n = id == WDOWN ? c.F : c.C;
}

// One block linear: tensor indices of its latent W (m×n) and its quantizer's learnable scales (−1 = none), named
// by the quantizer: FBI's α, β (n each, [F2]) are "<linear>.alpha", "<linear>.beta".
struct LinearRef {
    int W = -1;
    int scale[2] = {-1, -1};
    int m = 0, n = 0;   // out, in
    size_t eff = 0;     // offset of Ŵ in ModelT::w_eff
};
// One block's weights:  attn_norm (C) · wq wk wv wo · mlp_norm (C) · w_gate w_up w_down.
struct BlockRef {
    int attn_norm = -1, mlp_norm = -1;
    std::array<LinearRef, N_LINEAR> lin;
};
// Saved activations of one block for rows N = B·T.
template <class R> struct BlockActs {
    std::vector<R> rstd1, ln1, q, k, v, att, atty, h, rstd2, ln2, gate, up, sig, act;
    std::vector<R> ln1q, attyq, ln2q, actq;  // only with a quantizer's input step: the inputs it made
};
// What a forward keeps. The backward reads every block's activations (Keep::All); a frozen teacher or an
// evaluation reads only the logits (Keep::Logits: "inference mode"), so its blocks take turns in ONE set of
// buffers and two residual streams, and a step touches 1/L of the activation memory it would otherwise.
enum class Keep : int { All = 0, Logits = 1 };
template <class R> struct Activations {
    int B = 0, T = 0;
    Keep kept = Keep::All;              // what the last forward kept (model_backward needs Keep::All)
    std::vector<std::vector<R>> resid;  // L+1 residual streams, N×C: resid[l] enters block l (Keep::Logits: l % 2)
    std::vector<BlockActs<R>> blocks;   // L (Keep::Logits uses blocks[0] for every block)
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
// with_grads = false leaves grads and dw_eff empty: a model only for inference, half the memory.
template <class R>
void layout_model(ModelT<R>& model, const Config& cfg, bool with_grads = true) {
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
    const Quantizer& q = quantizer(cfg.quant);
    for (int l = 0; l < cfg.L; l++) {
        std::string pre = "block" + std::to_string(l) + ".";
        BlockRef& blk = model.blocks[l];
        blk.attn_norm = add(pre + "attn_norm", 1, cfg.C, false);
        for (int id = 0; id < N_LINEAR; id++) {
            if (id == WGATE) blk.mlp_norm = add(pre + "mlp_norm", 1, cfg.C, false);
            LinearRef& lin = blk.lin[id];
            linear_shape(cfg, id, lin.m, lin.n);
            lin.W = add(pre + linear_name(id), lin.m, lin.n, true);
            for (int k = 0; k < 2; k++)  // FBI: α, β ∈ R^n, one per input column ([F2])
                if (int len = scale_length(q, k, lin.m, lin.n))
                    lin.scale[k] = add(pre + linear_name(id) + "." + q.scale_name[k], 1, len, false);
            lin.eff = eff;
            eff += size_t(lin.m) * lin.n;
        }
    }
    model.final_norm = add("final_norm", 1, cfg.C, false);
    model.lm_head = add("lm_head", cfg.V, cfg.C, true);
    model.params.assign(offset, R(0));
    model.grads.assign(with_grads ? offset : 0, R(0));
    model.w_eff.assign(eff, R(0));
    model.dw_eff.assign(with_grads ? eff : 0, R(0));
    rope_tables(model.rope_cos, model.rope_sin, cfg.T, cfg.C / cfg.NH);
    model.acts = Activations<R>{};
}

// The quantizer's scales from the latent W (after W is drawn or copied): [F4] for FBI's α, β.
template <class R>
void init_scales(ModelT<R>& model) {
    auto init = quantizer(model.cfg.quant).template ops<R>().init;
    if (!init) return;
    for (BlockRef& blk : model.blocks)
        for (LinearRef& lin : blk.lin)
            init(model.p_or_null(lin.scale[0]), model.p_or_null(lin.scale[1]), model.p(lin.W), lin.m, lin.n);
}

// [M0] init: every matrix N(0, 0.02²), norm gains 1; then the quantizer's scales from the latent W just drawn.
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
    init_scales(model);
    return model;
}

// Buffers for a B×T batch; Keep::Logits needs only one block's. Buffers a larger earlier call made are kept.
template <class R>
void ensure_activations(ModelT<R>& model, int B, int T, Keep keep = Keep::All) {
    Activations<R>& a = model.acts;
    const Config& c = model.cfg;
    size_t L = keep == Keep::All ? size_t(c.L) : 1;
    if (a.B == B && a.T == T && a.blocks.size() >= L) return;
    size_t N = size_t(B) * T, NC = N * c.C, NF = N * c.F, NV = N * c.V;
    a.B = B, a.T = T;
    a.resid.assign(L + 1, std::vector<R>(NC));
    a.blocks.assign(L, BlockActs<R>{});
    for (BlockActs<R>& s : a.blocks) {
        s.rstd1.resize(N); s.rstd2.resize(N);
        for (auto* v : {&s.ln1, &s.q, &s.k, &s.v, &s.atty, &s.h, &s.ln2}) v->resize(NC);
        for (auto* v : {&s.gate, &s.up, &s.sig, &s.act}) v->resize(NF);
        s.att.resize(size_t(B) * c.NH * T * T);
        if (quantizer(c.quant).template ops<R>().input) {
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
    auto forward = quantizer(model.cfg.quant).template ops<R>().forward;
    for (BlockRef& blk : model.blocks)
        for (LinearRef& lin : blk.lin)
            forward(model.w_eff.data() + lin.eff, model.p(lin.W), model.p_or_null(lin.scale[0]),
                    model.p_or_null(lin.scale[1]), lin.m, lin.n);
}
template <class R>
const R* weight_of(const ModelT<R>& model, const LinearRef& lin) { return model.w_eff.data() + lin.eff; }

// What a block linear multiplies: its input x, or x̃ when the quantizer has an input step (b1.58's int8
// activations). The forward makes x̃ with quantize_input; the backward uses the same x̃ for ∂L/∂Ŵ = gᵀ x̃ and
// passes ∂L/∂x̃ to x unchanged (identity STE), so only this pointer differs from a full-precision linear.
template <class R>
const R* linear_input(const ModelT<R>& model, const std::vector<R>& x, const std::vector<R>& xq) {
    return quantizer(model.cfg.quant).template ops<R>().input ? xq.data() : x.data();
}
template <class R>
const R* quantize_input(const ModelT<R>& model, const std::vector<R>& x, std::vector<R>& xq, int N, int n) {
    if (auto input = quantizer(model.cfg.quant).template ops<R>().input) input(xq.data(), x.data(), N, n);
    return linear_input(model, x, xq);
}

// One block, forward.  x (N×C) → out (N×C); its activations go to s.
template <class R>
void block_forward(ModelT<R>& model, int l, BlockActs<R>& s, R* out, const R* x) {
    const Config& c = model.cfg;
    Activations<R>& a = model.acts;
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

// The whole model, forward: tokens (B×T) → model.acts.logits (B×T×V). keep = Keep::Logits for a forward that
// no backward follows (a frozen teacher, an evaluation): the same logits, in 1/L of the activation buffers.
template <class R>
void model_forward(ModelT<R>& model, const int* tokens, int B, int T, Keep keep = Keep::All) {
    check_tokens(model, tokens, B, T);
    ensure_activations(model, B, T, keep);
    quantize_all(model);  // [F1]–[F2] (or Ŵ = W for full precision)
    Activations<R>& a = model.acts;
    const Config& c = model.cfg;
    int N = B * T;
    bool all = keep == Keep::All;
    a.kept = keep;
    auto stream = [&](int l) { return a.resid[all ? l : l % 2].data(); };  // the residual stream entering block l
    embedding_forward(stream(0), tokens, model.p(model.tok_emb), N, c.C);
    for (int l = 0; l < c.L; l++) block_forward(model, l, a.blocks[all ? l : 0], stream(l + 1), stream(l));
    rmsnorm_forward(a.lnf.data(), a.rstdf.data(), stream(c.L), model.p(model.final_norm), N, c.C);
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
    size_t NF = size_t(N) * F;
    auto W = [&](int id) { return weight_of(model, blk.lin[id]); };
    auto dW = [&](int id) { return model.dw_eff.data() + blk.lin[id].eff; };
    R* dres = a.dresid.data();
    // out = h + down(act): dh = dout (already in dres), dact = dout W_down
    zero(a.dact);
    matmul_backward(a.dact.data(), dW(WDOWN), dres, linear_input(model, s.act, s.actq), W(WDOWN), N, F, C);
    // act = silu(gate) ⊙ up
    zero(a.dgate), zero(a.dup);
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
    zero(a.dq), zero(a.dk), zero(a.dv);
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
}

// The whole model, backward. Needs model_forward on the same tokens and ∂L/∂logits in model.acts.dlogits.
// Adds every parameter's gradient into model.grads (zero them first with zero_grad).
template <class R>
void model_backward(ModelT<R>& model, const int* tokens) {
    Activations<R>& a = model.acts;
    const Config& c = model.cfg;
    if (a.kept != Keep::All)
        throw std::logic_error("fbi::model_backward: the last model_forward kept only the logits (Keep::Logits); "
                               "run it with Keep::All before a backward");
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
    // ∂L/∂Ŵ → ∂L/∂(W, scales): [F5] for FBI, the identity for full precision
    auto backward = quantizer(c.quant).template ops<R>().backward;
    for (BlockRef& blk : model.blocks)
        for (LinearRef& lin : blk.lin)
            backward(model.g(lin.W), model.g_or_null(lin.scale[0]), model.g_or_null(lin.scale[1]),
                     model.dw_eff.data() + lin.eff, model.p(lin.W), model.p_or_null(lin.scale[0]),
                     model.p_or_null(lin.scale[1]), lin.m, lin.n);
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
// [O1] for n ≤ kAdamSlice consecutive parameters, in double, m and v stored in fp32:
//   m ← β₁m + (1−β₁)g,  v ← β₂v + (1−β₂)g²,  p ← p·(1 − lr·wd) − lr·m̂/(√v̂ + ε),  m̂ = m/bc1, v̂ = v/bc2.
// The slice is copied to double buffers first, so that the divisions and the square root run as Eigen's vector
// instructions (a plain loop calls sqrt once per element); the same operations in the same order as one loop.
constexpr long kAdamSlice = 256;
template <class R>
void adamw_slice(R* p, float* m, float* v, const R* g, long n, const AdamW& opt, double lr, double wd, double bc1,
                 double bc2) {
    alignas(64) double G[kAdamSlice], M[kAdamSlice], Vv[kAdamSlice], P[kAdamSlice];
    for (long i = 0; i < n; i++) {
        G[i] = double(g[i]), P[i] = double(p[i]);
        M[i] = double(m[i] = float(opt.beta1 * m[i] + (1 - opt.beta1) * G[i]));
        Vv[i] = double(v[i] = float(opt.beta2 * v[i] + (1 - opt.beta2) * G[i] * G[i]));
    }
    ArrayMap<double> Pm(P, n), Mm(M, n), Vm(Vv, n);
    Pm = Pm * (1 - lr * wd) - lr * (Mm / bc1) / ((Vm / bc2).sqrt() + opt.eps);  // decoupled decay, then Adam's step
    for (long i = 0; i < n; i++) p[i] = R(P[i]);
}
// One AdamW update of every parameter. PyTorch's order: decay first (p -= lr·wd·p), then the Adam step.
template <class R>
void adamw_step(ModelT<R>& model, AdamW& opt, double lr) {
    size_t n = model.params.size();
    if (opt.m.size() != n) opt.m.assign(n, 0.f), opt.v.assign(n, 0.f), opt.t = 0;

    opt.t++;
    double bc1 = 1 - std::pow(opt.beta1, double(opt.t)), bc2 = 1 - std::pow(opt.beta2, double(opt.t));
    for (const TensorInfo& ti : model.tensors) {
        double wd = (opt.decay_on == DecayOn::All || ti.is_matrix) ? opt.weight_decay : 0.0;
        R* p = model.params.data() + ti.offset;
        const R* g = model.grads.data() + ti.offset;
        float* m = opt.m.data() + ti.offset;
        float* v = opt.v.data() + ti.offset;
        for_ranges(long(ti.size()), [&](long i0, long i1) {
            for (long a = i0; a < i1; a += kAdamSlice)
                adamw_slice(p + a, m + a, v + a, g + a, std::min(i1 - a, kAdamSlice), opt, lr, wd, bc1, bc2);
        });
    }
}

// Global gradient-norm clipping: if ‖g‖₂ > max_norm, scale every gradient by max_norm/‖g‖₂.
// Returns the norm before clipping (logged; NaN/inf here means the step must not be taken).
template <class R>
double clip_grad_norm(std::vector<R>& grads, double max_norm) {
    double part[8] = {};  // eight partial sums in a fixed order: vectorizable, and the same whatever the address
    size_t n = grads.size(), i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) part[k] += double(grads[i + k]) * double(grads[i + k]);
    for (; i < n; i++) part[i % 8] += double(grads[i]) * double(grads[i]);
    double norm = std::sqrt(((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7])));
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

// Training windows go through the data in EPOCHS (sampling without replacement): epoch e cuts the tokens, from a
// random offset, into K windows of T+1 tokens one T apart, visited in a random order, so every token is a target
// once per epoch (independent random starts would miss ~22% of them in the tiny run's 1.5 epochs). Window i is a
// pure function of (seed, i), so a run resumed at step k sees the batches the uninterrupted run would have seen.

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
    Schedule schedule;
    double clip = 1.0;
    int micro_batches = 1;  // gradient accumulation: each micro-batch's loss is divided by this ([D2])
    uint64_t seed = 1337;
};
struct StepStats { double loss = 0, grad_norm = 0, lr = 0, flip_ratio = 0; };
// Where a step's time goes, in seconds, added to over every step it is passed to (`make bench-train` prints it).
// forward and backward include making Ŵ and sending ∂L/∂Ŵ back through the quantizer (§3).
struct StepTimes { double batch = 0, forward = 0, teacher = 0, loss = 0, backward = 0, clip = 0, optimizer = 0, flips = 0; };
// Training hits NaN/inf: thrown BEFORE the update, so the parameters still hold the last good values.
struct NonFiniteError : std::runtime_error { using std::runtime_error::runtime_error; };
// One optimizer step: forward (and the teacher's forward for AD/Mix), loss, backward, clip, AdamW, flips.
// `step` is 0-based; the update it makes is number step+1 of the schedule.
template <class R>
StepStats train_step(ModelT<R>& model, ModelT<R>* teacher, AdamW& opt, FlipCounter& flips,
                     const std::vector<int>& data, const TrainOptions& o, long step, StepTimes* times = nullptr) {
    if (o.loss != Loss::CE && !teacher) throw std::invalid_argument("fbi::train_step: AD/Mix/DAD losses need a teacher");
    StepStats st;
    double t0 = times ? now_seconds() : 0;
    auto lap = [&](double StepTimes::*phase) {  // time since the last lap goes to `phase`
        if (!times) return;
        double t = now_seconds();
        times->*phase += t - t0;
        t0 = t;
    };
    std::vector<int> x, y;
    zero_grad(model);
    int N = o.B * o.T;
    for (int micro = 0; micro < o.micro_batches; micro++) {
        get_batch(x, y, data, o.B, o.T, o.seed, step * o.micro_batches + micro);
        lap(&StepTimes::batch);  // zeroing the gradients, cutting the batch
        model_forward(model, x.data(), o.B, o.T);
        lap(&StepTimes::forward);
        const R* logits_t = nullptr;
        if (teacher) {
            model_forward(*teacher, x.data(), o.B, o.T, Keep::Logits);  // frozen: forward only, no gradient
            logits_t = teacher->acts.logits.data();
            lap(&StepTimes::teacher);
        }
        Activations<R>& a = model.acts;
        zero(a.dlogits);
        st.loss += loss_forward_backward(o.loss, a.dlogits.data(), a.probs.data(), a.probs_teacher.data(),
                                         a.logits.data(), logits_t, y.data(), N, model.cfg.V, 1.0 / o.micro_batches) /
                   o.micro_batches;
        lap(&StepTimes::loss);
        model_backward(model, x.data());
        lap(&StepTimes::backward);
    }
    st.grad_norm = clip_grad_norm(model.grads, o.clip);
    lap(&StepTimes::clip);
    if (!std::isfinite(st.loss) || !std::isfinite(st.grad_norm))
        throw NonFiniteError("fbi: non-finite " + std::string(std::isfinite(st.loss) ? "gradient norm" : "loss") +
                             " at step " + std::to_string(step + 1) + " (loss " + std::to_string(st.loss) +
                             ", grad norm " + std::to_string(st.grad_norm) +
                             "); the update was not applied. Try a lower learning rate.");
    st.lr = lr_schedule(o.schedule, step + 1);
    adamw_step(model, opt, st.lr);
    lap(&StepTimes::optimizer);
    std::vector<const R*> ptrs;
    std::vector<size_t> sizes;
    latent_weights(model, ptrs, sizes);
    st.flip_ratio = flips.update(ptrs, sizes);  // [F6]
    lap(&StepTimes::flips);
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
        model_forward(model, x.data(), b_now, T, Keep::Logits);
        Activations<R>& a = model.acts;
        sum += cross_entropy_forward(a.probs.data(), a.logits.data(), y.data(), b_now * T, model.cfg.V) * b_now * T;
        positions += long(b_now) * T;
    }
    return sum / positions;
}

// =====================================================================================================
// §8 INFERENCE: one token at a time with a KV cache (GEMV-shaped work), many at once (prefill, GEMM-shaped), sampling.
// The linears are behind a callable `linear(l, id, x, y)` (y = Ŵ x for block l, linear id), so the same
// decoder runs the float model here and, later, the bit-packed model.
// =====================================================================================================

// Keys and values of the positions fed so far, per layer. The storage grows with the tokens (doubling, capped at
// the context T), so a short generation with a long context holds only the positions it used.
struct KVCache {
    int L = 0, T = 0, C = 0, pos = 0, cap = 0;  // pos = positions cached; cap = positions allocated
    std::vector<std::vector<float>> k, v;       // [layer]: cap × C
    void reset(int L_, int T_, int C_) {
        L = L_, T = T_, C = C_, pos = cap = 0;
        k.assign(L, {}), v.assign(L, {});
    }
    void reserve(int n) {  // room for positions 0 … n−1
        if (n <= cap) return;
        cap = std::min(T, std::max({n, 2 * cap, 64}));
        for (int l = 0; l < L; l++) k[l].resize(size_t(cap) * C), v[l].resize(size_t(cap) * C);
    }
    float* key(int l, int p) { return k[l].data() + size_t(p) * C; }
    float* value(int l, int p) { return v[l].data() + size_t(p) * C; }
};
// y = W x for one row-major m×n matrix: Eigen's (single-threaded) GEMV with the rows split over the threads,
// so that the fp32 decoder gets the same threads as the packed kernels. Built with BLAS, Eigen would pass this
// product to BLAS's sgemv, which ran these memory-bound rows 1.1-1.5x slower than Eigen's own kernel (README,
// `make bench`); so then we call Eigen's kernel by name: bit for bit what `y = W x` computes without BLAS.
inline void matvec_rows(float* y, const float* W, const float* x, int rows, int n) {
    Eigen::Map<const Eigen::VectorXf> xv(x, n);
#if defined(EIGEN_USE_BLAS)
    namespace ei = Eigen::internal;
    using Lhs = ei::const_blas_data_mapper<float, Eigen::Index, Eigen::RowMajor>;
    using Rhs = ei::const_blas_data_mapper<float, Eigen::Index, Eigen::ColMajor>;
    if (rows == 1) { y[0] = ConstMapMat<float>(W, 1, n).row(0).dot(xv); return; }  // what Eigen does for one row
    std::fill(y, y + rows, 0.0f);
    ei::general_matrix_vector_product<Eigen::Index, float, Lhs, Eigen::RowMajor, false, float, Rhs, false,
                                      Eigen::BuiltIn>::run(rows, n, Lhs(W, n), Rhs(x, 1), y, 1, 1.0f);
#else
    Eigen::Map<Eigen::VectorXf>(y, rows).noalias() = ConstMapMat<float>(W, rows, n) * xv;
#endif
}
inline void matvec(float* y, const float* W, const float* x, int m, int n) {
    for_row_blocks(m, long(m) * n, [&](int r0, int r1) { matvec_rows(y + r0, W + size_t(r0) * n, x, r1 - r0, n); });
}

// ---- E and H in the precision a file stores them: fp32, fp16 or int8 rows ([H1], [H2]) ----------------------
// The float model keeps the embedding E and the head H in fp32. A packed file may keep them in 16 bits (what the
// official FBI-LLM evaluation runs: it casts every parameter to float16) or in 8 bits with one scale per row. A
// decoder reads one row of E per token and all of H, so H's bytes are most of a 1-bit model's reading per token.
enum class RowFormat : uint32_t { F32 = 0, F16 = 1, I8 = 2 };
inline const char* row_format_name(RowFormat f) {
    return f == RowFormat::F32 ? "fp32" : f == RowFormat::F16 ? "fp16" : "int8";
}
inline float bits_to_float(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
inline uint32_t float_to_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }

// [H1] half → float, exact: the half's exponent and mantissa bits moved into a float's places give the value
// × 2^−112 (normals and subnormals alike), so one multiplication by 2^112 — exact, a power of two — restores it.
// Exponent 31 (∞, NaN) becomes 255, a NaN's payload kept and made quiet (as F16C's vcvtph2ps does).
inline float f16_to_f32(uint16_t h) {
    uint32_t sign = uint32_t(h & 0x8000u) << 16, em = h & 0x7fffu;
    uint32_t mag = em > 0x7c00u    ? (em << 13) | 0x7fc00000u
                 : em == 0x7c00u   ? 0x7f800000u
                                   : float_to_bits(bits_to_float(em << 13) * 0x1p112f);
    return bits_to_float(sign | mag);
}
// [H1] float → half: round to nearest, ties to even; beyond 65504 (from the midpoint 65520 on) ±∞; NaN stays NaN.
inline uint16_t f32_to_f16(float f) {
    uint32_t x = float_to_bits(f), sign = (x >> 16) & 0x8000u;
    x &= 0x7fffffffu;
    if (x > 0x7f800000u) return uint16_t(sign | 0x7e00u | ((x >> 13) & 0x3ffu));  // NaN (quiet)
    if (x >= 0x477ff000u) return uint16_t(sign | 0x7c00u);                       // ≥ 65520 (and ∞) → ∞
    if (x < 0x38800000u) {  // below 2^−14: a subnormal half m·2^−24 with m = round(|f|·2^24) (exact product)
        float m = bits_to_float(x) * 0x1p24f;
        m = (m + 0x1p23f) - 0x1p23f;  // rounds to an integer, ties to even (|m| < 2^23); m = 1024 is 2^−14, a normal
        return uint16_t(sign | uint32_t(m));
    }
    x += 0xfffu + ((x >> 13) & 1u);  // round the 13 dropped bits to nearest even; a carry moves into the exponent
    return uint16_t(sign | ((x - (112u << 23)) >> 13));  // exponent bias 127 → 15
}

// A rows × cols matrix in one of the formats, and the read-only view a decoder takes of it (or of an fp32 tensor).
struct RowMatrix {
    RowFormat format = RowFormat::F32;
    int rows = 0, cols = 0;
    std::vector<float> f32;     // F32
    std::vector<uint16_t> f16;  // F16: halves ([H1])
    std::vector<int8_t> i8;     // I8: codes c ([H2])
    std::vector<float> scale;   // I8: one per row, w_ij ≈ scale_i · c_ij
};
struct RowsView {
    RowFormat format = RowFormat::F32;
    int rows = 0, cols = 0;
    const void* data = nullptr;
    const float* scale = nullptr;  // I8 only
};
inline RowsView rows_view(const float* W, int rows, int cols) { return {RowFormat::F32, rows, cols, W, nullptr}; }
inline RowsView rows_view(const RowMatrix& M) {
    const void* data = M.format == RowFormat::F32 ? (const void*)M.f32.data()
                     : M.format == RowFormat::F16 ? (const void*)M.f16.data() : (const void*)M.i8.data();
    return {M.format, M.rows, M.cols, data, M.scale.data()};
}

// [H2] int8 rows: scale_i = max_j |w_ij| / 127, c_ij = round(w_ij / scale_i) ∈ [−127, 127] (a zero row: all 0).
inline void quantize_row_int8(const float* w, int n, int8_t* c, float* scale) {
    float mx = 0;
    for (int j = 0; j < n; j++) mx = std::max(mx, std::fabs(w[j]));
    *scale = mx / 127.f;
    for (int j = 0; j < n; j++) c[j] = mx > 0 ? int8_t(std::lrint(std::clamp(w[j] / *scale, -127.f, 127.f))) : 0;
}
constexpr int kMaxInt8RowCols = 1 << 17;  // int32 sums of ±127·±127 stay exact up to here
inline RowMatrix make_rows(const float* W, int rows, int cols, RowFormat f) {
    if (f == RowFormat::I8 && cols > kMaxInt8RowCols)
        throw std::invalid_argument("fbi::make_rows: int8 rows of " + std::to_string(cols) + " columns (at most 131072)");
    RowMatrix M;
    M.format = f, M.rows = rows, M.cols = cols;
    size_t n = size_t(rows) * cols;
    if (f == RowFormat::F32) M.f32.assign(W, W + n);
    if (f == RowFormat::F16) {
        M.f16.resize(n);
        for (size_t i = 0; i < n; i++) M.f16[i] = f32_to_f16(W[i]);  // [H1]
    }
    if (f == RowFormat::I8) {
        M.i8.resize(n), M.scale.resize(rows);
        for (int i = 0; i < rows; i++) quantize_row_int8(W + size_t(i) * cols, cols, &M.i8[size_t(i) * cols], &M.scale[i]);
    }
    return M;
}
// Row i back in fp32 (the embedding lookup [L6]; exact for F32 and F16, scale·c for I8).
inline void row_values(const RowsView& M, int i, float* out) {
    size_t o = size_t(i) * M.cols;
    if (M.format == RowFormat::F32) std::copy_n(static_cast<const float*>(M.data) + o, M.cols, out);
    if (M.format == RowFormat::F16)
        for (int j = 0; j < M.cols; j++) out[j] = f16_to_f32(static_cast<const uint16_t*>(M.data)[o + j]);
    if (M.format == RowFormat::I8)
        for (int j = 0; j < M.cols; j++) out[j] = M.scale[i] * float(static_cast<const int8_t*>(M.data)[o + j]);
}
inline RowMatrix convert_rows(const RowMatrix& M, RowFormat f) {
    if (M.format == f) return M;
    std::vector<float> W(size_t(M.rows) * M.cols);
    for (int i = 0; i < M.rows; i++) row_values(rows_view(M), i, &W[size_t(i) * M.cols]);
    return make_rows(W.data(), M.rows, M.cols, f);
}

// y = H x over rows r0 … r1−1, the plain loops (a fast kernel, §10, may bring its own; they are tested against these).
//   fp16: y_i = Σ_j half(H_ij)·x_j, summed in float.
//   int8 ([H2]): Σ_j c_ij q_j in int32, exact (|c|, |q| ≤ 127: ≤ 16,129·cols, cols ≤ 2^17), so every kernel
//   returns the same integers.
inline void rows_dot_f16(const uint16_t* H, int rows, int cols, const float* x, float* y) {
    for (int i = 0; i < rows; i++) {
        const uint16_t* h = H + size_t(i) * cols;
        float acc = 0;
        for (int j = 0; j < cols; j++) acc += f16_to_f32(h[j]) * x[j];
        y[i] = acc;
    }
}
inline void rows_dot_i8(const int8_t* Cm, int rows, int cols, const int8_t* q, int32_t* y) {
    for (int i = 0; i < rows; i++) {
        const int8_t* c = Cm + size_t(i) * cols;
        int32_t acc = 0;
        for (int j = 0; j < cols; j++) acc += int32_t(c[j]) * int32_t(q[j]);
        y[i] = acc;
    }
}
template <class R> R quantize_int8_absmax(const R* u, int n, int8_t* q);  // [Q2], §9
inline bool fast_rows_f16(const uint16_t* H, int rows, int cols, const float* x, float* y);  // §10: false when
inline bool fast_rows_i8(const int8_t* C, int rows, int cols, const int8_t* q, int32_t* y);   // no kernel has one
struct RowsScratch {
    std::vector<int8_t> q;
    std::vector<int32_t> acc;
};
// y = H x for the whole matrix, the threads splitting the rows: the LM head of a decode step ([M1]).
inline void rows_gemv(const RowsView& H, const float* x, float* y, RowsScratch& s) {
    const int cols = H.cols;
    const long work = long(H.rows) * cols;
    if (H.format == RowFormat::F32) return matvec(y, static_cast<const float*>(H.data), x, H.rows, cols);
    if (H.format == RowFormat::F16) {
        const uint16_t* h = static_cast<const uint16_t*>(H.data);
        return for_row_blocks(H.rows, work, [&](int r0, int r1) {
            if (!fast_rows_f16(h + size_t(r0) * cols, r1 - r0, cols, x, y + r0))
                rows_dot_f16(h + size_t(r0) * cols, r1 - r0, cols, x, y + r0);
        });
    }
    s.q.resize(cols), s.acc.resize(H.rows);
    const float sx = quantize_int8_absmax(x, cols, s.q.data());  // [Q2]: q = int8(x), x ≈ q / sx
    const int8_t* c = static_cast<const int8_t*>(H.data);
    for_row_blocks(H.rows, work, [&](int r0, int r1) {
        if (!fast_rows_i8(c + size_t(r0) * cols, r1 - r0, cols, s.q.data(), s.acc.data() + r0))
            rows_dot_i8(c + size_t(r0) * cols, r1 - r0, cols, s.q.data(), s.acc.data() + r0);
        for (int i = r0; i < r1; i++) y[i] = H.scale[i] * (float(s.acc[i]) / sx);  // [H2]
    });
}

// The full-precision pieces a decoder needs, and per-token scratch.
struct DecodeView {
    Config cfg;
    RowsView tok_emb;                   // V×C
    const float* final_norm = nullptr;  // C
    RowsView lm_head;                   // V×C
    std::vector<const float*> attn_norm, mlp_norm;  // L × (C)
};
// Sized once (resize), so a decode step allocates nothing.
struct DecodeScratch {
    std::vector<float> x, ln, q, k, v, atty, tmp, gate, up, sig, scores;
    RowsScratch head;
    void resize(const Config& c) {
        for (auto* b : {&x, &ln, &q, &k, &v, &atty, &tmp}) b->assign(c.C, 0.f);
        for (auto* b : {&gate, &up, &sig}) b->assign(c.F, 0.f);
        scores.assign(size_t(c.NH) * c.T, 0.f);  // one row per head: the heads may run on different threads
        head.q.resize(c.C), head.acc.resize(c.V);
    }
};

inline DecodeView decode_view(const Model& model) {
    DecodeView d;
    d.cfg = model.cfg;
    d.tok_emb = rows_view(model.p(model.tok_emb), model.cfg.V, model.cfg.C);
    d.final_norm = model.p(model.final_norm);
    d.lm_head = rows_view(model.p(model.lm_head), model.cfg.V, model.cfg.C);
    for (const BlockRef& blk : model.blocks) {
        d.attn_norm.push_back(model.p(blk.attn_norm));
        d.mlp_norm.push_back(model.p(blk.mlp_norm));
    }
    return d;
}

// [L3] for the one new row at position pos: per head, the scores against the cached keys 0 … pos, their softmax,
// the weighted sum of the cached values. The threads split the heads once the cache is long; scores: NH rows of T.
inline void decode_attention(float* out, const float* q, const float* K, const float* V, int pos, int C, int NH,
                             float* scores, int T) {
    const int hs = C / NH, len = pos + 1;
    const float scale = 1.f / std::sqrt(float(hs));
    for_row_blocks(NH, 2L * len * C, [&](int h0, int h1) {
        for (int h = h0; h < h1; h++) {
            const float* qh = q + h * hs;
            float* z = scores + size_t(h) * T;
            for (int j = 0; j < len; j++) z[j] = sum_lanes(hs, qh, K + size_t(j) * C + h * hs) * scale;
            softmax_prefix(z, len, len);
            float* o = out + h * hs;
            std::fill(o, o + hs, 0.f);
            for (int j = 0; j < len; j++) {  // o += p_j · v_j, element by element (vectorised, order fixed)
                const float w = z[j], *v = V + size_t(j) * C + h * hs;
                for (int i = 0; i < hs; i++) o[i] += w * v[i];
            }
        }
    });
}

// Feed token at position cache.pos; write logits (V). The same maths as block_forward with B = T = 1.
template <class LinearFn>
void decode_step(const DecodeView& d, LinearFn&& linear, KVCache& cache, DecodeScratch& s, int token,
                 float* logits, const float* rope_cos, const float* rope_sin) {
    const Config& c = d.cfg;
    int pos = cache.pos, C = c.C;
    if (token < 0 || token >= c.V)
        throw std::out_of_range("fbi::decode_step: token id " + std::to_string(token) + " outside [0, " +
                                std::to_string(c.V) + ")");
    if (pos >= c.T) throw std::out_of_range("fbi::decode_step: KV cache full (context T=" + std::to_string(c.T) + ")");
    cache.reserve(pos + 1);
    float rstd;
    row_values(d.tok_emb, token, s.x.data());  // [L6]
    for (int l = 0; l < c.L; l++) {
        float* kc = cache.key(l, 0);
        float* vc = cache.value(l, 0);
        rmsnorm_forward(s.ln.data(), &rstd, s.x.data(), d.attn_norm[l], 1, C);
        linear(l, WQ, s.ln.data(), s.q.data());
        linear(l, WK, s.ln.data(), kc + size_t(pos) * C);
        linear(l, WV, s.ln.data(), vc + size_t(pos) * C);
        rope_forward(s.q.data(), rope_cos, rope_sin, 1, 1, C, c.NH, pos);
        rope_forward(kc + size_t(pos) * C, rope_cos, rope_sin, 1, 1, C, c.NH, pos);
        decode_attention(s.atty.data(), s.q.data(), kc, vc, pos, C, c.NH, s.scores.data(), c.T);
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
    rows_gemv(d.lm_head, s.ln.data(), logits, s.head);  // logits = H · ln: a packed model's largest read
    cache.pos++;
}

// y = Ŵ x with the float model's effective weights (call quantize_all(model) once before decoding). With an
// input step (b1.58) the input is quantized first, exactly as in block_forward.
struct FloatLinear {
    const Model* model;
    mutable std::vector<float> xq = {};
    explicit FloatLinear(const Model* m) : model(m) {}
    void operator()(int l, int id, const float* x, float* y) const {
        const LinearRef& lin = model->blocks[l].lin[id];
        if (auto input = quantizer(model->cfg.quant).f32.input) {
            xq.resize(lin.n);
            input(xq.data(), x, 1, lin.n);
            x = xq.data();
        }
        matvec(y, weight_of(*model, lin), x, lin.m, lin.n);
    }
};

// ---- prefill: n tokens in one pass, GEMM-shaped — the maths of n decode_steps ------------------------------
// A prompt or a perplexity window is known in advance, so each linear runs once on n rows (a GEMM) instead of
// n times on one (GEMVs). `rows(l, id, X, n, Y)` computes Y = X Ŵᵀ for n rows (FloatRows below; PackedRows and
// UnpackedRows in §9).
// Causal attention of n new rows at positions p0 … p0+n−1 against the cache's first p0+n rows ([L3]).
inline void cached_attention(float* out, const float* q, const float* K, const float* V, int n, int p0, int C, int NH) {
    int hs = C / NH, len = p0 + n;
    float scale = 1.f / std::sqrt(float(hs));
    for_row_blocks(NH, 2L * n * len * C, [&](int h0, int h1) {  // threads split the heads
        MatR<float> S(n, len);
        for (int h = h0; h < h1; h++) {
            ConstHeadView<float> Q(q + h * hs, n, hs, Eigen::OuterStride<>(C));
            ConstHeadView<float> Kh(K + h * hs, len, hs, Eigen::OuterStride<>(C)), Vh(V + h * hs, len, hs, Eigen::OuterStride<>(C));
            S.noalias() = scale * (Q * Kh.transpose());
            for (int i = 0; i < n; i++) softmax_prefix(S.data() + size_t(i) * len, p0 + i + 1, len);  // row i sees 0 … p0+i
            HeadView<float>(out + h * hs, n, hs, Eigen::OuterStride<>(C)).noalias() = S * Vh;
        }
    });
}
struct PrefillScratch {
    std::vector<float> x, ln, rstd, q, atty, tmp, gate, up, sig;
    RowsScratch head;
    void resize(const Config& c, int n) {
        for (auto* b : {&x, &ln, &q, &atty, &tmp}) b->resize(size_t(n) * c.C);
        for (auto* b : {&gate, &up, &sig}) b->resize(size_t(n) * c.F);
        rstd.resize(n);
    }
};
// Feed tokens[0 … n−1] at positions cache.pos …; `logits` gets the last `logit_rows` rows' logits (logit_rows×V:
// all n for a perplexity window, 1 to generate after a prompt, 0 for none).
template <class RowsFn>
void prefill(const DecodeView& d, RowsFn&& rows, KVCache& cache, PrefillScratch& s, const int* tokens, int n,
             float* logits, int logit_rows, const float* rope_cos, const float* rope_sin) {
    const Config& c = d.cfg;
    int pos = cache.pos, C = c.C;
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= c.V)
            throw std::out_of_range("fbi::prefill: token id " + std::to_string(tokens[i]) + " outside [0, " + std::to_string(c.V) + ")");
    if (n < 1 || pos + n > c.T)
        throw std::out_of_range("fbi::prefill: " + std::to_string(n) + " tokens after " + std::to_string(pos) +
                                " do not fit the context T=" + std::to_string(c.T));
    cache.reserve(pos + n);
    s.resize(c, n);
    for (int i = 0; i < n; i++) row_values(d.tok_emb, tokens[i], s.x.data() + size_t(i) * C);  // [L6]
    for (int l = 0; l < c.L; l++) {
        rmsnorm_forward(s.ln.data(), s.rstd.data(), s.x.data(), d.attn_norm[l], n, C);
        rows(l, WQ, s.ln.data(), n, s.q.data());
        rows(l, WK, s.ln.data(), n, cache.key(l, pos));
        rows(l, WV, s.ln.data(), n, cache.value(l, pos));
        rope_forward(s.q.data(), rope_cos, rope_sin, 1, n, C, c.NH, pos);
        rope_forward(cache.key(l, pos), rope_cos, rope_sin, 1, n, C, c.NH, pos);
        cached_attention(s.atty.data(), s.q.data(), cache.key(l, 0), cache.value(l, 0), n, pos, C, c.NH);
        rows(l, WO, s.atty.data(), n, s.tmp.data());
        add_inplace(s.x.data(), s.tmp.data(), size_t(n) * C);
        rmsnorm_forward(s.ln.data(), s.rstd.data(), s.x.data(), d.mlp_norm[l], n, C);
        rows(l, WGATE, s.ln.data(), n, s.gate.data());
        rows(l, WUP, s.ln.data(), n, s.up.data());
        swiglu_forward(s.gate.data(), s.sig.data(), s.gate.data(), s.up.data(), size_t(n) * c.F);
        rows(l, WDOWN, s.gate.data(), n, s.tmp.data());
        add_inplace(s.x.data(), s.tmp.data(), size_t(n) * C);
    }
    if (logit_rows > 0) {
        size_t r0 = size_t(n - std::min(n, logit_rows)) * C;
        rmsnorm_forward(s.ln.data(), s.rstd.data(), s.x.data() + r0, d.final_norm, std::min(n, logit_rows), C);
        if (d.lm_head.format == RowFormat::F32)  // one GEMM
            matmul_forward(logits, s.ln.data(), static_cast<const float*>(d.lm_head.data), std::min(n, logit_rows), C, c.V);
        else
            for (int i = 0; i < std::min(n, logit_rows); i++)
                rows_gemv(d.lm_head, s.ln.data() + size_t(i) * C, logits + size_t(i) * c.V, s.head);
    }
    cache.pos += n;
}
// Y = X Ŵᵀ for n rows with the float model's effective weights (quantize_all first), as FloatLinear for one.
struct FloatRows {
    const Model* model;
    mutable std::vector<float> xq = {};
    void operator()(int l, int id, const float* X, int n, float* Y) const {
        const LinearRef& lin = model->blocks[l].lin[id];
        if (auto input = quantizer(model->cfg.quant).f32.input) {
            xq.resize(size_t(n) * lin.n);
            input(xq.data(), X, n, lin.n);
            X = xq.data();
        }
        matmul_forward(Y, X, weight_of(*model, lin), n, lin.n, lin.m);
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

// Nucleus (top-p) sampling [G1]: the smallest set of most likely tokens whose probabilities sum to at least
// top_p, renormalised. top_p >= 1 is sample_token; temperature <= 0 greedy.
inline int sample_token_top_p(const float* logits, int V, double temperature, double top_p, Rng& rng) {
    if (temperature <= 0 || top_p >= 1) return sample_token(logits, V, temperature, rng);
    double mx = *std::max_element(logits, logits + V), sum = 0;
    std::vector<std::pair<double, int>> p(V);
    for (int v = 0; v < V; v++) sum += (p[v].first = std::exp((logits[v] - mx) / temperature)), p[v].second = v;
    std::sort(p.begin(), p.end(), [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); });
    double kept = 0;
    size_t k = 0;
    while (k < p.size() && (k == 0 || kept < top_p * sum)) kept += p[k++].first;  // [G1]: the nucleus
    double r = rng.uniform() * kept;
    for (size_t i = 0; i < k; i++)
        if ((r -= p[i].first) < 0) return p[i].second;
    return p[k - 1].second;
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
// One token needs y = W_b·q: W_b ∈ {−1,+1}^{m×n} (PyTorch's [out, in]), q ∈ int8^n (the token's u = α ⊙ x by
// [Q2], [P1]), y ∈ int32^m, exact (dequantised by one multiply with 1/s). Two kernels give the same int32 bits:
// gemv_reference (the definition: a ±1 float matrix, the obvious loop) and gemv_popcount (8 activation bit
// planes, AND + popcount per 64 columns: the one to study). Faster ones are plug-ins (FastKernel, §10);
// `make bench` times each against Eigen's fp32 GEMV, with the per-token quantization and planes included.

// A second thread only pays above about a million weights (bench_gemv measures it).
inline constexpr long kParallelMinWeights = 1L << 20;

// >>> copy-paste popcount (needs: <algorithm> <cassert> <cmath> <cstddef> <cstdint> <vector>; kParallelMinWeights)   pack, int8 [Q2], [S7] GEMV
// [S7]: each row of W_b packed into 64-bit words along the input dimension, bit = 1 for +1: row i is
// bits[i*words .. i*words + words−1], column j is bit j % 64 of word j / 64. [F1]: w == 0 (and −0) is bit 0 = −1.
// Padding: the unused high bits of each row's last word are always 0, so they never count in popcount(W & ·).
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
// [F1] + [S7]: W (rows × cols, row-major floats, the latent weights) → packed sign bits; sign(0) = −1 → bit 0.
inline PackedSigns pack_signs(const float* W, int rows, int cols) {
    return pack_bits(rows, cols, [&](int i, int j) { return W[(size_t)i * cols + j] > 0.0f; });
}
// The ±1 value stored for W_b[i][j].
inline float unpacked_sign(const PackedSigns& P, int i, int j) {
    uint64_t word = P.bits[(size_t)i * P.words + j / 64];
    return ((word >> (j % 64)) & 1) ? 1.0f : -1.0f;
}

// [Q2], per token (one row u of n values): s = 127 / max(max_j |u_j|, 1e-5), q_j = clamp(round(s·u_j), −128, 127);
// returns s (dequantise: q / s). std::nearbyint rounds half to even, as torch.round does. The max |u| maps to
// ±127, so the clamp is a safeguard (−128 is never made here, but every kernel accepts it). u = 0 gives q = 0.
template <class R>
R quantize_int8_absmax(const R* u, int n, int8_t* q) {
    // max_j |u_j| in 8 independent running maxima, so that the compiler can use one 8-wide vector max.
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

// The reference kernel, the definition every other kernel is tested against. [S7]: y_i = Σ_j W_b,ij · q_j with W_b given as ±1 floats (rows × cols, row-major), exact in int32.
inline void gemv_reference(const float* Wsign, int rows, int cols, const int8_t* q, int32_t* y) {
    for (int i = 0; i < rows; i++) {
        int32_t sum = 0;
        for (int j = 0; j < cols; j++)
            sum += (Wsign[(size_t)i * cols + j] > 0.0f) ? q[j] : -q[j];  // ±1 · q_j, no float rounding
        y[i] = sum;
    }
}

// [S7]: q_j = o_j − 128 with o_j = q_j + 128 ∈ [0, 255], split into 8 bit planes: bit j of plane k is bit k of o_j;
// word w of plane k is planes[k*words + w]; padding bits are 0 in every plane. sum_q = Σ_j q_j.
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

// 1 bits in a word: GCC/Clang's builtin (std::popcount is C++20); one POPCNT instruction with -march=native.
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
    [[maybe_unused]] const long work = (long)W.rows * W.cols;
#pragma omp parallel for schedule(static) if (work >= kParallelMinWeights)
    for (int i = 0; i < W.rows; i++) y[i] = dot_popcount_row(&W.bits[(size_t)i * W.words], A);
}
// <<< copy-paste popcount

// A faster kernel is a plug-in (FastKernel, §10) that Kernel::Fast runs through these three; with none
// registered, Kernel::Fast is gemv_popcount. Each must give the same bits as gemv_reference (tested).
struct FastKernel;
inline const FastKernel* fast_kernel();                                          // the last one registered, or null
inline std::shared_ptr<const void> fast_weights(const PackedSigns& bits);        // once per mask, at pack or load
inline std::shared_ptr<const void> fast_acts(const int8_t* q, int n);            // once per token and linear
inline void fast_gemv(const PackedSigns& bits, const void* w, const void* a, int32_t* y);  // y_i = Σ_j ±q_j
inline bool has_fast_gemm();  // the registered kernel has a multi-token form:
inline void fast_gemm(const PackedSigns& bits, const void* w, const void* const* acts, int n, int32_t* Y);  // Y[t·m+i]

// ---- the packed model: a trained student with its block-linear weights as bit masks -----------------------
// Each block linear keeps the bit masks its quantizer packs (FBI: one, sign(W), bit 1 = +1) and its scales
// (FBI: α, β per input column); norms stay fp32, embedding and LM head fp32, fp16 or int8 (set_row_formats). A {0,1} mask's sum follows exactly from
// the ±1 sum every kernel computes, which is how a plug-in runs masks meaning "code = +1" or "B = 1":
//   Σ_{bit_j = 1} q_j = (Σ_j (2·bit_j − 1) q_j + Σ_j q_j) / 2          (the numerator is always even)
enum class Kernel : int { Reference = 0, Popcount = 1, Fast = 2 };
inline const char* kernel_name(Kernel k) {
    return k == Kernel::Reference ? "reference" : k == Kernel::Popcount ? "popcount" : "fast";
}
struct PackedLinear {
    Quant quant = Quant::FBI;
    int m = 0, n = 0;
    PackedSigns mask[2];                      // FBI: mask[0] = sign(W) ([F1], sign(0) = −1); mask[1] unused
    std::shared_ptr<const void> fast[2];      // the fast kernel's layout of each mask (made at load, not stored)
    std::vector<float> scale[2];              // FBI: α, β per input column (n each)
};
struct PackedModel {
    Config cfg;
    int scale_bits = 32;  // how the file stores the scales: 32 = fp32, 1..8 = a 2^bits-level codebook (plug-in; §11)
    std::string vocab;
    RowMatrix tok_emb, lm_head;  // V×C each, fp32 / fp16 / int8 ([H1], [H2]): set_row_formats
    std::vector<float> final_norm;
    std::vector<std::vector<float>> attn_norm, mlp_norm;
    std::vector<std::array<PackedLinear, N_LINEAR>> lin;  // [layer][linear id]
    std::vector<float> rope_cos, rope_sin;
};

// The registered fast kernel's own layout of a linear's masks (nothing when no kernel is registered).
inline void prepare_fast(PackedLinear& p) {
    if (fast_kernel())
        for (int i = 0; i < 2; i++)
            if (p.mask[i].rows) p.fast[i] = fast_weights(p.mask[i]);  // the masks the quantizer filled
}

// A large model's packed weights, halved in memory: once the registered fast kernel holds its own layout of a
// mask, the portable bits are needed only by Kernel::Reference, Kernel::Popcount, fbi_unpack and saving, which
// then refuse. (7B: 0.8 GB of 1-bit weights instead of 1.6 GB.)
inline void drop_portable_masks(PackedLinear& p) {
    for (int k = 0; k < 2; k++)
        if (p.fast[k]) std::vector<uint64_t>().swap(p.mask[k].bits);
}
inline void drop_portable_masks(PackedModel& pm) {
    for (auto& layer : pm.lin)
        for (PackedLinear& p : layer) drop_portable_masks(p);
}
inline bool has_portable_masks(const PackedLinear& p) { return p.mask[0].rows == 0 || !p.mask[0].bits.empty(); }

// Bit masks and scales of one trained linear, made by its quantizer from the same codes its training forward
// used, so the packed weights are exactly the trained Ŵ.
inline void pack_linear(PackedLinear& p, Quant quant, const float* W, const float* s1, const float* s2, int m, int n) {
    const Quantizer& q = quantizer(quant);
    if (!q.pack)
        throw std::invalid_argument("fbi::pack_model: " + std::string(quant == Quant::FP ? "a full-precision" : q.name) +
                                    " model has no packed form (quantize it first)");
    p = PackedLinear{};
    p.quant = quant, p.m = m, p.n = n;
    q.pack(p, W, s1, s2);
    prepare_fast(p);
}

// The scales stay fp32, so the int8 activation is the only approximation ([P1]); pack_model(model, vocab, bits)
// in §10 rounds them to a codebook.
inline PackedModel pack_model(const Model& model, const std::string& vocab) {
    PackedModel pm;
    pm.cfg = model.cfg;
    pm.vocab = vocab;
    auto copy = [&](int t) { return std::vector<float>(model.p(t), model.p(t) + model.tensors[t].size()); };
    const Config& c = model.cfg;
    pm.tok_emb = make_rows(model.p(model.tok_emb), c.V, c.C, RowFormat::F32);
    pm.final_norm = copy(model.final_norm);
    pm.lm_head = make_rows(model.p(model.lm_head), c.V, c.C, RowFormat::F32);
    pm.lin.resize(model.cfg.L);
    for (int l = 0; l < model.cfg.L; l++) {
        const BlockRef& blk = model.blocks[l];
        pm.attn_norm.push_back(copy(blk.attn_norm));
        pm.mlp_norm.push_back(copy(blk.mlp_norm));
        for (int id = 0; id < N_LINEAR; id++) {
            const LinearRef& ref = blk.lin[id];
            PackedLinear& p = pm.lin[l][id];
            pack_linear(p, model.cfg.quant, model.p(ref.W), model.p_or_null(ref.scale[0]),
                        model.p_or_null(ref.scale[1]), ref.m, ref.n);
        }
    }
    rope_tables(pm.rope_cos, pm.rope_sin, pm.cfg.T, pm.cfg.C / pm.cfg.NH);
    return pm;
}

// E and H in the formats a file is to store ([H1], [H2]). pack_model leaves both fp32; the programs that write
// packed files default to fp16. Converting from fp16 or int8 starts from their fp32 values.
inline void set_row_formats(PackedModel& pm, RowFormat emb, RowFormat head) {
    pm.tok_emb = convert_rows(pm.tok_emb, emb);
    pm.lm_head = convert_rows(pm.lm_head, head);
}

inline DecodeView decode_view(const PackedModel& pm) {
    DecodeView d;
    d.cfg = pm.cfg;
    d.tok_emb = rows_view(pm.tok_emb);
    d.final_norm = pm.final_norm.data();
    d.lm_head = rows_view(pm.lm_head);
    for (int l = 0; l < pm.cfg.L; l++) {
        d.attn_norm.push_back(pm.attn_norm[l].data());
        d.mlp_norm.push_back(pm.mlp_norm[l].data());
    }
    return d;
}

// One token's int8 activations in the form each kernel reads (built once, shared by every mask of a linear).
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
    if (kernel == Kernel::Fast) a.fast = fast_acts(a.q.data(), n);
}
// y_i = Σ_j (2·bit_ij − 1) q_j with the chosen kernel; every kernel gives the same int32 bits.
inline void signed_gemv(Kernel kernel, const PackedSigns& P, const void* fast_layout, const TokenActs& a, int32_t* y,
                        std::vector<float>& scratch) {
    kernel = effective_kernel(kernel);
    if (kernel != Kernel::Fast && P.bits.empty() && P.rows)
        throw std::logic_error(std::string("fbi: Kernel::") + kernel_name(kernel) + " needs the portable masks, dropped for the fast kernel");
    if (kernel == Kernel::Reference) {
        scratch.resize(size_t(P.rows) * P.cols);
        for (int i = 0; i < P.rows; i++)
            for (int j = 0; j < P.cols; j++) scratch[size_t(i) * P.cols + j] = unpacked_sign(P, i, j);
        gemv_reference(scratch.data(), P.rows, P.cols, a.q.data(), y);
    } else if (kernel == Kernel::Popcount) {
        gemv_popcount(P, a.planes, y);
    } else {
        fast_gemv(P, fast_layout, a.fast.get(), y);
    }
}

// The work buffers of one packed linear call, and the step every quantizer's packed_forward shares.
struct PackedScratch {
    Kernel kernel = Kernel::Fast;
    std::vector<float> u, scratch;
    std::vector<int32_t> acc[2];  // acc[k][i] = Σ_j (2·mask_k,ij − 1) q_j
    TokenActs a;
};
// Quantize one token's input u ([Q2]) and run every mask of p on it: fills ws.acc, returns the scale s (q = s·u).
inline float packed_signed_sums(const PackedLinear& p, const float* u, PackedScratch& ws) {
    ws.a.q.resize(p.n);
    float s = quantize_int8_absmax(u, p.n, ws.a.q.data());  // [P1]: the only approximation
    prepare_token_acts(ws.a, ws.kernel, p.n);
    for (int k = 0; k < 2 && p.mask[k].rows; k++) {  // the masks the quantizer filled (FBI: 1)
        ws.acc[k].resize(p.m);
        signed_gemv(ws.kernel, p.mask[k], p.fast[k].get(), ws.a, ws.acc[k].data(), ws.scratch);
    }
    return s;
}

// FBI packed ([P1]): fold α into the activation, u = α ⊙ x; then y_i = (Σ_j b_ij q_j)/s + β·x.
inline void fbi_packed_forward(const PackedLinear& p, const float* x, float* y, PackedScratch& ws) {
    const std::vector<float>& alpha = p.scale[0];
    const std::vector<float>& beta = p.scale[1];
    ws.u.resize(p.n);
    float beta_x = 0;
    for (int j = 0; j < p.n; j++) {
        ws.u[j] = alpha[j] * x[j];  // [P1]: u = α ⊙ x
        beta_x += beta[j] * x[j];   // [F3]: the β term, one scalar shared by every output
    }
    float s = packed_signed_sums(p, ws.u.data(), ws);
    for (int i = 0; i < p.m; i++) y[i] = float(ws.acc[0][i]) / s + beta_x;  // [P1]: y = Σ b q / s + β·x
}
inline void fbi_pack(PackedLinear& p, const float* W, const float* alpha, const float* beta) {
    p.mask[0] = pack_signs(W, p.m, p.n);  // [F1]
    p.scale[0].assign(alpha, alpha + p.n);
    p.scale[1].assign(beta, beta + p.n);
}

// y = Ŵ x for one token through the packed weights, by the linear's quantizer. The int8 rounding of the
// activation is the only approximation of FBI (trained in float); the integer sums are exact in every kernel.
struct PackedLinearFn {
    const PackedModel* pm;
    mutable PackedScratch ws;
    explicit PackedLinearFn(const PackedModel* model, Kernel k = Kernel::Fast) : pm(model) { ws.kernel = k; }
    void operator()(int l, int id, const float* x, float* y) const {
        const PackedLinear& p = pm->lin[l][id];
        quantizer(p.quant).packed_forward(p, x, y, ws);
    }
};
inline std::vector<int> generate(const PackedModel& pm, const std::vector<int>& prompt, int n_new, double temperature,
                                 uint64_t seed, Kernel kernel = Kernel::Fast) {
    return generate(decode_view(pm), PackedLinearFn{&pm, kernel}, pm.rope_cos.data(), pm.rope_sin.data(), prompt,
                    n_new, temperature, seed);
}

// ---- prefill through the packed model (§8's prefill), two ways; examples/llama/perplexity.cpp measures both --
// FBI packed ([P1]) for n tokens at once, the same numbers as n calls of fbi_packed_forward: each token's u, q and
// the fast kernel's form of q are made first, then one multi-token call (fast_gemm) reads each block of weights
// once for a block of tokens instead of once per token.
inline void fbi_packed_rows(const PackedLinear& p, const float* X, int n, float* Y) {
    std::vector<std::shared_ptr<const void>> acts(n);
    std::vector<const void*> act_ptrs(n);
    std::vector<float> s(n), beta_x(n);
    std::vector<int32_t> acc(size_t(n) * p.m);
    for_row_blocks(n, long(n) * p.n * 16, [&](int t0, int t1) {
        std::vector<float> u(p.n);
        std::vector<int8_t> q(p.n);
        for (int t = t0; t < t1; t++) {
            const float* x = X + size_t(t) * p.n;
            float bx = 0;
            for (int j = 0; j < p.n; j++) u[j] = p.scale[0][j] * x[j], bx += p.scale[1][j] * x[j];  // [P1], [F3]
            beta_x[t] = bx;
            s[t] = quantize_int8_absmax(u.data(), p.n, q.data());  // [Q2]
            acts[t] = fast_acts(q.data(), p.n), act_ptrs[t] = acts[t].get();
        }
    });
    fast_gemm(p.mask[0], p.fast[0].get(), act_ptrs.data(), n, acc.data());  // acc[t·m + i] = Σ_j b_ij q_tj
    for (int t = 0; t < n; t++)
        for (int i = 0; i < p.m; i++) Y[size_t(t) * p.m + i] = float(acc[size_t(t) * p.m + i]) / s[t] + beta_x[t];  // [P1]
}
// PackedRows: the 1-bit kernels for n rows — exactly what decoding computes. FBI with a fast kernel that has a
// multi-token form: fbi_packed_rows; otherwise token by token, the threads splitting the tokens.
struct PackedRows {
    const PackedModel* pm;
    Kernel kernel = Kernel::Fast;
    void operator()(int l, int id, const float* X, int n, float* Y) const {
        const PackedLinear& p = pm->lin[l][id];
        if (effective_kernel(kernel) == Kernel::Fast && p.quant == Quant::FBI && has_fast_gemm())
            return fbi_packed_rows(p, X, n, Y);
        for_row_blocks(n, long(n) * p.m * p.n / 8, [&](int r0, int r1) {  // / 8: a bit is cheaper than a float
            PackedLinearFn one(pm, kernel);
            for (int r = r0; r < r1; r++) one(l, id, X + size_t(r) * p.n, Y + size_t(r) * p.m);
        });
    }
};
// Ŵ = α ⊙ sign(W) + β back in fp32 from an FBI linear's mask and scales ([F2]): m×n, row-major.
inline void fbi_unpack(const PackedLinear& p, float* W) {
    if (p.quant != Quant::FBI || p.mask[0].bits.empty())
        throw std::invalid_argument("fbi::fbi_unpack: needs an FBI linear with its bit mask");
    const float* alpha = p.scale[0].data();
    const float* beta = p.scale[1].data();
    for_row_blocks(p.m, long(p.m) * p.n, [&](int r0, int r1) {
        for (int i = r0; i < r1; i++)
            for (int j = 0; j < p.n; j++) W[size_t(i) * p.n + j] = alpha[j] * unpacked_sign(p.mask[0], i, j) + beta[j];
    });
}
// UnpackedRows: each FBI linear unpacked to fp32 (one at a time, in `w`), then one GEMM: the float model's
// numbers (no int8 activations) from the 1-bit file.
struct UnpackedRows {
    const PackedModel* pm;
    mutable std::vector<float> w;
    void operator()(int l, int id, const float* X, int n, float* Y) const {
        const PackedLinear& p = pm->lin[l][id];
        w.resize(size_t(p.m) * p.n);
        fbi_unpack(p, w.data());
        matmul_forward(Y, X, w.data(), n, p.n, p.m);
    }
};

// =====================================================================================================
// PART II — EXTENSION POINTS AND FILES. Part I above is the paper's path, complete. Part II holds what a reader
// needs only to extend the header or to store a model: the registries the plug-ins fill (quantizers, losses,
// fast kernels, scale codecs) with the FP and FBI tables, helpers the examples share, and the two file formats
// with their hardening. Part I calls Part II only through the functions it declares (quantizer, find_quantizer,
// quant_name, unknown_quantizer, plugin_loss, fast_kernel, fast_weights, fast_acts, fast_gemv).
// §10 REGISTRIES: the tables plug-ins add themselves to, at static initialisation
// =====================================================================================================

// ---- quantizers (§3's interface) ----------------------------------------------------------------------------
// The registry. FP and FBI are defined with the packed code (§9) and are always there; a plug-in adds its table
// once, at static initialisation (inline const bool registered = register_quantizer(...)).
inline Quantizer fp_quantizer();
inline Quantizer fbi_quantizer();
inline std::vector<Quantizer>& quantizers() {
    static std::vector<Quantizer> registered = {fp_quantizer(), fbi_quantizer()};
    return registered;
}
// What is missing from a quantizer's table ("" = nothing): the model calls forward and backward unconditionally,
// the packed path every packed function once pack is set.
inline std::string quantizer_table_problem(const Quantizer& q) {
    if (q.name.empty()) return "has no name";
    if (!q.f32.forward || !q.f32.backward || !q.f64.forward || !q.f64.backward) return "needs forward and backward for float and double";
    for (int k = 0; k < 2; k++)
        if (!q.scale_name[k].empty() && (!q.f32.init || !q.f64.init)) return "has scales but no init";
    if (q.pack && (!q.packed_forward || !q.packed_scale_sizes || q.masks < 1 || q.masks > 2))
        return "packs, so it needs packed_forward, packed_scale_sizes and 1 or 2 masks";
    return "";
}
inline bool register_quantizer(Quantizer q) {
    std::string problem = quantizer_table_problem(q);
    if (!problem.empty()) throw std::logic_error("fbi::register_quantizer: '" + q.name + "' " + problem);
    for (const Quantizer& have : quantizers())
        if (have.id == q.id || have.name == q.name)
            throw std::logic_error("fbi::register_quantizer: id " + std::to_string(int(q.id)) + " or name '" + q.name +
                                   "' is taken by '" + have.name + "'");
    quantizers().push_back(std::move(q));
    return true;
}
inline const Quantizer* find_quantizer(Quant id) {
    for (const Quantizer& q : quantizers())
        if (q.id == id) return &q;
    return nullptr;
}
inline std::string unknown_quantizer(Quant id, const std::string& kind) {
    return "unknown " + kind + "quantizer id " + std::to_string(int(id)) +
           " (not registered; b1.58 = 2 and db = 3 register in examples/quantizers/b158.hpp and db.hpp)";
}
inline const Quantizer& quantizer(Quant id) {
    const Quantizer* q = find_quantizer(id);
    if (!q) throw std::invalid_argument("fbi: " + unknown_quantizer(id));
    return *q;
}
inline const char* quant_name(Quant id) {
    const Quantizer* q = find_quantizer(id);
    return q ? q->name.c_str() : "?";
}
// Parse a registered name ("fp" is fp32 too); throws on anything else.
inline Quant quant_from_name(const std::string& s) {
    std::string known;
    for (const Quantizer& q : quantizers()) {
        if (s == q.name || (s == "fp" && q.id == Quant::FP)) return q.id;
        known += (known.empty() ? "" : ", ") + q.name;
    }
    throw std::invalid_argument("unknown quantizer '" + s + "' (registered: " + known + ")");
}
// ---- the header's two quantizers as tables: FP and FBI (§3's functions, §9's packed forward) --------------
// The two training tables of the header. FP: Ŵ = W, and the gradient passes as it is. FBI: [F4], [F2], [F5].
template <class R> void copy_forward(R* w_hat, const R* W, const R*, const R*, int m, int n) {
    for_ranges(long(m) * n, [&](long i0, long i1) { std::copy(W + i0, W + i1, w_hat + i0); });
}
// Identity STE: ∂L/∂W = ∂L/∂Ŵ (full precision; also b1.58's [Q3]).
template <class R> void identity_backward(R* dW, R*, R*, const R* G, const R*, const R*, const R*, int m, int n) {
    for_ranges(long(m) * n, [&](long i0, long i1) {
        for (long i = i0; i < i1; i++) dW[i] += G[i];
    });
}
template <class R> QuantOps<R> fp_ops() { return {nullptr, &copy_forward<R>, &identity_backward<R>, nullptr}; }
template <class R> QuantOps<R> fbi_ops() {
    QuantOps<R> o;
    o.init = &fbi_init<R>;        // [F4]
    o.forward = &fbi_forward<R>;  // [F2]
    o.backward = [](R* dW, R* dalpha, R* dbeta, const R* G, const R* W, const R* alpha, const R*, int m, int n) {
        fbi_backward(dW, dalpha, dbeta, G, W, alpha, m, n);  // [F5]
    };
    return o;
}

// The two quantizers of this header, as tables (§3).
inline Quantizer fp_quantizer() {
    Quantizer q;
    q.id = Quant::FP;
    q.name = "fp32";
    q.f32 = fp_ops<float>();
    q.f64 = fp_ops<double>();
    q.masks = 0;  // no packed form: pack stays null
    return q;
}
inline Quantizer fbi_quantizer() {
    Quantizer q;
    q.id = Quant::FBI;
    q.name = "fbi";
    q.scale_name[0] = "alpha";  // α ∈ R^n ([F2])
    q.scale_name[1] = "beta";   // β ∈ R^n
    q.f32 = fbi_ops<float>();
    q.f64 = fbi_ops<double>();
    q.masks = 1;
    q.packed_scale_sizes = [](int, int n, int sizes[2]) { sizes[0] = sizes[1] = n; };
    q.pack = &fbi_pack;
    q.packed_forward = &fbi_packed_forward;
    return q;
}

// ---- losses (§4) ----------------------------------------------------------------------------------------------
// A loss plug-in: value of the loss, and its gradient × grad_scale ADDED into dlogits (the header's own losses
// below do the same). probs_s/probs_t are N×V scratch; logits_t is the frozen teacher's (null without one).
template <class R>
using LossFn = double (*)(R* dlogits, R* probs_s, R* probs_t, const R* logits_s, const R* logits_t,
                          const int* targets, int N, int V, double grad_scale);
struct LossPlugin {
    Loss id = Loss::CE;
    std::string name;
    LossFn<float> f32 = nullptr;
    LossFn<double> f64 = nullptr;
};
inline std::vector<LossPlugin>& loss_plugins() {
    static std::vector<LossPlugin> registered;
    return registered;
}
inline bool register_loss(LossPlugin l) {
    if (int(l.id) <= int(Loss::Mix)) throw std::logic_error("fbi::register_loss: ids 0-2 are the header's own");
    loss_plugins().push_back(std::move(l));
    return true;
}
inline const LossPlugin* find_loss(Loss id) {
    for (const LossPlugin& l : loss_plugins())
        if (l.id == id) return &l;
    return nullptr;
}

inline const char* loss_name(Loss l) {
    if (l == Loss::CE) return "ce";
    if (l == Loss::AD) return "ad";
    if (l == Loss::Mix) return "mix";
    const LossPlugin* p = find_loss(l);
    return p ? p->name.c_str() : "?";
}
inline Loss loss_from_name(const std::string& s) {
    std::string known = "ce, ad, mix";
    for (Loss l : {Loss::CE, Loss::AD, Loss::Mix})
        if (s == loss_name(l)) return l;
    for (const LossPlugin& p : loss_plugins()) {
        if (s == p.name) return p.id;
        known += ", " + p.name;
    }
    throw std::invalid_argument("unknown loss '" + s + "' (registered: " + known + ")");
}

template <class R>
double plugin_loss(Loss kind, R* dlogits, R* probs_s, R* probs_t, const R* logits_s, const R* logits_t,
                   const int* targets, int N, int V, double grad_scale) {
    const LossPlugin* p = find_loss(kind);
    if (!p) throw std::invalid_argument("fbi: loss id " + std::to_string(int(kind)) + " is not registered");
    if constexpr (std::is_same<R, float>::value)
        return p->f32(dlogits, probs_s, probs_t, logits_s, logits_t, targets, N, V, grad_scale);
    else
        return p->f64(dlogits, probs_s, probs_t, logits_s, logits_t, targets, N, V, grad_scale);
}

// ---- fast kernels (§9) --------------------------------------------------------------------------------------
// A faster kernel is three functions, registered once at static initialisation (before any packed model is
// built or loaded); Kernel::Fast runs the last one registered. examples/kernels/fast_kernels.hpp registers the
// table-lookup kernel ([S6], AVX2 where the flags allow); a kernel of your own is written the same way.
//   prepare_weights  once per bit mask, when a packed model is built or loaded: the kernel's own layout of the bits
//   prepare_acts     once per token and linear: the kernel's own form of the int8 activations q
//   gemv             y_i = Σ_j (2·bit_ij − 1)·q_j for every row of the mask, the same bits as gemv_reference
struct FastKernel {
    std::string name;
    std::function<std::shared_ptr<const void>(const PackedSigns& bits)> prepare_weights;
    std::function<std::shared_ptr<const void>(const int8_t* q, int n)> prepare_acts;
    std::function<void(const PackedSigns& bits, const void* weights, const void* acts, int32_t* y)> gemv;
    // Optional: n tokens at once, Y[t·rows + i] = what gemv gives for token t (PackedRows uses it for prefill).
    std::function<void(const PackedSigns& bits, const void* weights, const void* const* acts, int n, int32_t* Y)> gemm;
    // Optional: the fp16 and int8 rows of E and H ([H1], [H2]), as rows_dot_f16 / rows_dot_i8 compute them.
    std::function<void(const uint16_t* H, int rows, int cols, const float* x, float* y)> rows_f16;
    std::function<void(const int8_t* C, int rows, int cols, const int8_t* q, int32_t* y)> rows_i8;
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
inline bool fast_rows_f16(const uint16_t* H, int rows, int cols, const float* x, float* y) {
    const FastKernel* k = fast_kernel();
    return k && k->rows_f16 ? (k->rows_f16(H, rows, cols, x, y), true) : false;
}
inline bool fast_rows_i8(const int8_t* C, int rows, int cols, const int8_t* q, int32_t* y) {
    const FastKernel* k = fast_kernel();
    return k && k->rows_i8 ? (k->rows_i8(C, rows, cols, q, y), true) : false;
}
inline std::shared_ptr<const void> fast_weights(const PackedSigns& bits) { return fast_kernel()->prepare_weights(bits); }
inline std::shared_ptr<const void> fast_acts(const int8_t* q, int n) { return fast_kernel()->prepare_acts(q, n); }
inline void fast_gemv(const PackedSigns& bits, const void* w, const void* a, int32_t* y) {
    fast_kernel()->gemv(bits, w, a, y);
}
inline bool has_fast_gemm() { return fast_kernel() && fast_kernel()->gemm; }
inline void fast_gemm(const PackedSigns& bits, const void* w, const void* const* acts, int n, int32_t* Y) {
    fast_kernel()->gemm(bits, w, acts, n, Y);
}


// ---- compact scales in packed files (§9, §11) --------------------------------------------------------------
// Compact scales are a plug-in (examples/quantizers/codebook.hpp, [P6]): fit rounds a scale vector to at most
// 2^bits distinct values; bytes, write and read are its form in the packed file (§11).
struct ByteWriter;
struct ByteReader;
struct ScaleCodec {
    void (*fit)(std::vector<float>& v, int bits) = nullptr;
    uint64_t (*bytes)(uint64_t k, int bits) = nullptr;
    void (*write)(ByteWriter& w, const std::vector<float>& v, int bits) = nullptr;
    void (*read)(ByteReader& r, std::vector<float>& v, size_t k, int bits) = nullptr;
};
inline const ScaleCodec*& scale_codec() {
    static const ScaleCodec* registered = nullptr;
    return registered;
}
inline bool register_scale_codec(const ScaleCodec* c) { return (scale_codec() = c) != nullptr; }
inline bool valid_scale_bits(long bits) { return bits == 32 || (bits >= 1 && bits <= 8); }  // 32 = fp32
// Why scale_bits cannot be used here ("" = it can).
inline std::string scale_bits_problem(long bits) {
    if (!valid_scale_bits(bits)) return "scale_bits " + std::to_string(bits) + " (must be 32 or 1..8)";
    if (bits != 32 && !scale_codec())
        return "scale_bits " + std::to_string(bits) + " needs the codebook plug-in (examples/quantizers/codebook.hpp)";
    return "";
}

// pack_model with the scales rounded to 2^bits levels by the codebook plug-in (bits = 32: exactly pack_model).
inline PackedModel pack_model(const Model& model, const std::string& vocab, int scale_bits) {
    std::string problem = scale_bits_problem(scale_bits);
    if (!problem.empty()) throw std::invalid_argument("fbi::pack_model: " + problem);
    PackedModel pm = pack_model(model, vocab);
    pm.scale_bits = scale_bits;
    if (scale_bits < 32)
        for (auto& block : pm.lin)
            for (PackedLinear& p : block)
                for (std::vector<float>& v : p.scale) scale_codec()->fit(v, scale_bits);
    return pm;
}


// ---- helpers the plug-ins and examples share ----------------------------------------------------------------
// Mean |x| of `count` values, summed in double (the plug-ins' weight scales: b1.58's γ, DB-LLM's init step).
template <class R>
R absmean(const R* x, size_t count) {
    double sum = 0;
    for (size_t i = 0; i < count; i++) sum += std::fabs(x[i]);
    return R(sum / double(count));
}

// Copy every parameter that two models share by name (used to start a student from the teacher's weights);
// the quantizer's scales are then re-initialised from the copied latent W ([F4]). Returns the number copied.
template <class R>
int copy_shared_params(ModelT<R>& dst, const ModelT<R>& src) {
    int copied = 0;
    for (const TensorInfo& t : dst.tensors) {
        int s = src.find(t.name);
        if (s < 0 || src.tensors[s].rows != t.rows || src.tensors[s].cols != t.cols) continue;
        std::copy(src.p(s), src.p(s) + t.size(), dst.params.data() + t.offset);
        copied++;
    }
    init_scales(dst);
    return copied;
}

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
// Which GEMM runs the matrix products (benchmarks print it beside the threads).
inline std::string products_summary() {
#if defined(EIGEN_USE_BLAS) && defined(FBI_OPENBLAS)
    const char* chosen = std::getenv("OPENBLAS_CORETYPE");  // else OpenBLAS reads the CPU
    return std::string("products: OpenBLAS (") + openblas_get_corename() + " kernels" +
           (chosen ? std::string(", named by OPENBLAS_CORETYPE=") + chosen : std::string()) + ") through Eigen, GEMV Eigen's";
#elif defined(EIGEN_USE_BLAS)
    return "products: a BLAS through Eigen (EIGEN_USE_BLAS)";
#else
    return "products: Eigen";
#endif
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
// §11 FILES — CHECKPOINTS: config, opaque vocabulary bytes, parameters and optimizer state, behind a magic, a
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

// Bytes into memory, or (file set) straight into a file, with the running FNV-1a checksum of everything written.
struct ByteWriter {
    std::vector<unsigned char> buf;
    FILE* file = nullptr;
    bool ok = true;  // every fwrite so far succeeded
    uint64_t sum = fnv1a(nullptr, 0);
    void raw(const void* p, size_t n) {
        const unsigned char* c = static_cast<const unsigned char*>(p);
        sum = fnv1a(c, n, sum);
        if (file) ok = (n == 0 || std::fwrite(c, 1, n, file) == n) && ok;
        else buf.insert(buf.end(), c, c + n);
    }
    template <class U> void put(U x) { raw(&x, sizeof(U)); }
};
// Bytes from memory, or (file set) straight from a file of `size` bytes: a large packed model is parsed as it is
// read, never held twice.
struct ByteReader {
    const unsigned char* data = nullptr;
    uint64_t size = 0;
    FILE* file = nullptr;
    uint64_t at = 0;
    std::string what;  // for error messages
    ByteReader(const std::vector<unsigned char>& b, uint64_t at0, std::string w) : data(b.data()), size(b.size()), at(at0), what(std::move(w)) {}
    ByteReader(FILE* f, uint64_t n, std::string w) : size(n), file(f), what(std::move(w)) {}
    void raw(void* p, size_t n) {
        if (n > size - at)
            throw std::runtime_error(what + ": truncated (needs " + std::to_string(at + n) + " bytes, file has " +
                                     std::to_string(size) + ")");
        if (file && n && std::fread(p, 1, n, file) != n) throw std::runtime_error(what + ": read error");
        if (!file && n) std::memcpy(p, data + at, n);  // n = 0 may come with p = nullptr (an empty vector)
        at += n;
    }
    template <class U> U get() { U x; raw(&x, sizeof(U)); return x; }
    // FNV-1a of bytes 0 … size−9 equals the u64 stored in the last 8 (a file is read through once more, in chunks).
    bool checksum_ok() {
        uint64_t stored = 0, sum = fnv1a(nullptr, 0);
        if (size < 8) return false;
        if (!file) {
            std::memcpy(&stored, data + size - 8, 8);  // memcpy: the offset need not be 8-byte aligned
            return fnv1a(data, size - 8) == stored;
        }
        std::vector<unsigned char> chunk(1 << 20);
        std::rewind(file);
        for (uint64_t left = size - 8; left > 0;) {
            size_t n = size_t(std::min<uint64_t>(left, chunk.size()));
            if (std::fread(chunk.data(), 1, n, file) != n) throw std::runtime_error(what + ": read error");
            sum = fnv1a(chunk.data(), n, sum), left -= n;
        }
        if (std::fread(&stored, 1, 8, file) != 8) throw std::runtime_error(what + ": read error");
        std::rewind(file);  // back to where parsing stands: past the `at` bytes parsed (no fseek: offsets past 2 GB)
        for (uint64_t left = at; left > 0;) {
            size_t n = size_t(std::min<uint64_t>(left, chunk.size()));
            if (std::fread(chunk.data(), 1, n, file) != n) throw std::runtime_error(what + ": read error");
            left -= n;
        }
        return sum == stored;
    }
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
    w.put<uint64_t>(w.sum);
    return w.buf;
}

// Write `path` atomically: `fill` writes into a ByteWriter on a temp file; fsync, then rename. Nothing at `path`
// changes unless the whole new file is on disk; a failed write leaves no temp file behind.
template <class Fill>
void write_file_atomic_with(const std::string& path, Fill&& fill) {
    std::string tmp = path + ".tmp";
#if defined(__unix__) || defined(__APPLE__)
    tmp += "." + std::to_string(long(getpid()));
#endif
    ByteWriter w;
    w.file = std::fopen(tmp.c_str(), "wb");
    if (!w.file) throw std::runtime_error("cannot write '" + path + "': " + std::strerror(errno));
    try { fill(w); } catch (...) { std::fclose(w.file); std::remove(tmp.c_str()); throw; }
    bool ok = w.ok && std::fflush(w.file) == 0;
#if defined(__unix__) || defined(__APPLE__)
    ok = ok && fsync(fileno(w.file)) == 0;
#endif
    int err = errno;
    ok = (std::fclose(w.file) == 0) && ok;
    if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
        if (ok) err = errno;
        std::remove(tmp.c_str());
        throw std::runtime_error("cannot write '" + path + "': " + std::strerror(err));
    }
}
inline void write_file_atomic(const std::string& path, const std::vector<unsigned char>& bytes) {
    write_file_atomic_with(path, [&](ByteWriter& w) { w.raw(bytes.data(), bytes.size()); });
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
    ByteReader r(bytes, 0, "checkpoint '" + what + "'");
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
    if (f[0] > 255 || !find_quantizer(Quant(f[0]))) throw std::runtime_error(r.what + ": " + unknown_quantizer(Quant(f[0] & 255)));
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
//   "FBIPACK\0" | u32 version | u32 quant | u32 scale_bits | version 4 only: u32 E format, u32 H format (0 fp32,
//   1 fp16, 2 int8) | u32 V,C,L,NH,F,T | u64 vocab_bytes | vocab | tok_emb E (V×C) | per block: f32 attn_norm (C),
//   f32 mlp_norm (C), per linear (q,k,v,o,gate,up,down): the quantizer's masks, u64 (m × words) each (FBI: 1), then
//   its two scale vectors (FBI: α (n), β (n)) | f32 final_norm (C) | lm_head H (V×C) | u64 FNV-1a checksum of
//   everything before it. A scale vector of k values is k × f32 when scale_bits = 32, else the codebook plug-in's
//   form (examples/quantizers/codebook.hpp). E and H: fp32 V×C f32; fp16 V×C halves ([H1]); int8 V f32 row scales,
//   then V×C int8 codes in −127 … 127 ([H2]).
// Version 1 is the layout with E and H in fp32 (every file before the formats existed; still written for fp32 E
// and H, so older builds read them); version 4 adds the two format fields. Every size follows from the header, so
// a truncated or padded file is caught before anything is read. (Development builds before the format was frozen
// wrote versions 2 and 3 under the same magic; they are refused with a message that says to pack again.)
constexpr char kPackedMagic[8] = {'F', 'B', 'I', 'P', 'A', 'C', 'K', '\0'};
constexpr uint32_t kPackedVersion = 1, kPackedVersionRows = 4;

// E and H as the file stores them.
inline uint64_t rows_bytes(RowFormat f, uint64_t rows, uint64_t cols) {
    return f == RowFormat::F32 ? 4 * rows * cols : f == RowFormat::F16 ? 2 * rows * cols : 4 * rows + rows * cols;
}
inline void write_rows(ByteWriter& w, const RowMatrix& M) {
    if (M.format == RowFormat::F32) w.raw(M.f32.data(), 4 * M.f32.size());
    if (M.format == RowFormat::F16) w.raw(M.f16.data(), 2 * M.f16.size());
    if (M.format == RowFormat::I8) w.raw(M.scale.data(), 4 * M.scale.size()), w.raw(M.i8.data(), M.i8.size());
}
inline void read_rows(ByteReader& r, RowMatrix& M, RowFormat f, int rows, int cols, const char* name) {
    size_t n = size_t(rows) * cols;
    M = RowMatrix{};
    M.format = f, M.rows = rows, M.cols = cols;
    if (f == RowFormat::F32) M.f32.resize(n), r.raw(M.f32.data(), 4 * n);
    if (f == RowFormat::F16) M.f16.resize(n), r.raw(M.f16.data(), 2 * n);
    if (f != RowFormat::I8) return;
    if (cols > kMaxInt8RowCols) throw std::runtime_error(r.what + ": int8 " + name + " rows wider than 131072");
    M.scale.resize(rows), M.i8.resize(n);
    r.raw(M.scale.data(), 4 * size_t(rows));
    r.raw(M.i8.data(), n);
    for (int i = 0; i < rows; i++)
        if (!(M.scale[i] >= 0 && std::isfinite(M.scale[i])))
            throw std::runtime_error(r.what + ": " + name + " row " + std::to_string(i) + " has scale " +
                                     std::to_string(M.scale[i]) + " (corrupted)");
    for (size_t i = 0; i < n; i++)
        if (M.i8[i] == -128)
            throw std::runtime_error(r.what + ": " + name + " row " + std::to_string(i / cols) +
                                     " has code −128 (int8 rows use −127 … 127; corrupted)");
}

// Bytes of one stored scale vector of k values: fp32, or the codebook plug-in's form.
inline uint64_t scale_bytes(uint64_t k, int bits) {
    return k == 0 ? 0 : bits == 32 ? 4 * k : scale_codec()->bytes(k, bits);
}
inline void write_scales(ByteWriter& w, const std::vector<float>& v, int bits) {
    if (bits == 32) w.raw(v.data(), 4 * v.size());
    else if (!v.empty()) scale_codec()->write(w, v, bits);
}
inline void read_scales(ByteReader& r, std::vector<float>& v, size_t k, int bits) {
    v.resize(k);
    if (bits == 32) r.raw(v.data(), 4 * k);
    else if (k) scale_codec()->read(r, v, k, bits);
}

// The file's bytes into w (memory or a file); the checksum is w's running one.
inline void write_packed_model(ByteWriter& w, const PackedModel& pm) {
    check_file_context(pm.cfg, "fbi::packed_model_bytes");
    w.raw(kPackedMagic, 8);
    const bool fp32_rows = pm.tok_emb.format == RowFormat::F32 && pm.lm_head.format == RowFormat::F32;
    w.put<uint32_t>(fp32_rows ? kPackedVersion : kPackedVersionRows);
    const Config& c = pm.cfg;
    w.put<uint32_t>(uint32_t(c.quant));
    w.put<uint32_t>(uint32_t(pm.scale_bits));
    if (!fp32_rows) w.put<uint32_t>(uint32_t(pm.tok_emb.format)), w.put<uint32_t>(uint32_t(pm.lm_head.format));
    for (int x : {c.V, c.C, c.L, c.NH, c.F, c.T}) w.put<uint32_t>(uint32_t(x));
    w.put<uint64_t>(pm.vocab.size());
    w.raw(pm.vocab.data(), pm.vocab.size());
    auto floats = [&](const std::vector<float>& v) { w.raw(v.data(), 4 * v.size()); };
    write_rows(w, pm.tok_emb);
    for (int l = 0; l < c.L; l++) {
        floats(pm.attn_norm[l]);
        floats(pm.mlp_norm[l]);
        for (const PackedLinear& p : pm.lin[l]) {
            if (!has_portable_masks(p))
                throw std::invalid_argument("fbi::write_packed_model: the portable masks were dropped (drop_portable_masks)");
            for (const PackedSigns& mask : p.mask) w.raw(mask.bits.data(), 8 * mask.bits.size());  // unused: 0 bytes
            for (const std::vector<float>& v : p.scale) write_scales(w, v, pm.scale_bits);
        }
    }
    floats(pm.final_norm);
    write_rows(w, pm.lm_head);
    w.put<uint64_t>(w.sum);
}
inline std::vector<unsigned char> packed_model_bytes(const PackedModel& pm) {
    ByteWriter w;
    write_packed_model(w, pm);
    return w.buf;
}

inline void save_packed_model(const std::string& path, const PackedModel& pm) {
    check_file_context(pm.cfg, "fbi::packed_model_bytes");  // before the temp file exists
    write_file_atomic_with(path, [&](ByteWriter& w) { write_packed_model(w, pm); });  // streamed: no copy in memory
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

// fast_only: keep only the registered fast kernel's layout of each mask (drop_portable_masks), one linear at a time,
// so that loading a large model never holds both.
inline PackedModel read_packed_model(ByteReader& r, bool fast_only = false) {
    char magic[8];
    r.raw(magic, 8);
    if (std::memcmp(magic, kPackedMagic, 8) != 0)
        throw std::runtime_error(r.what + ": not an fbi_llm packed model (bad magic)");
    uint32_t version = r.get<uint32_t>();
    if (version != kPackedVersion && version != kPackedVersionRows)
        throw std::runtime_error(r.what + ": format version " + std::to_string(version) + ", this build reads versions " +
                                 std::to_string(kPackedVersion) + " and " + std::to_string(kPackedVersionRows) +
                                 (version == 2 || version == 3 ? " (a pre-release layout: pack the checkpoint again)" : ""));
    PackedModel pm;
    Config& c = pm.cfg;
    uint32_t quant = r.get<uint32_t>();
    const Quantizer* q = quant > 255 ? nullptr : find_quantizer(Quant(quant));
    if (!q) throw std::runtime_error(r.what + ": " + unknown_quantizer(Quant(quant & 255), "packed "));
    if (!q->pack)
        throw std::runtime_error(r.what + ": unknown packed quantizer id " + std::to_string(quant) + " (" + q->name +
                                 " has no packed form)");
    c.quant = Quant(quant);
    uint32_t bits = r.get<uint32_t>();
    std::string problem = scale_bits_problem(long(bits));
    if (!problem.empty()) throw std::runtime_error(r.what + ": " + problem);
    pm.scale_bits = int(bits);
    RowFormat formats[2] = {RowFormat::F32, RowFormat::F32};  // E, H
    for (int k = 0; k < 2 && version == kPackedVersionRows; k++) {
        uint32_t f = r.get<uint32_t>();
        if (f > 2)
            throw std::runtime_error(r.what + ": unknown " + (k ? "LM head" : "embedding") + " format " +
                                     std::to_string(f) + " (0 fp32, 1 fp16, 2 int8)");
        formats[k] = RowFormat(f);
    }
    int* dims[6] = {&c.V, &c.C, &c.L, &c.NH, &c.F, &c.T};
    for (int* d : dims) {
        uint32_t x = r.get<uint32_t>();
        if (x > (1u << 24)) throw std::runtime_error(r.what + ": implausible config size " + std::to_string(x));
        *d = int(x);
    }
    try { check_config(c); } catch (const std::exception& e) { throw std::runtime_error(r.what + ": " + e.what()); }
    check_file_context(c, r.what);
    uint64_t n_vocab = r.get<uint64_t>();
    int m[N_LINEAR], n[N_LINEAR], sizes[N_LINEAR][2];
    uint64_t per_block = 8ull * c.C;
    for (int i = 0; i < N_LINEAR; i++) {
        linear_shape(c, i, m[i], n[i]);
        q->packed_scale_sizes(m[i], n[i], sizes[i]);
        per_block += 8ull * q->masks * m[i] * words_for(n[i]) + scale_bytes(sizes[i][0], pm.scale_bits) +
                     scale_bytes(sizes[i][1], pm.scale_bits);
    }
    if (n_vocab > r.size || uint64_t(c.L) > r.size / per_block)  // first: `expect` cannot wrap around
        throw std::runtime_error(r.what + ": truncated (" + describe(c) + " with " + std::to_string(n_vocab) +
                                 " vocabulary bytes needs more than the file's " + std::to_string(r.size) + " bytes)");
    uint64_t expect = r.at + n_vocab + rows_bytes(formats[0], c.V, c.C) + rows_bytes(formats[1], c.V, c.C) + 4ull * c.C +
                      uint64_t(c.L) * per_block + 8;
    if (r.size != expect)
        throw std::runtime_error(r.what + (r.size < expect ? ": truncated" : ": has trailing bytes") + " (expected " +
                                 std::to_string(expect) + " bytes for " + describe(c) + ", file has " +
                                 std::to_string(r.size) + ")");
    if (!r.checksum_ok()) throw std::runtime_error(r.what + ": checksum mismatch (corrupted)");
    pm.vocab.resize(n_vocab);
    r.raw(&pm.vocab[0], n_vocab);
    auto floats = [&](std::vector<float>& v, size_t count) { v.resize(count); r.raw(v.data(), 4 * count); };
    read_rows(r, pm.tok_emb, formats[0], c.V, c.C, "embedding");
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
            for (int k = 0; k < q->masks; k++) read_mask(r, p.mask[k], m[i], n[i]);
            for (int k = 0; k < 2; k++) read_scales(r, p.scale[k], size_t(sizes[i][k]), pm.scale_bits);
            if (q->check) q->check(p, r.what);  // e.g. b1.58: no weight both +1 and −1
            prepare_fast(p);
            if (fast_only) drop_portable_masks(p);
        }
    }
    floats(pm.final_norm, c.C);
    read_rows(r, pm.lm_head, formats[1], c.V, c.C, "LM head");
    rope_tables(pm.rope_cos, pm.rope_sin, c.T, c.C / c.NH);
    return pm;
}

inline PackedModel parse_packed_model(const std::vector<unsigned char>& bytes, const std::string& what) {
    ByteReader r(bytes, 0, "packed model '" + what + "'");
    return read_packed_model(r);
}
// Parsed as it is read: the file's bytes are never all in memory beside the model.
inline PackedModel load_packed_model(const std::string& path, bool fast_only = false) {
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) throw std::runtime_error("cannot open '" + path + "': " + std::strerror(errno));
    std::unique_ptr<FILE, int (*)(FILE*)> closer(f, &std::fclose);
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) throw std::runtime_error("'" + path + "' is not a regular file");
    ByteReader r(f, uint64_t(st.st_size), "packed model '" + path + "'");
    return read_packed_model(r, fast_only);
}

// Storage of the quantized layers in bits per weight: the masks' bits (+ row padding) plus the scales as the file
// stores them, over the number of quantized weights ([P4] "bits per weight"). FBI with fp32 scales: 1 + 64/m;
// b1.58 and DB: 2 bits + scales (b1.58's information content is log2 3 ≈ 1.58 bits; two masks are how the kernels
// read it).
inline double packed_bits_per_weight(const PackedModel& pm) {
    double bits = 0, weights = 0;
    for (const auto& block : pm.lin)
        for (const PackedLinear& p : block) {
            bits += 64.0 * (double(p.mask[0].rows) * p.mask[0].words + double(p.mask[1].rows) * p.mask[1].words) +
                    8.0 * double(scale_bytes(p.scale[0].size(), pm.scale_bits) + scale_bytes(p.scale[1].size(), pm.scale_bits));
            weights += double(p.m) * p.n;
        }
    return bits / weights;
}

}  // namespace fbi
