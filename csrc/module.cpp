// The Python extension module and the root of the `fastpicard` op library.
// Each op lives in its own file and adds its schema with TORCH_LIBRARY_FRAGMENT and its
// CPU kernel with TORCH_LIBRARY_IMPL; importing this module registers all of them.
#include <pybind11/pybind11.h>
#include <torch/library.h>
#include <ATen/Parallel.h>
#include <torch/version.h>

#include "python_bindings.h"

TORCH_LIBRARY(fastpicard, m) {}

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastpicard compiled kernels (ops are registered under torch.ops.fastpicard)";
  m.def("parallel_info", []() { return at::get_parallel_info(); },
        "ATen parallel backend and thread settings this extension runs with");
  m.attr("built_with_torch") = TORCH_VERSION;  // the torch this extension was compiled against
  fastpicard::bind_picard_loop(m);
}
