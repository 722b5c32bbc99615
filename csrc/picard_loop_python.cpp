// _C.PicardLoop: PicardLoop bound to Python with pybind11. The solver calls step() once per
// iteration between two evaluations of the user's fn, i.e. with cold caches; there a direct
// binding costs a few microseconds less than a dispatcher operator (schema-driven argument
// parsing) and that difference is most of the solver's overhead over a bare loop. The ops
// inside a step still go through the dispatcher, so devices and autograd work as before.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/utils/pybind.h>  // at::Tensor <-> torch.Tensor casters

#include <memory>

#include "picard_loop.h"
#include "python_bindings.h"

namespace py = pybind11;

namespace fastpicard {

void bind_picard_loop(py::module_& m) {
  // Errors come out as torch's own bindings raise them: c10 errors keep their Python type
  // (ValueError, torch.OutOfMemoryError, ...), and a Python exception raised inside the
  // dispatcher (a Triton kernel, a dispatch mode) is restored as itself. Local: other
  // extensions' exceptions are not ours to map.
  py::register_local_exception_translator([](std::exception_ptr p) {
    if (p) torch::translate_exception_to_python(p);
  });

  using Release = py::call_guard<py::gil_scoped_release>;  // check steps may sync a device
  py::class_<PicardLoop, std::shared_ptr<PicardLoop>>(
      m, "PicardLoop",
      "One smoothed-Picard solve's loop state (per-sample flags, counters, residuals, trace, "
      "best iterate). step(x, fn(x)) -> (x_next, active, diverged), the counts read on check "
      "steps and -1 on the others; finish(x) -> (answer, (iterations, abs_residual, "
      "rel_residual, converged, diverged, trace)).")
      .def(py::init<const at::Tensor&, double, const c10::optional<at::Tensor>&, int64_t, bool,
                    double, bool, int64_t, double, int64_t, bool>(),
           py::arg("x0"), py::arg("alpha"), py::arg("batch"), py::arg("num_samples"),
           py::arg("leading"), py::arg("tol"), py::arg("rel"), py::arg("max_iter"),
           py::arg("divergence_factor"), py::arg("check_every"),
           py::arg("reuse_buffers") = true)
      .def("step", &PicardLoop::step, py::arg("x"), py::arg("z"), Release())
      .def(
          "active_rows", [](const PicardLoop& l) { return l.rows(l.active()); }, Release(),
          "Bool mask of the samples still running, broadcast over the rows of x.")
      .def(
          "finish",
          [](const PicardLoop& l, const at::Tensor& x) {
            LoopResult r;
            {
              py::gil_scoped_release release;
              r = l.finish(x);
            }
            return py::make_tuple(std::get<0>(r),
                                  py::make_tuple(std::get<1>(r), std::get<2>(r), std::get<3>(r),
                                                 std::get<4>(r), std::get<5>(r),
                                                 std::get<6>(r)));
          },
          py::arg("x"))
      .def_property_readonly("steps", &PicardLoop::steps);
}

}  // namespace fastpicard
