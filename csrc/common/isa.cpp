#include "common/isa.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

namespace fc {
namespace {

bool cpu_has(const char* feature) {
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  if (!std::strcmp(feature, "avx2")) return __builtin_cpu_supports("avx2");
  if (!std::strcmp(feature, "fma")) return __builtin_cpu_supports("fma");
  if (!std::strcmp(feature, "avx512f")) return __builtin_cpu_supports("avx512f");
  if (!std::strcmp(feature, "avx512bw")) return __builtin_cpu_supports("avx512bw");
  if (!std::strcmp(feature, "avx512dq")) return __builtin_cpu_supports("avx512dq");
  if (!std::strcmp(feature, "avx512vl")) return __builtin_cpu_supports("avx512vl");
#endif
  (void)feature;
  return false;
}

bool compiled(Isa isa) {
  switch (isa) {
    case Isa::generic: return true;
#ifdef FC_HAVE_avx2
    case Isa::avx2: return true;
#endif
#ifdef FC_HAVE_avx512
    case Isa::avx512: return true;
#endif
    default: return false;
  }
}

bool supported(Isa isa) {
  if (!compiled(isa)) return false;
  switch (isa) {
    case Isa::avx512:
      return cpu_has("avx512f") && cpu_has("avx512bw") && cpu_has("avx512dq") &&
             cpu_has("avx512vl") && cpu_has("fma");
    case Isa::avx2: return cpu_has("avx2") && cpu_has("fma");
    default: return true;
  }
}

Isa initial_isa() {
  Isa best = best_supported_isa();
  if (const char* env = std::getenv("FASTCONV_ISA")) {
    for (Isa isa : {Isa::generic, Isa::avx2, Isa::avx512})
      if (!std::strcmp(env, isa_name(isa)) && supported(isa)) return isa;
  }
  return best;
}

std::atomic<int>& current() {
  static std::atomic<int> isa{static_cast<int>(initial_isa())};
  return isa;
}
}  // namespace

Isa best_supported_isa() {
  for (Isa isa : {Isa::avx512, Isa::avx2})
    if (supported(isa)) return isa;
  return Isa::generic;
}

Isa active_isa() { return static_cast<Isa>(current().load(std::memory_order_relaxed)); }

void set_isa(Isa isa) {
  if (!supported(isa))
    throw std::invalid_argument(std::string("ISA '") + isa_name(isa) +
                                "' is not supported by this CPU or build");
  current().store(static_cast<int>(isa), std::memory_order_relaxed);
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    default: return "generic";
  }
}

std::string cpu_features() {
  std::string out;
  for (const char* f : {"fma", "avx2", "avx512f", "avx512bw", "avx512dq", "avx512vl"})
    if (cpu_has(f)) out += (out.empty() ? "" : " ") + std::string(f);
  return out;
}

std::string compiled_isas() {
  std::string out = "generic";
  if (compiled(Isa::avx2)) out += " avx2";
  if (compiled(Isa::avx512)) out += " avx512";
  return out;
}
}  // namespace fc
