// RMSNorm and SiLU·up of s2lpo.rollout.train_forward's training pass, forward and backward, for
// s2lpo/rollout/train_kernel.py's autograd functions (the attention block: train_attention.cpp). Templated on the
// float type (float32 in training, float64 for gradcheck in the tests). Reductions over rows (weight gradients) are
// summed in a fixed order of fixed blocks: the results do not depend on the thread count.
#include <ATen/ATen.h>
#include "common.h"
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <vector>

using at::Tensor;

namespace {

constexpr int64_t kBlock = 64;  // rows per partial sum of a weight gradient

}  // namespace

std::vector<Tensor> rms_norm_fwd(const Tensor& x, const Tensor& w, double eps) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && w.is_contiguous(), "rms_norm_fwd: contiguous [rows, d]");
  const int64_t n = x.size(0), d = x.size(1);
  Tensor y = at::empty_like(x), r = at::empty({n}, x.options());
  s2lpo::dispatch(x, "rms_norm_fwd", [&](auto tag) {
    using T = decltype(tag);
    const T *xp = x.data_ptr<T>(), *wp = w.data_ptr<T>();
    T *yp = y.data_ptr<T>(), *rp = r.data_ptr<T>();
    at::parallel_for(0, n, 16, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const T s = rp[i] = s2lpo::rstd_of(xp + i * d, d, eps);
#pragma omp simd
        for (int64_t j = 0; j < d; ++j) yp[i * d + j] = xp[i * d + j] * s * wp[j];
      }
    });
  });
  return {y, r};
}

std::vector<Tensor> rms_norm_bwd(const Tensor& gy_, const Tensor& x, const Tensor& w, const Tensor& r) {
  const Tensor gy = gy_.contiguous();
  const int64_t n = x.size(0), d = x.size(1), blocks = (n + kBlock - 1) / kBlock;
  Tensor gx = at::empty_like(x), parts = at::zeros({blocks, d}, x.options());
  s2lpo::dispatch(x, "rms_norm_bwd", [&](auto tag) {
    using T = decltype(tag);
    const T *xp = x.data_ptr<T>(), *wp = w.data_ptr<T>(), *rp = r.data_ptr<T>(),
                   *gp = gy.data_ptr<T>();
    T *gxp = gx.data_ptr<T>(), *pp = parts.data_ptr<T>();
    at::parallel_for(0, blocks, 1, [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k)
        for (int64_t i = k * kBlock; i < std::min(n, (k + 1) * kBlock); ++i)
          s2lpo::rms_back(xp + i * d, wp, rp[i], gp + i * d, gxp + i * d, pp + k * d, d);
    });
  });
  return {gx, parts.sum(0)};
}

// act = silu(gate)·up of gu = [gate | up] ([rows, 2·inter])
Tensor silu_mul_fwd(const Tensor& gu) {
  TORCH_CHECK(gu.dim() == 2 && gu.is_contiguous() && gu.size(1) % 2 == 0, "silu_mul_fwd: contiguous [rows, 2i]");
  const int64_t n = gu.size(0), m = gu.size(1) / 2;
  Tensor act = at::empty({n, m}, gu.options());
  s2lpo::dispatch(gu, "silu_mul_fwd", [&](auto tag) {
    using T = decltype(tag);
    const T* g = gu.data_ptr<T>();
    T* a = act.data_ptr<T>();
    at::parallel_for(0, n, 16, [&](int64_t b, int64_t e) {
      std::vector<T> sig(m);
      for (int64_t i = b; i < e; ++i) {
        const T *x = g + i * 2 * m, *u = x + m;
        s2lpo::sigmoid_row(x, sig.data(), m);
#pragma omp simd
        for (int64_t j = 0; j < m; ++j) a[i * m + j] = x[j] * sig[j] * u[j];
      }
    });
  });
  return act;
}

Tensor silu_mul_bwd(const Tensor& ga_, const Tensor& gu) {
  const Tensor ga = ga_.contiguous();
  const int64_t n = gu.size(0), m = gu.size(1) / 2;
  Tensor out = at::empty_like(gu);
  s2lpo::dispatch(gu, "silu_mul_bwd", [&](auto tag) {
    using T = decltype(tag);
    const T *g = gu.data_ptr<T>(), *d = ga.data_ptr<T>();
    T* o = out.data_ptr<T>();
    at::parallel_for(0, n, 16, [&](int64_t b, int64_t e) {
      std::vector<T> sig(m);
      for (int64_t i = b; i < e; ++i) {
        const T *x = g + i * 2 * m, *u = x + m, *dy = d + i * m;
        T *ox = o + i * 2 * m, *ou = ox + m;
        s2lpo::sigmoid_row(x, sig.data(), m);
#pragma omp simd
        for (int64_t j = 0; j < m; ++j) {
          const T s = sig[j];
          ox[j] = dy[j] * u[j] * s * (T(1) + x[j] * (T(1) - s));
          ou[j] = dy[j] * x[j] * s;
        }
      }
    });
  });
  return out;
}
