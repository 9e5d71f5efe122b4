// bench_gemv.cpp — one-token GEMV: packed 1-bit kernels (packed.hpp) vs Eigen fp32, [S7].
// Run:   ./bench_gemv [out.csv] [max_threads]      (defaults: bench_gemv.csv, 2; runs 1 .. max_threads)
//
// What is timed, per token (rows × cols = out × in, PyTorch layout):
//   eigen_fp32           y = W x with W a row-major fp32 matrix: fbi::matvec, Eigen's GEMV with the rows split
//                        over the threads as the decoder runs it (4 bytes per weight)
//   reference            quantize u → q, then gemv_reference over a ±1 float matrix (4 bytes per weight)
//   popcount             quantize, make_act_planes_fast, gemv_popcount        (1/8 byte per weight)
//   popcount_avx2        quantize, make_act_planes_fast, gemv_popcount_avx2   (AVX2 builds only)
//   tl                   quantize, make_act_tables, gemv_tl (portable table lookup)
//   tl_avx2              quantize, make_act_tables, gemv_tl_avx2         (AVX2 builds only)
//   tl_avx2_kernel_only  gemv_tl_avx2 alone (tables prebuilt): shows what the per-token preparation costs
//   tl_avx512            quantize, make_act_tables, gemv_tl_avx512       (AVX-512BW builds only)
// The packed timings include the per-token quantization and plane/table construction.
// Eigen's own GEMV is single-threaded; fbi::matvec gives it the same OpenMP threads as the packed kernels (rows
// split above about half a million weights), so each thread count compares like with like.
// Every kernel is first checked against gemv_reference (exact int32); the program aborts on a mismatch.
// Weights stay resident in cache between repetitions when they fit (2 MiB packed at 4096²; L3 here is
// larger), as they would not in a full model where every layer evicts the others — see the report.
#include <Eigen/Dense>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "../bench_util.hpp"
#include "../common.hpp"

using namespace fbi;
using example::cpu_model;
using example::load_average;
using example::time_us;
using example::Timing;

namespace {

volatile int32_t g_sink;  // keeps results alive so the compiler cannot drop the work

}  // namespace

