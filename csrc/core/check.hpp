// Argument checks that throw (never abort): std::invalid_argument -> ValueError, std::out_of_range -> IndexError,
// allocation_error (a std::bad_alloc) -> MemoryError.
#pragma once

#include <cstdint>
#include <new>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace pyseqrl {

namespace detail {
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

// PYSEQRL_CHECK(cond, "what", ...): throws std::invalid_argument with the streamed message when cond is false.
#define PYSEQRL_CHECK(cond, ...)                                                   \
  do {                                                                             \
    if (!(cond)) throw std::invalid_argument(::pyseqrl::detail::concat(__VA_ARGS__)); \
  } while (0)

#define PYSEQRL_CHECK_INDEX(cond, ...)                                           \
  do {                                                                           \
    if (!(cond)) throw std::out_of_range(::pyseqrl::detail::concat(__VA_ARGS__)); \
  } while (0)

// A buffer that cannot be allocated, with a message naming what it was for. pybind11 turns any std::bad_alloc
// into MemoryError carrying what().
class allocation_error : public std::bad_alloc {
 public:
  explicit allocation_error(std::string message) : message_(std::move(message)) {}
  const char* what() const noexcept override { return message_.c_str(); }

 private:
  std::string message_;
};

// a * b for sizes a, b >= 0. Throws std::invalid_argument "<what>: <a> x <b> overflows 64 bits" when the product
// does not fit in int64_t, so a wrapped size never reaches an allocation or an index.
inline int64_t checked_mul(int64_t a, int64_t b, const char* what) {
  int64_t r = 0;
  if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r))
    throw std::invalid_argument(detail::concat(what, ": the size ", a, " x ", b, " overflows 64 bits"));
  return r;
}

// a + b for sizes a, b >= 0, with the same overflow check.
inline int64_t checked_add(int64_t a, int64_t b, const char* what) {
  int64_t r = 0;
  if (a < 0 || b < 0 || __builtin_add_overflow(a, b, &r))
    throw std::invalid_argument(detail::concat(what, ": the size ", a, " + ", b, " overflows 64 bits"));
  return r;
}

// Total physical memory of this machine in bytes (0 when unknown).
int64_t physical_memory_bytes();

// Throws allocation_error naming `what` when a buffer of `bytes` can never be had: more than the machine's
// physical memory (the buffers are written in full, so overcommit would only defer the failure to the kernel's
// OOM killer).
void check_allocation(int64_t bytes, const char* what);

// new T[n] that reports failure as allocation_error naming `what` (after check_allocation).
template <typename T>
T* allocate_array(int64_t n, const char* what) {
  check_allocation(checked_mul(n, static_cast<int64_t>(sizeof(T)), what), what);
  try {
    return new T[static_cast<size_t>(n)];
  } catch (const std::bad_alloc&) {
    throw allocation_error(detail::concat(what, ": could not allocate ", n * static_cast<int64_t>(sizeof(T)),
                                          " bytes"));
  }
}

}  // namespace pyseqrl
