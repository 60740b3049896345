// Argument checks that throw (never abort): std::invalid_argument -> ValueError, std::out_of_range -> IndexError.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

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

}  // namespace pyseqrl
