// Launcher of the SegmentSampler gather kernel (segment_gather_kernel.cuh) with its argument checks.
#include <string>

#include "kernels/common.cuh"
#include "kernels/segment_gather_kernel.cuh"

namespace pyseqrl {
namespace kernels {

void segment_gather(const SegmentGatherParams& p, cudaStream_t stream) {
  auto need = [](bool ok, const std::string& msg) {
    if (!ok) throw std::invalid_argument("segment_gather: " + msg);
  };
  need(p.N > 0 && p.S > 0 && p.A > 0 && p.E > 0,
       "expected N, S, A, E > 0, got N=" + std::to_string(p.N) + " S=" + std::to_string(p.S) +
           " A=" + std::to_string(p.A) + " E=" + std::to_string(p.E));
  need(p.batch_size > 0 && p.batch_size <= 0x7fffffff && p.context_len > 0 && p.max_ep_len > 0,
       "expected batch_size in [1, 2^31), context_len > 0, max_ep_len > 0, got " + std::to_string(p.batch_size) +
           ", " + std::to_string(p.context_len) + ", " + std::to_string(p.max_ep_len));
  need((p.state_mean == nullptr) == (p.state_inv_std == nullptr), "state_mean/state_inv_std: give both or neither");
  need(p.observations && p.actions && p.rewards && p.rtg && p.episode_ends && p.batch_index && p.states &&
           p.out_actions && p.out_rewards && p.returns_to_go && p.timesteps && p.mask,
       "a required device pointer is null");
  gather::segment_gather_kernel<<<static_cast<unsigned>(p.batch_size), gather::kGatherThreads, 0, stream>>>(p);
  check_launch("segment_gather_kernel");
}

}  // namespace kernels
}  // namespace pyseqrl
