// The copy-paste check (tests/copy_paste.sh): this program is built twice for each block of fbi_llm.hpp marked
// "// >>> copy-paste NAME": once against the whole header, once against the block alone (cut out of the
// header with the few definitions its marker names, and nothing else: no Eigen, no rest of the header).
// Both print every result bit for bit (%a); the script requires the two outputs to be identical.
#include <cstdint>
#include <cstdio>
#include <vector>
#ifdef WITH_HEADER
#include "../../fbi_llm.hpp"
#else
#include COPY_PASTE_BLOCK  // the extracted block, in namespace fbi
#endif
using namespace fbi;

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static double uniform() {  // xorshift64*, in [−1, 1)
    rng_state ^= rng_state >> 12, rng_state ^= rng_state << 25, rng_state ^= rng_state >> 27;
    return double((rng_state * 0x2545F4914F6CDD1Dull) >> 11) / double(1ull << 52) - 1.0;
}
template <class T> static void print(const char* name, const std::vector<T>& v) {
    std::printf("%s:", name);
    for (const T& x : v) std::printf(" %a", double(x));
    std::printf("\n");
}

int main() {
#if defined(BLOCK_fbi_linear)
    // One FBI-linear: m = 5 outputs, n = 7 inputs, N = 3 tokens. Ŵ ([F2]), y = x Ŵᵀ ([F3]), the STE ([F5]).
    const int m = 5, n = 7, N = 3;
    std::vector<float> W(m * n), x(N * n), G(m * n), alpha(n), beta(n), w_hat(m * n), y(N * m, 0.0f);
    for (float& w : W) w = float(0.02 * uniform());
    W[3] = 0.0f;  // sign(0) = −1 ([F1])
    for (float& v : x) v = float(uniform());
    for (float& g : G) g = float(uniform());
    fbi_init(alpha.data(), beta.data(), W.data(), m, n);
    fbi_forward(w_hat.data(), W.data(), alpha.data(), beta.data(), m, n);
    for (int t = 0; t < N; t++)
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) y[t * m + i] += x[t * n + j] * w_hat[i * n + j];
    std::vector<float> dW(m * n, 0.0f), dalpha(n, 0.0f), dbeta(n, 0.0f);
    fbi_backward(dW.data(), dalpha.data(), dbeta.data(), G.data(), W.data(), alpha.data(), m, n);
    print("alpha", alpha), print("beta", beta), print("w_hat", w_hat), print("y", y);
    print("dW", dW), print("dalpha", dalpha), print("dbeta", dbeta);
#elif defined(BLOCK_ad_loss)
    // The AD loss ([D1]) and its gradient on N = 4 positions over V = 6 tokens, in double and in float.
    const int N = 4, V = 6;
    std::vector<double> zs(N * V), zt(N * V), ps(N * V), pt(N * V), dz(N * V, 0.0);
    for (double& z : zs) z = 3 * uniform();
    for (double& z : zt) z = 3 * uniform();
    double loss = distill_forward(ps.data(), pt.data(), zs.data(), zt.data(), N, V);
    distill_backward(dz.data(), ps.data(), pt.data(), N, V, 1.0 / N);
    std::printf("loss: %a\n", loss);
    print("dz", dz);
    std::vector<float> zsf(zs.begin(), zs.end()), ztf(zt.begin(), zt.end()), psf(N * V), ptf(N * V), dzf(N * V, 0.0f);
    std::printf("loss_f: %a\n", distill_forward(psf.data(), ptf.data(), zsf.data(), ztf.data(), N, V));
    distill_backward(dzf.data(), psf.data(), ptf.data(), N, V, 1.0f / N);
    print("dz_f", dzf);
#elif defined(BLOCK_popcount)
    // The portable popcount GEMV ([S7]) on an awkward shape (70 columns: two words, 58 padding bits), with
    // the plain reference beside it; int8 activations include −128 and 127.
    const int rows = 9, cols = 70;
    std::vector<float> W(rows * cols), Wsign(rows * cols);
    for (float& w : W) w = float(uniform());
    W[5] = 0.0f;
    std::vector<int8_t> q(cols);
    for (int8_t& v : q) v = int8_t(int(128 * uniform()));
    q[0] = -128, q[1] = 127;
    PackedSigns P = pack_signs(W.data(), rows, cols);
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) Wsign[i * cols + j] = unpacked_sign(P, i, j);
    ActPlanes A = make_act_planes(q.data(), cols);
    std::vector<int32_t> y(rows), y_ref(rows);
    gemv_popcount(P, A, y.data());
    gemv_reference(Wsign.data(), rows, cols, q.data(), y_ref.data());
    std::vector<uint64_t> bits(P.bits.begin(), P.bits.end());
    std::printf("bits:");
    for (uint64_t b : bits) std::printf(" %016llx", (unsigned long long)b);
    std::printf("\n");
    print("y", y), print("y_reference", y_ref);
    if (y != y_ref) { std::printf("popcount kernel differs from the reference\n"); return 1; }
#else
#error "define BLOCK_fbi_linear, BLOCK_ad_loss or BLOCK_popcount"
#endif
    return 0;
}
