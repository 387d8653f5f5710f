// Pieces shared by decode_step.cpp, train_ops.cpp and train_attention.cpp: the float-type dispatch, exp and
// sigmoid over a row, the attention's dot products and row combinations, RMSNorm's parts.
#pragma once
#include <ATen/ATen.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#if defined(__AVX2__)
#include <immintrin.h>
#include <sleef.h>  // shipped with torch, its symbols exported by libtorch_cpu: the exp torch's own kernels use
#endif

namespace s2lpo {

// f(T{}) for the tensor's float type: float32 (training) or float64 (gradcheck). Not AT_DISPATCH_*: a macro's
// argument cannot hold the loops' #pragma lines.
template <typename F>
void dispatch(const at::Tensor& t, const char* name, F&& f) {
  if (t.scalar_type() == at::kFloat) {
    f(float{});
  } else {
    TORCH_CHECK(t.scalar_type() == at::kDouble, name, ": float32 or float64 only, not ", t.scalar_type());
    f(double{});
  }
}

// x[i] = exp(x[i]) for i < n: 8 floats at a time through SLEEF (1 ulp) on AVX2, std::exp otherwise. (A scalar
// exp in the loops cost more than the rest of the attention and SiLU: ~10 ns each, a million a layer.)
template <typename T>
inline void exp_inplace(T* x, int64_t n) {
  int64_t i = 0;
#if defined(__AVX2__)
  if constexpr (std::is_same_v<T, float>)
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, Sleef_expf8_u10(_mm256_loadu_ps(x + i)));
#endif
  for (; i < n; ++i) x[i] = std::exp(x[i]);
}

// sig[j] = sigmoid(gate[j]) of one row
template <typename T>
inline void sigmoid_row(const T* gate, T* sig, int64_t m) {
#pragma omp simd
  for (int64_t j = 0; j < m; ++j) sig[j] = -gate[j];
  exp_inplace(sig, m);
#pragma omp simd
  for (int64_t j = 0; j < m; ++j) sig[j] = T(1) / (T(1) + sig[j]);
}

#if defined(__AVX2__)
// the sum of a's 8 lanes (halves, then pairs, then the last two)
inline float hsum(__m256 a) {
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  return _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
}
#endif

// sum over i < n of x[i]·y[i]
template <typename T>
inline T dot(const T* x, const T* y, int64_t n) {
  int64_t i = 0;
  T s = 0;
#if defined(__AVX2__)
  if constexpr (std::is_same_v<T, float>) {
    __m256 a = _mm256_setzero_ps(), b = _mm256_setzero_ps();
    for (; i + 16 <= n; i += 16) {
      a = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), a);
      b = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), _mm256_loadu_ps(y + i + 8), b);
    }
    for (; i + 8 <= n; i += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), a);
    s = hsum(_mm256_add_ps(a, b));
  }
#endif
  for (; i < n; ++i) s += x[i] * y[i];
  return s;
}

// out[0..d) = sum over k < n of w[k]·M(k)[k·d ..], M(k) = A for k < split and B otherwise (the decode step's
// keys and values: a row's prompt positions in its prompt's cache row, the rest in its own): a row combination, its
// sums held in registers and taken in order of k (accumulating in out through memory chains every step on the store
// before it)
template <typename T>
inline void combine_split(const T* w, const T* A, int64_t split, const T* B, int64_t n, int64_t d, T* out) {
  const int64_t na = std::min(split, n);
  int64_t j = 0;
#if defined(__AVX2__)
  if constexpr (std::is_same_v<T, float>) {
    for (; j + 32 <= d; j += 32) {
      __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      for (int64_t k = 0; k < n; ++k) {
        const __m256 c = _mm256_set1_ps(w[k]);
        const float* m = (k < na ? A : B) + k * d + j;
        a0 = _mm256_fmadd_ps(c, _mm256_loadu_ps(m), a0);
        a1 = _mm256_fmadd_ps(c, _mm256_loadu_ps(m + 8), a1);
        a2 = _mm256_fmadd_ps(c, _mm256_loadu_ps(m + 16), a2);
        a3 = _mm256_fmadd_ps(c, _mm256_loadu_ps(m + 24), a3);
      }
      _mm256_storeu_ps(out + j, a0);
      _mm256_storeu_ps(out + j + 8, a1);
      _mm256_storeu_ps(out + j + 16, a2);
      _mm256_storeu_ps(out + j + 24, a3);
    }
    for (; j + 8 <= d; j += 8) {
      __m256 a = _mm256_setzero_ps();
      for (int64_t k = 0; k < n; ++k)
        a = _mm256_fmadd_ps(_mm256_set1_ps(w[k]), _mm256_loadu_ps((k < na ? A : B) + k * d + j), a);
      _mm256_storeu_ps(out + j, a);
    }
  }
#endif
  for (; j < d; ++j) {
    T a = 0;
    for (int64_t k = 0; k < n; ++k) a += w[k] * (k < na ? A : B)[k * d + j];
    out[j] = a;
  }
}

