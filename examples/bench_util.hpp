// Shared by the benchmarks: one way to time a piece of work (warm up, repeat, take the median).
#pragma once
#include <algorithm>
#include <chrono>
#include <functional>
#include <vector>

namespace example {

// The middle value (the upper one of the two middles for an even count); robust to the odd interrupted run.
inline double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

// Wall time of f in microseconds: warm up, size the repetition count for ≈ budget_s seconds, time each
// repetition separately; returns the median (robust to the odd interrupt) and the minimum (what the code
// can do when nothing else competes for the core and the caches).
struct Timing {
    double median_us, min_us;
};
inline Timing time_us(const std::function<void()>& f, double budget_s = 0.2) {
    using Clock = std::chrono::steady_clock;
    for (int w = 0; w < 3; w++) f();
    auto t0 = Clock::now();
    f();
    const double one = std::chrono::duration<double>(Clock::now() - t0).count();
    const int reps = (int)std::clamp(budget_s / std::max(one, 1e-7), 7.0, 20000.0);
    std::vector<double> times(reps);
    for (int r = 0; r < reps; r++) {
        auto a = Clock::now();
        f();
        times[r] = std::chrono::duration<double, std::micro>(Clock::now() - a).count();
    }
    return {median(times), *std::min_element(times.begin(), times.end())};
}

}  // namespace example