int main(int argc, char** argv) try {
    const std::string csv_path = argc > 1 ? argv[1] : "bench_gemv.csv";
    example::check_thread_env();
    std::printf("machine : %s\n", cpu_model().c_str());
#ifdef _OPENMP
    std::printf("OpenMP  : on (max %d threads); parallel kernels above %ld weights\n", omp_get_max_threads(),
                kParallelMinWeights);
#else
    std::printf("OpenMP  : off (1 thread only)\n");
#endif
    std::printf("SIMD    : AVX2 %s, AVX-512F %s (Eigen uses what the compiler allows)\n",
#if defined(__AVX2__)
                "yes",
#else
                "no",
#endif
#if defined(__AVX512F__)
                "yes"
#else
                "no"
#endif
    );
    std::printf("load    : %s\n", load_average().c_str());
    std::printf("Eigen   : %d.%d.%d, compiler g++ %s\n\n", EIGEN_WORLD_VERSION, EIGEN_MAJOR_VERSION,
                EIGEN_MINOR_VERSION, __VERSION__);

    struct Shape {
        int rows, cols;
    };
    const Shape shapes[] = {{768, 768},   {2048, 768},   {768, 2048},   {2048, 2048},  {5632, 2048},
                            {2048, 5632}, {4096, 4096}, {11008, 4096}, {4096, 11008}};
    std::vector<int> thread_counts = {1};
#ifdef _OPENMP
    const int max_threads = int(example::positional(argc, argv, 2, "max threads", 2, 1, 1024));
    for (int t = 2; t <= max_threads; t++) thread_counts.push_back(t);
#endif

    std::FILE* csv = std::fopen(csv_path.c_str(), "w");
    if (!csv) {
        std::perror(csv_path.c_str());
        return 1;
    }
    std::fprintf(csv, "rows,cols,threads,kernel,median_us,speedup_vs_eigen_fp32\n");
    std::printf("%6s %6s %3s  %-20s %10s %9s %9s %12s\n", "rows", "cols", "thr", "kernel", "median_us", "min_us",
                "speedup", "weight GB/s");

    std::mt19937 rng(42);
    std::normal_distribution<float> normal(0.0f, 0.02f);
    for (const Shape& sh : shapes) {
        const int m = sh.rows, n = sh.cols;
        // Latent weights ([M0] init N(0, 0.02²)), their ±1 signs, and a token's activations u.
        Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> W(m, n);
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) W(i, j) = normal(rng);
        Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> Wsign =
            W.unaryExpr([](float w) { return w > 0.0f ? 1.0f : -1.0f; });
        Eigen::VectorXf u(n), y_fp32(m);
        for (int j = 0; j < n; j++) u(j) = normal(rng) * 50.0f;

        const PackedSigns P = pack_signs(W.data(), m, n);
        const PackedTL T = pack_tl(P);
        std::vector<int8_t> q(n);
        std::vector<int32_t> y(m), y_ref(m);

        // The per-token paths being compared.
        auto run_reference = [&] {
            quantize_int8_absmax(u.data(), n, q.data());
            gemv_reference(Wsign.data(), m, n, q.data(), y.data());
        };
        auto run_popcount = [&] {
            quantize_int8_absmax(u.data(), n, q.data());
            gemv_popcount(P, make_act_planes_fast(q.data(), n), y.data());
        };
        auto run_tl = [&] {
            quantize_int8_absmax(u.data(), n, q.data());
            gemv_tl(T, make_act_tables(q.data(), n), y.data());
        };
#if defined(__AVX2__)
        auto run_popcount_avx2 = [&] {
            quantize_int8_absmax(u.data(), n, q.data());
            gemv_popcount_avx2(P, make_act_planes_fast(q.data(), n), y.data());
        };
        auto run_tl_avx2 = [&] {
            quantize_int8_absmax(u.data(), n, q.data());
            gemv_tl_avx2(T, make_act_tables(q.data(), n), y.data());
        };
#endif
        using Named = std::pair<const char*, std::function<void()>>;
        std::vector<Named> packed_kernels = {{"popcount", run_popcount}, {"tl", run_tl}};
#if defined(__AVX2__)
        packed_kernels.insert(packed_kernels.begin() + 1, Named{"popcount_avx2", run_popcount_avx2});
        packed_kernels.push_back({"tl_avx2", run_tl_avx2});
#endif
#if defined(__AVX2__) && defined(__AVX512BW__)
        packed_kernels.push_back({"tl_avx512", [&] {
                                      quantize_int8_absmax(u.data(), n, q.data());
                                      gemv_tl_avx512(T, make_act_tables(q.data(), n), y.data());
                                  }});
#endif

        // Verify first: every packed kernel must reproduce the reference bit for bit.
        quantize_int8_absmax(u.data(), n, q.data());
        gemv_reference(Wsign.data(), m, n, q.data(), y_ref.data());
        for (const auto& [name, run] : packed_kernels) {
            std::fill(y.begin(), y.end(), -777);
            run();
            if (y != y_ref) {
                std::fprintf(stderr, "MISMATCH: kernel %s at %dx%d\n", name, m, n);
                return 1;
            }
        }

        const ActTables tables = make_act_tables(q.data(), n);  // for tl_avx2_kernel_only
        for (int threads : thread_counts) {
#ifdef _OPENMP
            omp_set_num_threads(threads);
#endif
            std::vector<Named> kernels = {
                {"eigen_fp32", [&] { matvec(y_fp32.data(), W.data(), u.data(), m, n); g_sink = (int32_t)y_fp32(0); }},
                {"reference", run_reference}};
            kernels.insert(kernels.end(), packed_kernels.begin(), packed_kernels.end());
#if defined(__AVX2__)
            kernels.push_back({"tl_avx2_kernel_only", [&] { gemv_tl_avx2(T, tables, y.data()); }});
#endif
            double eigen_us = 0;
            for (const Named& kernel : kernels) {
                const char* name = kernel.first;
                const std::function<void()>& run = kernel.second;
                const Timing tm = time_us([&] { run(); g_sink = y[0]; });
                const double us = tm.median_us;
                if (std::string(name) == "eigen_fp32") eigen_us = us;
                const double speedup = eigen_us / us;
                const double bytes_per_weight = std::string(name) == "eigen_fp32" || std::string(name) == "reference"
                                                    ? 4.0 : 1.0 / 8.0;
                std::printf("%6d %6d %3d  %-20s %10.1f %9.1f %8.2fx %12.1f\n", m, n, threads, name, us, tm.min_us, speedup,
                            bytes_per_weight * m * n / (us * 1e3));
                std::fprintf(csv, "%d,%d,%d,%s,%.2f,%.3f\n", m, n, threads, name, us, speedup);
                std::fflush(stdout);
            }
        }
        std::printf("\n");
    }
    std::fclose(csv);
    std::printf("load    : %s\n", load_average().c_str());
    std::printf("wrote %s\n", csv_path.c_str());
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
}
