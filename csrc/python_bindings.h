// Python bindings beyond the dispatcher's ops (module.cpp calls each binder once).
#pragma once
#include <pybind11/pybind11.h>

namespace fastpicard {

// _C.PicardLoop: the solver's per-iteration call, bound directly (see picard_loop_python.cpp).
void bind_picard_loop(pybind11::module_& m);

}  // namespace fastpicard
