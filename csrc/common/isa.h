// Run-time choice of the instruction-set path. Every kernel source is compiled once
// per ISA into namespaces fc::avx512, fc::avx2 and fc::generic; FC_DISPATCH calls the
// copy that matches this CPU (or FASTCONV_ISA=generic|avx2|avx512, for testing).
#pragma once
#include <string>

namespace fc {
enum class Isa { generic = 0, avx2 = 1, avx512 = 2 };
Isa active_isa();
Isa best_supported_isa();
void set_isa(Isa isa);  // throws std::invalid_argument if this CPU/build lacks it
const char* isa_name(Isa isa);
std::string cpu_features();  // space-separated list of the features we test for
std::string compiled_isas();
}  // namespace fc

#ifdef FC_HAVE_avx512
#define FC_CASE_avx512(...) case ::fc::Isa::avx512: return ::fc::avx512::__VA_ARGS__;
#else
#define FC_CASE_avx512(...)
#endif
#ifdef FC_HAVE_avx2
#define FC_CASE_avx2(...) case ::fc::Isa::avx2: return ::fc::avx2::__VA_ARGS__;
#else
#define FC_CASE_avx2(...)
#endif

// FC_DISPATCH(fn<T>(args...)) returns fc::<isa>::fn<T>(args...) for the active ISA.
#define FC_DISPATCH(...)                      \
  switch (::fc::active_isa()) {               \
    FC_CASE_avx512(__VA_ARGS__)               \
    FC_CASE_avx2(__VA_ARGS__)                 \
    default: return ::fc::generic::__VA_ARGS__; \
  }
