// Thread-count control shared by all kernels. The count is a process-wide setting
// (not OpenMP's per-thread ICV), so calls from any Python thread see the same value.
#pragma once
#include <cstdint>

namespace fc {
int num_threads();
void set_num_threads(int n);
// Threads worth using for `work` independent items of roughly `grain` flops each.
int threads_for(int64_t work_items, int64_t flops_per_item = 1 << 16);
}  // namespace fc
