// Kernel templates of the graph ops (see graph_isa.h). Included only by graph_isa_<isa>.cpp,
// which first includes graph_impl_deps.h, then selects the instruction set, then defines
//   FASTPICARD_ISA     the namespace name: base, avx2 (FASTPICARD_ISA_NAME: as a string)
//   FASTPICARD_VBYTES  the vector width in bytes the feature loops are written for.
// Everything here has internal linkage, so each ISA's copy stays its own.
//
// Layout: one row of the output is computed by one thread from start to end (a gather of
// the row's entries into a float32/float64 row buffer, then a fused epilogue), so results do
// not depend on the thread count and no float atomics are needed. Row ranges are balanced
// by entries + rows and handed out dynamically, so high-degree rows do not leave a thread
// idle (a single row is never split, though: one hub holding most edges runs on one thread).

#ifndef FASTPICARD_ISA
#error "graph_impl.h is included only by graph_isa_<isa>.cpp"
#endif

namespace fastpicard {
namespace graph_cpu {
namespace FASTPICARD_ISA {
namespace {

// Weight of entry k: none (1), weight[k], or weight[perm[k]] (transposed CSR).
enum WeightMode { kNoWeight = 0, kDirect = 1, kPerm = 2 };

template <int WM, typename A, typename I>
inline A weight_of(const A* w, const I* perm, int64_t k) {
  if constexpr (WM == kNoWeight) {
    return A(1);
  } else if constexpr (WM == kDirect) {
    return w[k];
  } else {
    return w[perm[k]];
  }
}

// Element loads/stores through common.h's io<T>: branch-free bf16 and native _Float16
// conversions, so half/bfloat16 loops vectorise too.
template <typename T>
FASTPICARD_INLINE acc_t<T> ld(const T* p, int64_t i) {
  return io<T>::load(raw_ptr(p)[i]);
}
template <typename T>
FASTPICARD_INLINE void st(T* p, int64_t i, acc_t<T> v) {
  raw_ptr(p)[i] = io<T>::store(v);
}

template <typename A>
struct VecOf {
  typedef A type __attribute__((vector_size(FASTPICARD_VBYTES)));
};

// Source rows of entries this far ahead are prefetched: a random gather is latency bound on
// graphs that do not fit in cache, and rows of consecutive entries are unrelated.
constexpr int64_t kPrefetchAhead = 16;
constexpr int kBlockVectors = 8;  // accumulators held in registers per feature block

// out[0 : NV*L] = sum over entries [e0, e1) of w_k * src[col[k], f0 : f0 + NV*L] (src rows
// have F elements), with the NV accumulator vectors held in registers.
template <int NV, int WM, typename A, typename I>
inline void gather_block(const I* col, const A* w, const I* perm, int64_t e0, int64_t e1,
                         int64_t nnz, const A* src, int64_t F, int64_t f0, A* out) {
  using V = typename VecOf<A>::type;
  constexpr int64_t L = sizeof(V) / sizeof(A);
  V acc[NV];
  for (int v = 0; v < NV; ++v) acc[v] = V{};
  for (int64_t k = e0; k < e1; ++k) {
    if (k + kPrefetchAhead < nnz) {
      const char* p = reinterpret_cast<const char*>(
          src + static_cast<int64_t>(col[k + kPrefetchAhead]) * F + f0);
      for (int64_t off = 0; off < NV * L * static_cast<int64_t>(sizeof(A)); off += 64)
        __builtin_prefetch(p + off);
    }
    const A wk = weight_of<WM>(w, perm, k);
    const A* s = src + static_cast<int64_t>(col[k]) * F + f0;
    for (int v = 0; v < NV; ++v) {
      V t;
      std::memcpy(&t, s + v * L, sizeof(V));
      acc[v] += wk * t;
    }
  }
  for (int v = 0; v < NV; ++v) std::memcpy(out + v * L, &acc[v], sizeof(V));
}

// buf[0 : fe - fb] = sum over entries [e0, e1) of w_k * src[col[k], fb : fe] for a float or
// double source: features in register blocks of 8, 4, 2, 1 vectors (one pass over the entries
// per block), the last (fe - fb) mod L features one at a time.
template <int WM, typename A, typename I>
inline void gather_row_vec(const I* col, const A* w, const I* perm, int64_t e0, int64_t e1,
                           int64_t nnz, const A* src, int64_t F, int64_t fb, int64_t fe, A* buf) {
  constexpr int64_t L = sizeof(typename VecOf<A>::type) / sizeof(A);
  int64_t f0 = fb;
  for (; fe - f0 >= kBlockVectors * L; f0 += kBlockVectors * L)
    gather_block<kBlockVectors, WM>(col, w, perm, e0, e1, nnz, src, F, f0, buf + (f0 - fb));
  if (fe - f0 >= 4 * L) {
    gather_block<4, WM>(col, w, perm, e0, e1, nnz, src, F, f0, buf + (f0 - fb));
    f0 += 4 * L;
  }
  if (fe - f0 >= 2 * L) {
    gather_block<2, WM>(col, w, perm, e0, e1, nnz, src, F, f0, buf + (f0 - fb));
    f0 += 2 * L;
  }
  if (fe - f0 >= L) {
    gather_block<1, WM>(col, w, perm, e0, e1, nnz, src, F, f0, buf + (f0 - fb));
    f0 += L;
  }
  for (; f0 < fe; ++f0) {
    A acc = 0;
    for (int64_t k = e0; k < e1; ++k)
      acc += weight_of<WM>(w, perm, k) * src[static_cast<int64_t>(col[k]) * F + f0];
    buf[f0 - fb] = acc;
  }
}

// Same for a half/bfloat16 source: convert after load, accumulate in the row buffer.
template <int WM, typename S, typename A, typename I>
inline void gather_row_generic(const I* col, const A* w, const I* perm, int64_t e0,
                               int64_t e1, const S* src, int64_t F, int64_t fb, int64_t fe,
                               A* buf) {
  const int64_t n = fe - fb;
  for (int64_t f = 0; f < n; ++f) buf[f] = 0;
  for (int64_t k = e0; k < e1; ++k) {
    const A wk = weight_of<WM>(w, perm, k);
    const S* s = src + static_cast<int64_t>(col[k]) * F + fb;
#pragma omp simd
    for (int64_t f = 0; f < n; ++f) buf[f] += wk * ld(s, f);
  }
}

template <int WM, typename S, typename A, typename I>
inline void gather_row(const I* col, const A* w, const I* perm, int64_t e0, int64_t e1,
                       int64_t nnz, const S* src, int64_t F, int64_t fb, int64_t fe, A* buf) {
  if constexpr (std::is_same_v<S, A>) {
    gather_row_vec<WM>(col, w, perm, e0, e1, nnz, src, F, fb, fe, buf);
  } else {
    gather_row_generic<WM>(col, w, perm, e0, e1, src, F, fb, fe, buf);
  }
}

template <typename S, typename A, typename I>
inline void gather_row_any(const I* col, const A* w, const I* perm, int64_t e0, int64_t e1,
                           int64_t nnz, const S* src, int64_t F, int64_t fb, int64_t fe,
                           A* buf) {
  if (perm != nullptr && w != nullptr) {
    gather_row<kPerm>(col, w, perm, e0, e1, nnz, src, F, fb, fe, buf);
  } else if (w != nullptr) {
    gather_row<kDirect>(col, w, perm, e0, e1, nnz, src, F, fb, fe, buf);
  } else {
    gather_row<kNoWeight>(col, w, perm, e0, e1, nnz, src, F, fb, fe, buf);
  }
}

// buf += bias; buf = act(buf); y = buf (when y is set). NaN stays NaN through every act.
template <typename T, typename A>
inline void bias_act_row(A* buf, const T* bias, int64_t F, Act act, A slope, T* y) {
  if (bias != nullptr) {
#pragma omp simd
    for (int64_t f = 0; f < F; ++f) buf[f] += ld(bias, f);
  }
  switch (act) {
    case Act::kRelu:
#pragma omp simd
      for (int64_t f = 0; f < F; ++f) buf[f] = buf[f] < A(0) ? A(0) : buf[f];
      break;
    case Act::kLeakyRelu:
#pragma omp simd
      for (int64_t f = 0; f < F; ++f) buf[f] = buf[f] < A(0) ? buf[f] * slope : buf[f];
      break;
    case Act::kTanh:
      for (int64_t f = 0; f < F; ++f) buf[f] = std::tanh(buf[f]);
      break;
    case Act::kIdentity:
      break;
  }
  if (y != nullptr) {
#pragma omp simd
    for (int64_t f = 0; f < F; ++f) st(y, f, buf[f]);
  }
}

// out = alpha*x + beta*dropout(z); r = sum (out - x)^2, s = sum out^2 (in acc precision).
// A dropped element is multiplied by 0, so NaN still shows in the residual.
template <bool DROP, typename T, typename A>
inline void mix_row(const A* z, const T* x, T* out, int64_t F, A alpha, A beta, uint32_t rk,
                    uint32_t thr, A scale, A& r, A& s) {
  A rs = 0, ss = 0;
#pragma omp simd reduction(+ : rs, ss)
  for (int64_t f = 0; f < F; ++f) {
    A zv = z[f];
    if constexpr (DROP) {
      const uint32_t hv = mix32(rk ^ static_cast<uint32_t>(f));
      zv *= (hv >> 8) >= thr ? scale : A(0);
    }
    const A xv = ld(x, f);
    const A nv = alpha * xv + beta * zv;
    st(out, f, nv);
    const A d = nv - xv;
    rs += d * d;
    ss += nv * nv;
  }
  r = rs;
  s = ss;
}

template <typename T, typename A>
inline void copy_row(const T* x, T* out, int64_t F, A& s) {
  A ss = 0;
#pragma omp simd reduction(+ : ss)
  for (int64_t f = 0; f < F; ++f) {
    raw_ptr(out)[f] = raw_ptr(x)[f];
    const A xv = ld(x, f);
    ss += xv * xv;
  }
  s = ss;
}

template <typename T>
const T* opt_ptr(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<T>() : nullptr;
}

template <typename T, typename I>
void update_forward_typed(const UpdateForward& p) {
  using A = acc_t<T>;
  const int64_t rows = p.a.rows, F = p.h.size(1), nnz = p.a.col.numel();
  const I* rp = p.a.rowptr.const_data_ptr<I>();
  const I* col = p.a.col.const_data_ptr<I>();
  const A* w = opt_ptr<A>(p.a.weight);
  const T* h = p.h.const_data_ptr<T>();
  const T* x = p.x.const_data_ptr<T>();
  const T* bias = opt_ptr<T>(p.bias);
  T* out = p.out.data_ptr<T>();
  T* y = p.y.defined() ? p.y.data_ptr<T>() : nullptr;
  A* rr = p.row_res.data_ptr<A>();
  A* rn = p.row_norm.defined() ? p.row_norm.data_ptr<A>() : nullptr;
  const A alpha = static_cast<A>(p.alpha), beta = static_cast<A>(1.0 - p.alpha);
  const A slope = static_cast<A>(p.slope), scale = static_cast<A>(p.drop.scale);
  const std::vector<int64_t> bounds = balanced_rows(p.a.rowptr, rows, F);
  const int64_t chunks = static_cast<int64_t>(bounds.size()) - 1;
  parallel_chunks(chunks, chunks < 2, [&](int64_t c) {
    std::vector<A> buf(std::max<int64_t>(F, 1));
    for (int64_t i = bounds[c]; i < bounds[c + 1]; ++i) {
      const int64_t o = i * F;
      gather_row_any<T, A, I>(col, w, nullptr, rp[i], rp[i + 1], nnz, h, F, 0, F, buf.data());
      bias_act_row<T, A>(buf.data(), bias, F, p.act, slope, y ? y + o : nullptr);
      const bool fz = p.frozen != nullptr && p.frozen[p.batch ? p.batch[i] : 0];
      A r = 0, s = 0;
      if (fz) {
        copy_row<T, A>(x + o, out + o, F, s);
      } else if (p.drop.on) {
        const uint32_t rk = mix32(static_cast<uint32_t>(i) ^ p.drop.key);
        mix_row<true, T, A>(buf.data(), x + o, out + o, F, alpha, beta, rk, p.drop.threshold,
                            scale, r, s);
      } else {
        mix_row<false, T, A>(buf.data(), x + o, out + o, F, alpha, beta, 0, 0, scale, r, s);
      }
      rr[i] = r;
      if (rn) rn[i] = s;
    }
  });
}

// gp = beta * g * dropout mask * act'(y); gx = alpha * g (frozen rows are handled by the
// caller). Two branch-free loops, so both vectorise.
template <int ACT, bool DROP, typename T, typename A>
inline void backward_row(const T* g, const T* y, A* gp, T* gx, int64_t F, A alpha, A beta,
                         A slope, uint32_t rk, uint32_t thr, A scale) {
#pragma omp simd
  for (int64_t f = 0; f < F; ++f) {
    A d = beta * ld(g, f);
    if constexpr (DROP) {
      const uint32_t hv = mix32(rk ^ static_cast<uint32_t>(f));
      d *= (hv >> 8) >= thr ? scale : A(0);
    }
    if constexpr (ACT == static_cast<int>(Act::kRelu)) {
      d = ld(y, f) <= A(0) ? A(0) : d;  // as torch's threshold_backward
    } else if constexpr (ACT == static_cast<int>(Act::kLeakyRelu)) {
      d = ld(y, f) > A(0) ? d : d * slope;
    } else if constexpr (ACT == static_cast<int>(Act::kTanh)) {
      const A yv = ld(y, f);
      d *= A(1) - yv * yv;
    }
    gp[f] = d;
  }
  if (gx != nullptr) {
#pragma omp simd
    for (int64_t f = 0; f < F; ++f) st(gx, f, alpha * ld(g, f));
  }
}

template <bool DROP, typename T, typename A>
inline void backward_row_act(Act act, const T* g, const T* y, A* gp, T* gx, int64_t F, A alpha,
                             A beta, A slope, uint32_t rk, uint32_t thr, A scale) {
  switch (act) {
    case Act::kRelu:
      backward_row<1, DROP>(g, y, gp, gx, F, alpha, beta, slope, rk, thr, scale);
      break;
    case Act::kLeakyRelu:
      backward_row<2, DROP>(g, y, gp, gx, F, alpha, beta, slope, rk, thr, scale);
      break;
    case Act::kTanh:
      backward_row<3, DROP>(g, y, gp, gx, F, alpha, beta, slope, rk, thr, scale);
      break;
    case Act::kIdentity:
      backward_row<0, DROP>(g, y, gp, gx, F, alpha, beta, slope, rk, thr, scale);
      break;
  }
}

template <typename T>
void update_backward_rows_typed(const UpdateBackwardRows& p) {
  using A = acc_t<T>;
  const int64_t rows = p.grad.size(0), F = p.grad.size(1);
  const T* g = p.grad.const_data_ptr<T>();
  const T* y = opt_ptr<T>(p.y);
  A* gp = p.gp.data_ptr<A>();
  T* gx = p.gx.defined() ? p.gx.data_ptr<T>() : nullptr;
  const A alpha = static_cast<A>(p.alpha), beta = static_cast<A>(1.0 - p.alpha);
  const A slope = static_cast<A>(p.slope), scale = static_cast<A>(p.drop.scale);
  const int64_t per = std::max<int64_t>(1, kSerialElements / std::max<int64_t>(F, 1));
  const int64_t chunks = (rows + per - 1) / per;
  parallel_chunks(chunks, chunks < 2, [&](int64_t c) {
    for (int64_t i = c * per; i < std::min(rows, (c + 1) * per); ++i) {
      const T* gi = g + i * F;
      T* gxi = gx ? gx + i * F : nullptr;
      if (p.frozen != nullptr && p.frozen[p.batch ? p.batch[i] : 0]) {
        for (int64_t f = 0; f < F; ++f) gp[i * F + f] = A(0);
        if (gxi) std::memcpy(gxi, gi, F * sizeof(T));
        continue;
      }
      const T* yi = y ? y + i * F : nullptr;
      if (p.drop.on) {
        const uint32_t rk = mix32(static_cast<uint32_t>(i) ^ p.drop.key);
        backward_row_act<true>(p.act, gi, yi, gp + i * F, gxi, F, alpha, beta, slope, rk,
                               p.drop.threshold, scale);
      } else {
        backward_row_act<false>(p.act, gi, yi, gp + i * F, gxi, F, alpha, beta, slope, 0, 0,
                                scale);
      }
    }
  });
}

// Transposed max backward: entry k of row r (target t = col[k], edge perm[k]) contributes
// w * src[t, f] where arg[t, f] == perm[k].
template <typename A, typename I>
inline void gather_row_masked(const I* col, const A* w, const I* perm, const I* arg,
                              int64_t e0, int64_t e1, const A* src, int64_t F, A* buf) {
  for (int64_t f = 0; f < F; ++f) buf[f] = 0;
  for (int64_t k = e0; k < e1; ++k) {
    const I e = perm[k];
    const A wk = w ? w[e] : A(1);
    const int64_t t = static_cast<int64_t>(col[k]) * F;
#pragma omp simd
    for (int64_t f = 0; f < F; ++f) buf[f] += arg[t + f] == e ? wk * src[t + f] : A(0);
  }
}

template <typename T, typename S, typename I>
void gather_typed(const Gather& p) {
  using A = acc_t<T>;
  const int64_t rows = p.a.rows, F = p.out.size(1), nnz = p.a.col.numel();
  const I* rp = p.a.rowptr.const_data_ptr<I>();
  const I* col = p.a.col.const_data_ptr<I>();
  const I* perm = opt_ptr<I>(p.a.perm);
  const A* w = opt_ptr<A>(p.a.weight);
  const I* arg = opt_ptr<I>(p.arg);
  const S* src = p.src.const_data_ptr<S>();
  T* out = p.out.data_ptr<T>();
  const std::vector<int64_t> bounds = balanced_rows(p.a.rowptr, rows, F);
  const int64_t chunks = static_cast<int64_t>(bounds.size()) - 1;
  parallel_chunks(chunks, chunks < 2, [&](int64_t c) {
    std::vector<A> buf(std::max<int64_t>(F, 1));
    for (int64_t i = bounds[c]; i < bounds[c + 1]; ++i) {
      const int64_t e0 = rp[i], e1 = rp[i + 1];
      if constexpr (std::is_same_v<S, A>) {
        if (arg != nullptr) {
          gather_row_masked<A, I>(col, w, perm, arg, e0, e1, src, F, buf.data());
        } else {
          gather_row_any<S, A, I>(col, w, perm, e0, e1, nnz, src, F, 0, F, buf.data());
        }
      } else {
        gather_row_any<S, A, I>(col, w, perm, e0, e1, nnz, src, F, 0, F, buf.data());
      }
      const A sc = p.mean && e1 > e0 ? A(1) / static_cast<A>(e1 - e0) : A(1);
      T* o = out + i * F;
#pragma omp simd
      for (int64_t f = 0; f < F; ++f) st(o, f, buf[f] * sc);
    }
  });
}

template <typename T, typename I>
void edge_dot_typed(const EdgeDot& p) {
  using A = acc_t<T>;
  const int64_t rows = p.a.rows, F = p.h.size(1);
  const I* rp = p.a.rowptr.const_data_ptr<I>();
  const I* col = p.a.col.const_data_ptr<I>();
  const I* arg = opt_ptr<I>(p.arg);
  const A* g = p.g.const_data_ptr<A>();
  const T* h = p.h.const_data_ptr<T>();
  A* gw = p.gw.data_ptr<A>();
  const std::vector<int64_t> bounds = balanced_rows(p.a.rowptr, rows, F);
  const int64_t chunks = static_cast<int64_t>(bounds.size()) - 1;
  parallel_chunks(chunks, chunks < 2, [&](int64_t c) {
    for (int64_t i = bounds[c]; i < bounds[c + 1]; ++i) {
      const A* gi = g + i * F;
      const I* ai = arg ? arg + i * F : nullptr;
      for (int64_t k = rp[i]; k < rp[i + 1]; ++k) {
        const T* hk = h + static_cast<int64_t>(col[k]) * F;
        A s = 0;
        if (ai != nullptr) {
          const I kk = static_cast<I>(k);
#pragma omp simd reduction(+ : s)
          for (int64_t f = 0; f < F; ++f) s += ai[f] == kk ? gi[f] * ld(hk, f) : A(0);
        } else {
#pragma omp simd reduction(+ : s)
          for (int64_t f = 0; f < F; ++f) s += gi[f] * ld(hk, f);
        }
        gw[k] = s;
      }
    }
  });
}

template <typename T, typename I>
void max_typed(const Max& p) {
  using A = acc_t<T>;
  const int64_t rows = p.a.rows, F = p.h.size(1);
  const I* rp = p.a.rowptr.const_data_ptr<I>();
  const I* col = p.a.col.const_data_ptr<I>();
  const A* w = opt_ptr<A>(p.a.weight);
  const T* h = p.h.const_data_ptr<T>();
  T* out = p.out.data_ptr<T>();
  I* arg = p.arg.data_ptr<I>();
  const std::vector<int64_t> bounds = balanced_rows(p.a.rowptr, rows, F);
  const int64_t chunks = static_cast<int64_t>(bounds.size()) - 1;
  parallel_chunks(chunks, chunks < 2, [&](int64_t c) {
    std::vector<A> best(std::max<int64_t>(F, 1));
    for (int64_t i = bounds[c]; i < bounds[c + 1]; ++i) {
      const int64_t e0 = rp[i], e1 = rp[i + 1];
      T* o = out + i * F;
      I* ai = arg + i * F;
      if (e0 == e1) {
        for (int64_t f = 0; f < F; ++f) {
          o[f] = T(0);
          ai[f] = I(-1);
        }
        continue;
      }
      {
        const A wk = w ? w[e0] : A(1);
        const T* s = h + static_cast<int64_t>(col[e0]) * F;
        for (int64_t f = 0; f < F; ++f) {
          best[f] = wk * ld(s, f);
          ai[f] = static_cast<I>(e0);
        }
      }
      for (int64_t k = e0 + 1; k < e1; ++k) {
        const A wk = w ? w[k] : A(1);
        const T* s = h + static_cast<int64_t>(col[k]) * F;
        const I kk = static_cast<I>(k);
#pragma omp simd
        for (int64_t f = 0; f < F; ++f) {
          const A v = wk * ld(s, f);
          const A b = best[f];
          const bool take = v > b || (v != v && b == b);  // the first NaN wins and stays
          best[f] = take ? v : b;
          ai[f] = take ? kk : ai[f];
        }
      }
      for (int64_t f = 0; f < F; ++f) st(o, f, best[f]);
    }
  });
}

template <typename A>
void column_sum_typed(const ColumnSum& p) {
  constexpr int64_t kRows = 256;  // rows per partial sum: fixed, so threads do not matter
  const int64_t rows = p.src.size(0), F = p.src.size(1);
  const int64_t blocks = (rows + kRows - 1) / kRows;
  const A* src = p.src.const_data_ptr<A>();
  std::vector<A> part(static_cast<size_t>(std::max<int64_t>(blocks, 1) * F), A(0));
  parallel_chunks(blocks, rows * F <= kSerialElements, [&](int64_t b) {
    A* pb = part.data() + b * F;
    for (int64_t i = b * kRows; i < std::min(rows, (b + 1) * kRows); ++i) {
      const A* s = src + i * F;
#pragma omp simd
      for (int64_t f = 0; f < F; ++f) pb[f] += s[f];
    }
  });
  A* out = p.out.data_ptr<A>();
  for (int64_t f = 0; f < F; ++f) out[f] = A(0);
  for (int64_t b = 0; b < blocks; ++b)
    for (int64_t f = 0; f < F; ++f) out[f] += part[b * F + f];
}

#define FASTPICARD_GRAPH_INDEX_TYPES(idx, NAME, ...)                 \
  if ((idx) == at::kInt) {                                           \
    using index_t = int32_t;                                         \
    __VA_ARGS__();                                                   \
  } else {                                                           \
    using index_t = int64_t;                                         \
    __VA_ARGS__();                                                   \
  }

void update_forward(const UpdateForward& p) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.h.scalar_type(),
                                  "spmm_update", [&] {
    FASTPICARD_GRAPH_INDEX_TYPES(p.a.col.scalar_type(), "spmm_update", [&] {
      update_forward_typed<scalar_t, index_t>(p);
    });
  });
}

void update_backward_rows(const UpdateBackwardRows& p) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.grad.scalar_type(),
                                  "spmm_update_backward", [&] {
    update_backward_rows_typed<scalar_t>(p);
  });
}

