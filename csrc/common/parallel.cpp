#include "common/parallel.h"

#include <omp.h>

#include <algorithm>
#include <atomic>

namespace fc {
namespace {
std::atomic<int> g_threads{0};
}

int num_threads() {
  int n = g_threads.load(std::memory_order_relaxed);
  return n > 0 ? n : std::max(1, omp_get_num_procs());
}

void set_num_threads(int n) { g_threads.store(n > 0 ? n : 0, std::memory_order_relaxed); }

int threads_for(int64_t work_items, int64_t flops_per_item) {
  // Below ~64k flops of total work a parallel region costs more than it saves.
  const int64_t total = work_items * std::max<int64_t>(flops_per_item, 1);
  if (work_items <= 1 || total < (int64_t(1) << 16)) return 1;
  return static_cast<int>(std::min<int64_t>(num_threads(), work_items));
}
}  // namespace fc
