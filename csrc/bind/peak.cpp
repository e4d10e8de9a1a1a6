// Binding of the FMA-chain peak micro-benchmark (csrc/cpu/peak.cpp).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <string>

#include "bind/arrays.h"
#include "cpu/kernels.h"

namespace fc::bind {

namespace {
template <class T>
double run_chains(int64_t iters, int threads) {
  FC_DISPATCH(fma_chains<T>(iters, threads));
}
template <class T>
int64_t chain_flops() {
  FC_DISPATCH(fma_chain_flops<T>());
}

// Best GFLOP/s over 10 repetitions of about `seconds` / 10 each (the best of many short
// runs is the one no other process interrupted), after a calibration run
// that also brings the cores to their sustained clock.
template <class T>
double peak(int threads, double seconds) {
  using clock = std::chrono::steady_clock;
  const double per_iter = static_cast<double>(chain_flops<T>()) * threads;
  volatile double sink = 0;
  int64_t iters = 1 << 14;
  double dt = 0;
  for (;;) {  // calibrate: grow until one run takes >= 20 ms
    const auto t0 = clock::now();
    sink = sink + run_chains<T>(iters, threads);
    dt = std::chrono::duration<double>(clock::now() - t0).count();
    if (dt >= 0.02 || iters > (int64_t{1} << 40)) break;
    iters *= 4;
  }
  const int reps = 10;
  const double target = std::max(seconds / reps, 0.005);
  iters = std::max<int64_t>(1, static_cast<int64_t>(iters * target / std::max(dt, 1e-9)));
  double best = 0;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = clock::now();
    sink = sink + run_chains<T>(iters, threads);
    const double t = std::chrono::duration<double>(clock::now() - t0).count();
    best = std::max(best, per_iter * static_cast<double>(iters) / t / 1e9);
  }
  require(std::isfinite(sink), "fma_peak_gflops: the FMA chains overflowed");
  return best;
}
}  // namespace

void bind_peak(nb::module_& m) {
  m.def(
      "fma_peak_gflops",
      [](const std::string& dtype, int threads, double seconds) {
        require(threads >= 1, "fma_peak_gflops: threads must be >= 1, got " + std::to_string(threads));
        require(seconds > 0 && seconds <= 60,
                "fma_peak_gflops: seconds must be in (0, 60], got " + std::to_string(seconds));
        if (dtype == "float32") return peak<float>(threads, seconds);
        if (dtype == "float64") return peak<double>(threads, seconds);
        fail("fma_peak_gflops: dtype must be 'float32' or 'float64', got '" + dtype + "'");
      },
      nb::arg("dtype") = "float32", nb::arg("threads") = 1, nb::arg("seconds") = 0.5, GIL(),
      "GFLOP/s of 12 independent vector FMA chains per thread on the active ISA (best of 10 "
      "runs of seconds/10): the machine's fused multiply-add peak.");
  m.def(
      "fma_chain_flops",
      [](const std::string& dtype) {
        if (dtype == "float32") return chain_flops<float>();
        if (dtype == "float64") return chain_flops<double>();
        fail("fma_chain_flops: dtype must be 'float32' or 'float64', got '" + dtype + "'");
      },
      nb::arg("dtype") = "float32", "Flops one round of the FMA chains does on one thread.");
}

}  // namespace fc::bind
