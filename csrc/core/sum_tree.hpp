// Sum and min segment trees over leaf priorities, for proportional prioritized replay.
#pragma once

#include <cstdint>
#include <limits>
#include <stdexcept>
#include <vector>

namespace pyseqrl {

class SumTree {
 public:
  explicit SumTree(int64_t capacity = 0) { reset(capacity); }

  // Bytes reset(capacity) allocates (capacity must be <= 2^61, which any buffer that fits in memory is).
  static int64_t bytes_for(int64_t capacity) { return 4 * leaves_for(capacity) * static_cast<int64_t>(sizeof(double)); }

  void reset(int64_t capacity) {
    size_ = leaves_for(capacity);
    sum_.assign(2 * size_, 0.0);
    min_.assign(2 * size_, std::numeric_limits<double>::infinity());
  }

  void set(int64_t i, double value) {
    int64_t node = i + size_;
    sum_[node] = value;
    min_[node] = value;
    for (node >>= 1; node >= 1; node >>= 1) {
      sum_[node] = sum_[2 * node] + sum_[2 * node + 1];
      min_[node] = std::min(min_[2 * node], min_[2 * node + 1]);
    }
  }

  double get(int64_t i) const { return sum_[i + size_]; }
  double total() const { return sum_[1]; }
  double min() const { return min_[1]; }

  // Smallest leaf index whose prefix sum exceeds mass (mass in [0, total)).
  int64_t find_prefix(double mass) const {
    int64_t node = 1;
    while (node < size_) {
      if (mass < sum_[2 * node]) {
        node = 2 * node;
      } else {
        mass -= sum_[2 * node];
        node = 2 * node + 1;
      }
    }
    return node - size_;
  }

 private:
  static int64_t leaves_for(int64_t capacity) {
    if (capacity > (int64_t{1} << 58)) throw std::invalid_argument("capacity: too large for a priority tree");
    int64_t n = 1;
    while (n < capacity) n <<= 1;
    return n;
  }

  int64_t size_ = 1;
  std::vector<double> sum_, min_;
};

}  // namespace pyseqrl