void gather(const Gather& p) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.out.scalar_type(), "spmm", [&] {
    FASTPICARD_GRAPH_INDEX_TYPES(p.a.col.scalar_type(), "spmm", [&] {
      if (p.src.scalar_type() == p.out.scalar_type()) {
        gather_typed<scalar_t, scalar_t, index_t>(p);
      } else {
        gather_typed<scalar_t, acc_t<scalar_t>, index_t>(p);
      }
    });
  });
}

void edge_dot(const EdgeDot& p) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.h.scalar_type(), "spmm_edge", [&] {
    FASTPICARD_GRAPH_INDEX_TYPES(p.a.col.scalar_type(), "spmm_edge", [&] {
      edge_dot_typed<scalar_t, index_t>(p);
    });
  });
}

void max(const Max& p) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.h.scalar_type(), "spmm_max", [&] {
    FASTPICARD_GRAPH_INDEX_TYPES(p.a.col.scalar_type(), "spmm_max", [&] {
      max_typed<scalar_t, index_t>(p);
    });
  });
}

void column_sum(const ColumnSum& p) {
  if (p.src.scalar_type() == at::kDouble) {
    column_sum_typed<double>(p);
  } else {
    column_sum_typed<float>(p);
  }
}

#undef FASTPICARD_GRAPH_INDEX_TYPES

}  // namespace

const Kernels& table() {
  static const Kernels k{FASTPICARD_ISA_NAME, &update_forward, &update_backward_rows, &gather,
                         &edge_dot, &max, &column_sum};
  return k;
}

}  // namespace FASTPICARD_ISA
}  // namespace graph_cpu
}  // namespace fastpicard
