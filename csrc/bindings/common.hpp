// Helpers for checking numpy arguments at the boundary, with messages naming the argument.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "core/check.hpp"

namespace pyseqrl::bind {

namespace py = pybind11;

inline std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

inline std::string dtype_str(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

// A C-contiguous array of exactly dtype T, ndim `ndim`; otherwise a ValueError naming `name`.
template <typename T>
py::array_t<T, py::array::c_style> require(const py::handle& obj, const char* name, py::ssize_t ndim) {
  if (!py::isinstance<py::array>(obj))
    throw std::invalid_argument(std::string(name) + ": expected a numpy array, got " +
                                py::str(py::type::of(obj).attr("__name__")).cast<std::string>());
  auto a = py::reinterpret_borrow<py::array>(obj);
  const auto want = py::dtype::of<T>();
  PYSEQRL_CHECK(a.dtype().is(want) || a.dtype().equal(want), name, ": expected dtype ",
                py::str(want).cast<std::string>(), ", got ", dtype_str(a));
  PYSEQRL_CHECK(a.ndim() == ndim, name, ": expected a ", ndim, "-D array, got shape ", shape_str(a));
  PYSEQRL_CHECK(a.flags() & py::array::c_style, name, ": expected a C-contiguous array (use np.ascontiguousarray)");
  return py::reinterpret_borrow<py::array_t<T, py::array::c_style>>(a);
}

// A numeric array converted to a C-contiguous T array (bool/int/float accepted), with a clear error otherwise.
template <typename T>
py::array_t<T, py::array::c_style> as_numeric(const py::handle& obj, const char* name) {
  py::array a = py::array::ensure(obj);
  if (!a) throw std::invalid_argument(std::string(name) + ": expected an array-like of numbers");
  const char kind = a.dtype().kind();
  PYSEQRL_CHECK(kind == 'f' || kind == 'i' || kind == 'u' || kind == 'b', name,
                ": expected a numeric array (bool, int or float), got dtype ", dtype_str(a));
  return py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(a);
}

// Checks a.shape == (expected...) exactly; -1 entries match anything.
inline void check_shape(const py::array& a, const char* name, const std::vector<py::ssize_t>& expected) {
  bool ok = a.ndim() == static_cast<py::ssize_t>(expected.size());
  for (size_t i = 0; ok && i < expected.size(); ++i) ok = expected[i] < 0 || a.shape(i) == expected[i];
  if (!ok) {
    std::string e = "(";
    for (size_t i = 0; i < expected.size(); ++i)
      e += (i ? ", " : "") + (expected[i] < 0 ? std::string("*") : std::to_string(expected[i]));
    e += expected.size() == 1 ? ",)" : ")";
    throw std::invalid_argument(std::string(name) + ": expected shape " + e + ", got " + shape_str(a));
  }
}

}  // namespace pyseqrl::bind
