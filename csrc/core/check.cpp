#include "core/check.hpp"

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

namespace pyseqrl {

int64_t physical_memory_bytes() {
#if defined(_SC_PHYS_PAGES) && defined(_SC_PAGE_SIZE)
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  if (pages > 0 && page > 0) {
    int64_t bytes = 0;
    if (!__builtin_mul_overflow(static_cast<int64_t>(pages), static_cast<int64_t>(page), &bytes)) return bytes;
    return INT64_MAX;
  }
#endif
  return 0;
}

void check_allocation(int64_t bytes, const char* what) {
  static const int64_t physical = physical_memory_bytes();
  if (physical > 0 && bytes > physical)
    throw allocation_error(detail::concat(what, ": needs ", bytes, " bytes (", bytes / (1 << 20),
                                          " MiB), more than this machine's ", physical / (1 << 20),
                                          " MiB of physical memory"));
}

}  // namespace pyseqrl
