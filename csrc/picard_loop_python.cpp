// _C.PicardLoop: PicardLoop bound to Python with pybind11. The solver calls step() once per
// iteration between two evaluations of the user's fn, i.e. with cold caches; there a direct
// binding costs a few microseconds less than a dispatcher operator (schema-driven argument
// parsing) and that difference is most of the solver's overhead over a bare loop. The ops
// inside a step still go through the dispatcher, so devices and autograd work as before.
//
// Hostile use is refused, not crashed on: an instance made by __new__ without __init__ has no
// loop (every method raises; see loop_of), arguments that are not tensors are named (fn
// returning None), and a mutex serialises threads sharing one loop (each call releases the
// GIL first, so a thread waiting for the mutex never holds the GIL that a Triton kernel
// inside a step needs).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/utils/pybind.h>  // at::Tensor <-> torch.Tensor casters

#include <memory>
#include <mutex>

#include "picard_loop.h"
#include "python_bindings.h"

namespace py = pybind11;

namespace fastpicard {
namespace {

// The loop behind `self`. pybind11 makes the C++ object in __init__; PicardLoop.__new__ alone
// leaves raw memory that a method taking PicardLoop* or PicardLoop& would use as a loop.
std::shared_ptr<PicardLoop> loop_of(py::handle self) {
  TORCH_CHECK_TYPE(py::isinstance<PicardLoop>(self), "PicardLoop: a method called on ",
                   Py_TYPE(self.ptr())->tp_name);
  auto* inst = reinterpret_cast<py::detail::instance*>(self.ptr());
  auto v_h = inst->get_value_and_holder(py::detail::get_type_info(typeid(PicardLoop)));
  TORCH_CHECK(v_h && v_h.holder_constructed(), "PicardLoop: this object was never initialised "
              "(made by __new__ without __init__); construct it as PicardLoop(x0, ...)");
  return v_h.template holder<std::shared_ptr<PicardLoop>>();
}

// A tensor argument received as a plain Python object, so that a wrong type is named.
const at::Tensor& tensor_arg(py::handle obj, const char* must) {
  TORCH_CHECK_TYPE(THPVariable_Check(obj.ptr()), must, " a Tensor, got ",
                   Py_TYPE(obj.ptr())->tp_name);
  return THPVariable_Unpack(obj.ptr());
}

}  // namespace

void bind_picard_loop(py::module_& m) {
  // Errors come out as torch's own bindings raise them: c10 errors keep their Python type
  // (ValueError, torch.OutOfMemoryError, ...), and a Python exception raised inside the
  // dispatcher (a Triton kernel, a dispatch mode) is restored as itself. Local: other
  // extensions' exceptions are not ours to map.
  py::register_local_exception_translator([](std::exception_ptr p) {
    if (p) torch::translate_exception_to_python(p);
  });

  py::class_<PicardLoop, std::shared_ptr<PicardLoop>>(
      m, "PicardLoop",
      "One smoothed-Picard solve's loop state (per-sample flags, counters, residuals, trace, "
      "best iterate). step(x, fn(x)) -> (x_next, active, diverged), the counts read on check "
      "steps and -1 on the others; finish(x) -> (answer, (iterations, abs_residual, "
      "rel_residual, converged, diverged, trace)). Thread-safe (calls are serialised).")
      .def(py::init<const at::Tensor&, double, const c10::optional<at::Tensor>&, int64_t, bool,
                    double, bool, int64_t, double, int64_t, bool>(),
           py::arg("x0"), py::arg("alpha"), py::arg("batch"), py::arg("num_samples"),
           py::arg("leading"), py::arg("tol"), py::arg("rel"), py::arg("max_iter"),
           py::arg("divergence_factor"), py::arg("check_every"),
           py::arg("reuse_buffers") = true)
      .def(
          "step",
          [](py::handle self, py::handle x_obj, py::handle z_obj) {
            const auto held = loop_of(self);
            PicardLoop& loop = *held;
            const at::Tensor& x = tensor_arg(x_obj, "PicardLoop.step: x must be");
            const at::Tensor& z = tensor_arg(z_obj, "picard: fn must return");
            py::gil_scoped_release release;  // check steps may sync a device
            std::lock_guard<std::mutex> lock(loop.mutex());
            return loop.step(x, z);
          },
          py::arg("x"), py::arg("z"))
      .def(
          "active_rows",
          [](py::handle self) {
            const auto held = loop_of(self);
            PicardLoop& loop = *held;
            py::gil_scoped_release release;
            std::lock_guard<std::mutex> lock(loop.mutex());
            return loop.rows(loop.active());
          },
          "Bool mask of the samples still running, broadcast over the rows of x.")
      .def(
          "finish",
          [](py::handle self, const at::Tensor& x) {
            const auto held = loop_of(self);
            PicardLoop& loop = *held;
            LoopResult r;
            {
              py::gil_scoped_release release;
              std::lock_guard<std::mutex> lock(loop.mutex());
              r = loop.finish(x);
            }
            return py::make_tuple(std::get<0>(r),
                                  py::make_tuple(std::get<1>(r), std::get<2>(r), std::get<3>(r),
                                                 std::get<4>(r), std::get<5>(r),
                                                 std::get<6>(r)));
          },
          py::arg("x"))
      .def_property_readonly("steps", [](py::handle self) {
        const auto held = loop_of(self);
        PicardLoop& loop = *held;
        py::gil_scoped_release release;
        std::lock_guard<std::mutex> lock(loop.mutex());
        return loop.steps();
      });
}

}  // namespace fastpicard