// out[0..d) = sum over k < n of w[k]·M[k·d ..]
template <typename T>
inline void combine(const T* w, const T* M, int64_t n, int64_t d, T* out) {
  combine_split(w, M, n, M, n, d, out);
}

// C[r, k] = sum over d of A[r, d]·Bt[d, k] for r < R, k < n (A [R, d], Bt [d, n], C [R, n]; n a multiple of 8):
// the scores of R query rows against n keys, in 4-row by 8-key tiles held in registers on AVX2
template <typename T>
inline void products(const T* A, const T* Bt, int64_t R, int64_t n, int64_t d, T* C) {
  int64_t r = 0;
#if defined(__AVX2__)
  if constexpr (std::is_same_v<T, float>) {
    for (; r + 4 <= R; r += 4)
      for (int64_t k = 0; k < n; k += 8) {
        __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
        const float* a = A + r * d;
        for (int64_t j = 0; j < d; ++j) {
          const __m256 b = _mm256_loadu_ps(Bt + j * n + k);
          c0 = _mm256_fmadd_ps(_mm256_set1_ps(a[j]), b, c0);
          c1 = _mm256_fmadd_ps(_mm256_set1_ps(a[d + j]), b, c1);
          c2 = _mm256_fmadd_ps(_mm256_set1_ps(a[2 * d + j]), b, c2);
          c3 = _mm256_fmadd_ps(_mm256_set1_ps(a[3 * d + j]), b, c3);
        }
        _mm256_storeu_ps(C + r * n + k, c0);
        _mm256_storeu_ps(C + (r + 1) * n + k, c1);
        _mm256_storeu_ps(C + (r + 2) * n + k, c2);
        _mm256_storeu_ps(C + (r + 3) * n + k, c3);
      }
  }
#endif
  for (; r < R; ++r)
    for (int64_t k = 0; k < n; ++k) {
      T c = 0;
      for (int64_t j = 0; j < d; ++j) c += A[r * d + j] * Bt[j * n + k];
      C[r * n + k] = c;
    }
}

template <typename T>
inline T rstd_of(const T* x, int64_t d, double eps) {
  T ss = 0;
#pragma omp simd reduction(+ : ss)
  for (int64_t j = 0; j < d; ++j) ss += x[j] * x[j];
  return T(1) / std::sqrt(ss / T(d) + T(eps));
}

// dx of y = x·r·w (r = rstd) given gy, and the row's share of dw (added to gw)
template <typename T>
inline void rms_back(const T* x, const T* w, T r, const T* gy, T* gx, T* gw, int64_t d) {
  T dot = 0;
#pragma omp simd reduction(+ : dot)
  for (int64_t j = 0; j < d; ++j) dot += gy[j] * w[j] * x[j];
  const T c = r * r * r * dot / T(d);
#pragma omp simd
  for (int64_t j = 0; j < d; ++j) {
    gx[j] = r * gy[j] * w[j] - c * x[j];
    gw[j] += gy[j] * x[j] * r;
  }
}

}  // namespace s2lpo
