// Headers used by graph_impl.h. graph_isa_<isa>.cpp includes them before its
// `#pragma GCC target`, so library code keeps the baseline instruction set and only the
// kernels of graph_impl.h are compiled for the wider one.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "common.h"
#include "cpu/graph_isa.h"
