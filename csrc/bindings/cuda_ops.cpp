// pyseqrl._core.cuda: raw entry points of the CUDA kernels (csrc/kernels).
//
// Everything arrives as integers: device pointers (tensor.data_ptr()), element strides, sizes and the stream
// handle (torch.cuda.current_stream().cuda_stream). Shapes, dtypes and devices are validated in Python
// (pyseqrl/ops); here only what the kernels cannot work without is checked. No torch is linked.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <tuple>

#include <cuda_runtime_api.h>

#include "kernels/attention.h"
#include "kernels/segment_gather.h"

namespace py = pybind11;
namespace k = pyseqrl::kernels;

namespace {

// (data_ptr, stride_b, stride_h, stride_l) of a [B, H, L, D] tensor with a contiguous last dimension.
using TensorArg = std::tuple<uintptr_t, int64_t, int64_t, int64_t>;

const void* ptr_of(const TensorArg& t, const char* name) {
  const uintptr_t p = std::get<0>(t);
  if (p == 0) throw std::invalid_argument(std::string(name) + ": expected a device pointer, got 0");
  return reinterpret_cast<const void*>(p);
}

k::Strides4 strides_of(const TensorArg& t) {
  k::Strides4 s;
  s.b = std::get<1>(t);
  s.h = std::get<2>(t);
  s.l = std::get<3>(t);
  return s;
}

k::AttentionShape make_shape(int B, int H, int L, int D, int dtype, float scale, float dropout_p, uintptr_t philox,
                             uintptr_t key_mask, int64_t mask_stride_b, int algo) {
  if (algo < 0 || algo > 2)
    throw std::invalid_argument("algo: expected 0 (automatic), 1 (SIMT) or 2 (tensor cores), got " +
                                std::to_string(algo));
  if (dtype < 0 || dtype > 2)
    throw std::invalid_argument("dtype: expected 0 (float32), 1 (bfloat16) or 2 (float16), got " +
                                std::to_string(dtype));
  k::AttentionShape s;
  s.B = B, s.H = H, s.L = L, s.D = D;
  s.dtype = static_cast<k::DType>(dtype);
  s.scale = scale;
  s.dropout_p = dropout_p;
  s.philox = reinterpret_cast<const int64_t*>(philox);
  s.key_mask = reinterpret_cast<const uint8_t*>(key_mask);
  s.mask_stride_b = mask_stride_b;
  s.algo = algo;
  return s;
}

cudaStream_t stream_of(uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

// This module links its own (static) CUDA runtime, whose current device is independent of torch's: select the
// tensors' device before every launch (cheap when it does not change).
void set_device(int device) {
  if (device < 0) throw std::invalid_argument("device: expected a CUDA device index >= 0, got " + std::to_string(device));
  const cudaError_t err = cudaSetDevice(device);
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("cudaSetDevice(") + std::to_string(device) + ") failed: " + cudaGetErrorString(err));
}

void attention_forward(const TensorArg& q, const TensorArg& k_, const TensorArg& v, const TensorArg& o,
                       uintptr_t lse, uintptr_t key_mask, int64_t mask_stride_b, int B, int H, int L, int D,
                       int dtype, float scale, float dropout_p, uintptr_t philox, uintptr_t stream, int device, int algo) {
  set_device(device);
  k::AttentionForwardParams p;
  p.shape = make_shape(B, H, L, D, dtype, scale, dropout_p, philox, key_mask, mask_stride_b, algo);
  p.q = ptr_of(q, "q");
  p.k = ptr_of(k_, "k");
  p.v = ptr_of(v, "v");
  p.o = const_cast<void*>(ptr_of(o, "out"));
  p.q_strides = strides_of(q);
  p.k_strides = strides_of(k_);
  p.v_strides = strides_of(v);
  p.o_strides = strides_of(o);
  if (lse == 0) throw std::invalid_argument("lse: expected a device pointer, got 0");
  p.lse = reinterpret_cast<float*>(lse);
  k::attention_forward(p, stream_of(stream));
}

void attention_backward(const TensorArg& q, const TensorArg& k_, const TensorArg& v, const TensorArg& o,
                        const TensorArg& dout, const TensorArg& dq, const TensorArg& dk, const TensorArg& dv,
                        uintptr_t lse, uintptr_t delta, uintptr_t key_mask, int64_t mask_stride_b, int B, int H,
                        int L, int D, int dtype, float scale, float dropout_p, uintptr_t philox, uintptr_t stream, int device, int algo) {
  set_device(device);
  k::AttentionBackwardParams p;
  p.shape = make_shape(B, H, L, D, dtype, scale, dropout_p, philox, key_mask, mask_stride_b, algo);
  p.q = ptr_of(q, "q");
  p.k = ptr_of(k_, "k");
  p.v = ptr_of(v, "v");
  p.o = ptr_of(o, "out");
  p.dout = ptr_of(dout, "grad_out");
  p.dq = const_cast<void*>(ptr_of(dq, "grad_q"));
  p.dk = const_cast<void*>(ptr_of(dk, "grad_k"));
  p.dv = const_cast<void*>(ptr_of(dv, "grad_v"));
  p.q_strides = strides_of(q);
  p.k_strides = strides_of(k_);
  p.v_strides = strides_of(v);
  p.o_strides = strides_of(o);
  p.dout_strides = strides_of(dout);
  p.dq_strides = strides_of(dq);
  p.dk_strides = strides_of(dk);
  p.dv_strides = strides_of(dv);
  if (lse == 0 || delta == 0) throw std::invalid_argument("lse/delta: expected device pointers, got 0");
  p.lse = reinterpret_cast<const float*>(lse);
  p.delta = reinterpret_cast<float*>(delta);
  k::attention_backward(p, stream_of(stream));
}

}  // namespace

