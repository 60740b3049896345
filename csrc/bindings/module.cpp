// The single compiled module, pyseqrl._core. Python facades live in pyseqrl/data/native.py and
// pyseqrl/ops/.
#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace pyseqrl::bind {
void register_returns(py::module_& m);
void register_segment_sampler(py::module_& m);
void register_replay_buffer(py::module_& m);
void register_ops(py::module_& m);
}  // namespace pyseqrl::bind

#ifdef PYSEQRL_WITH_CUDA
void register_cuda_ops(pybind11::module_& m);
#endif

PYBIND11_MODULE(_core, m) {
  m.doc() = "pyseqrl's native core: return-to-go, Decision-Transformer window sampling, replay buffers and dropout masks.";
  m.attr("__version__") = PYSEQRL_VERSION;
#ifdef PYSEQRL_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
  pyseqrl::bind::register_returns(m);
  pyseqrl::bind::register_segment_sampler(m);
  pyseqrl::bind::register_replay_buffer(m);
  pyseqrl::bind::register_ops(m);
#ifdef PYSEQRL_WITH_CUDA
  register_cuda_ops(m);
#endif
}
