// Bindings of the CPU training ops: dropout keep-masks.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "bindings/common.hpp"
#include "core/dropout.hpp"

namespace pyseqrl::bind {

namespace py = pybind11;

void register_ops(py::module_& m) {
  m.def(
      "dropout_keep_mask",
      [](const py::object& out_obj, double keep_prob, uint64_t seed) {
        auto out = require<uint8_t>(out_obj, "out", 1);
        PYSEQRL_CHECK(out.writeable(), "out: expected a writable array");
        uint8_t* o = out.mutable_data();
        const int64_t n = out.shape(0);
        py::gil_scoped_release release;
        dropout_keep_mask(o, n, keep_prob, seed);
      },
      py::arg("out"), py::arg("keep_prob"), py::arg("seed"),
      "Fill the uint8 [N] array ``out`` with a dropout keep-mask: 1 with probability keep_prob, else 0, from a "
      "counter-based generator (the same mask for the same seed, N and keep_prob on every machine).");
}

}  // namespace pyseqrl::bind