void register_cuda_ops(py::module_& m) {
  auto cuda = m.def_submodule("cuda", "Raw CUDA kernels (device pointers, sizes, stream); use pyseqrl.ops instead.");
  cuda.attr("attention_max_len") = k::kAttentionMaxLen;
  cuda.attr("attention_head_dims") = py::make_tuple(32, 64, 128);

  cuda.def("attention_forward", &attention_forward, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"),
           py::arg("lse"), py::arg("key_mask"), py::arg("mask_stride_b"), py::arg("B"), py::arg("H"), py::arg("L"),
           py::arg("D"), py::arg("dtype"), py::arg("scale"), py::arg("dropout_p"), py::arg("philox"),
           py::arg("stream"), py::arg("device"), py::arg("algo") = 0, py::call_guard<py::gil_scoped_release>(),
           "Causal masked attention forward. Tensors are (data_ptr, stride_b, stride_h, stride_l) of [B,H,L,D];\n"
           "lse: fp32 [B,H,L] output; key_mask: uint8 [B,L] pointer or 0; philox: int64[2] device pointer or 0;\n"
           "algo: 0 automatic, 1 SIMT kernels, 2 tensor-core kernels (L <= 64, bf16/fp16, sm_80+).");
  cuda.def("attention_backward", &attention_backward, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"),
           py::arg("grad_out"), py::arg("grad_q"), py::arg("grad_k"), py::arg("grad_v"), py::arg("lse"),
           py::arg("delta"), py::arg("key_mask"), py::arg("mask_stride_b"), py::arg("B"), py::arg("H"),
           py::arg("L"), py::arg("D"), py::arg("dtype"), py::arg("scale"), py::arg("dropout_p"), py::arg("philox"),
           py::arg("stream"), py::arg("device"), py::arg("algo") = 0, py::call_guard<py::gil_scoped_release>(),
           "Backward of attention_forward; delta: fp32 [B,H,L] workspace.");
  cuda.def(
      "attention_dropout_mask",
      [](int B, int H, int L, float dropout_p, uintptr_t philox, uintptr_t out, uintptr_t stream, int device) {
        set_device(device);
        if (out == 0) throw std::invalid_argument("out: expected a device pointer, got 0");
        k::attention_dropout_mask(B, H, L, dropout_p, reinterpret_cast<const int64_t*>(philox),
                                  reinterpret_cast<uint8_t*>(out), stream_of(stream));
      },
      py::arg("B"), py::arg("H"), py::arg("L"), py::arg("dropout_p"), py::arg("philox"), py::arg("out"),
      py::arg("stream"), py::arg("device"), py::call_guard<py::gil_scoped_release>(),
      "The dropout keep-mask of the attention kernels as uint8 [B,H,L,L] (for tests).");

  cuda.def(
      "segment_gather",
      [](uintptr_t observations, uintptr_t actions, uintptr_t rewards, uintptr_t rtg, uintptr_t episode_ends,
         uintptr_t state_mean, uintptr_t state_inv_std, int64_t N, int64_t S, int64_t A, int64_t E,
         int64_t batch_size, int64_t context_len, int64_t max_ep_len, uint64_t seed, bool sample_by_length,
         float inv_return_scale, float pad_action, bool pad_right, uintptr_t batch_index, uintptr_t out_states,
         uintptr_t out_actions, uintptr_t out_rewards, uintptr_t out_rtg, uintptr_t out_timesteps,
         uintptr_t out_mask, uintptr_t stream, int device) {
        set_device(device);
        k::SegmentGatherParams p;
        p.observations = reinterpret_cast<const float*>(observations);
        p.actions = reinterpret_cast<const float*>(actions);
        p.rewards = reinterpret_cast<const float*>(rewards);
        p.rtg = reinterpret_cast<const float*>(rtg);
        p.episode_ends = reinterpret_cast<const int64_t*>(episode_ends);
        p.state_mean = reinterpret_cast<const float*>(state_mean);
        p.state_inv_std = reinterpret_cast<const float*>(state_inv_std);
        p.N = N, p.S = S, p.A = A, p.E = E;
        p.batch_size = batch_size, p.context_len = context_len, p.max_ep_len = max_ep_len;
        p.seed = seed;
        p.sample_by_length = sample_by_length;
        p.inv_return_scale = inv_return_scale;
        p.pad_action = pad_action;
        p.pad_right = pad_right;
        p.batch_index = reinterpret_cast<const int64_t*>(batch_index);
        p.states = reinterpret_cast<float*>(out_states);
        p.out_actions = reinterpret_cast<float*>(out_actions);
        p.out_rewards = reinterpret_cast<float*>(out_rewards);
        p.returns_to_go = reinterpret_cast<float*>(out_rtg);
        p.timesteps = reinterpret_cast<int64_t*>(out_timesteps);
        p.mask = reinterpret_cast<float*>(out_mask);
        k::segment_gather(p, stream_of(stream));
      },
      py::arg("observations"), py::arg("actions"), py::arg("rewards"), py::arg("rtg"), py::arg("episode_ends"),
      py::arg("state_mean"), py::arg("state_inv_std"), py::arg("N"), py::arg("S"), py::arg("A"), py::arg("E"),
      py::arg("batch_size"), py::arg("context_len"), py::arg("max_ep_len"), py::arg("seed"),
      py::arg("sample_by_length"), py::arg("inv_return_scale"), py::arg("pad_action"), py::arg("pad_right"),
      py::arg("batch_index"),
      py::arg("out_states"), py::arg("out_actions"), py::arg("out_rewards"), py::arg("out_rtg"),
      py::arg("out_timesteps"), py::arg("out_mask"), py::arg("stream"), py::arg("device"), py::call_guard<py::gil_scoped_release>(),
      "One SegmentSampler batch gathered on the GPU (all arguments are device pointers / sizes; see "
      "csrc/kernels/segment_gather.h).");
}
