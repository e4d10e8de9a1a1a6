// Binding of the FMA-chain peak micro-benchmark (csrc/cpu/peak.cpp).
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "bind/arrays.h"
#include "cpu/kernels.h"

namespace fc::bind {

namespace {
template <class T>
double run_chains(int64_t iters, int threads, double* thread_seconds) {
  FC_DISPATCH(fma_chains<T>(iters, threads, thread_seconds));
}
template <class T>
int64_t chain_flops() {
  FC_DISPATCH(fma_chain_flops<T>());
}

// Best GFLOP/s over 10 repetitions of about `seconds` / 10 each, after a calibration run
// that also brings the cores to their sustained clock. A repetition's rate is the sum
// over threads of each thread's flops / its own CPU time (see csrc/cpu/peak.cpp).
template <class T>
double peak(int threads, double seconds) {
  const double per_thread = static_cast<double>(chain_flops<T>());
  std::vector<double> sec(static_cast<size_t>(threads), 0.0);
  volatile double sink = 0;
  auto slowest = [&] { return *std::max_element(sec.begin(), sec.end()); };
  int64_t iters = 1 << 14;
  for (;;) {  // calibrate: grow until one run takes >= 20 ms of CPU time per thread
    sink = sink + run_chains<T>(iters, threads, sec.data());
    if (slowest() >= 0.02 || iters > (int64_t{1} << 40)) break;
    iters *= 4;
  }
  const int reps = 10;
  const double target = std::max(seconds / reps, 0.005);
  iters = std::max<int64_t>(1, static_cast<int64_t>(iters * target / std::max(slowest(), 1e-9)));
  double best = 0;
  for (int r = 0; r < reps; ++r) {
    std::fill(sec.begin(), sec.end(), 0.0);
    sink = sink + run_chains<T>(iters, threads, sec.data());
    double rate = 0;
    for (double t : sec) rate += t > 0 ? per_thread * static_cast<double>(iters) / t : 0.0;
    best = std::max(best, rate / 1e9);
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
      "runs of seconds/10, each thread timed in its own CPU time): the machine's fused multiply-add peak.");
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
