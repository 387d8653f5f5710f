// The decode step's matmuls: x·Wᵀ for a few rows (1-64: a sampling batch whose rows leave as they finish) against
// weights laid out once per sampling call. MKL's sgemm (torch.mm) lays the weight out again on every call, which at
// these row counts costs as much as the multiplication (measured on 2 AMD EPYC cores, toy-l's five matmul shapes:
// 8 rows 273 µs against 105 µs here, 64 rows 875 against 620), and oneDNN's own layout costs ~0.3-0.5 ms a weight
// to make. Here the layout is a plain copy ([panels, K, 16], pack_weights) and the product a 6-row by 16-column
// register tile (12 AVX2 accumulators, two weight vectors and one broadcast: BLIS's Haswell micro-kernel shape),
// the panels spread over torch's intra-op threads. Each output is one sum over k in order: the results do not
// depend on the thread count.
#include "packed_gemm.h"

#include <ATen/Parallel.h>
#include <algorithm>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define S2LPO_GEMM_SIMD 1
#endif

namespace s2lpo {
namespace {

constexpr int kRows = 6;  // rows per register tile

#if defined(S2LPO_GEMM_SIMD)
// y[m, :nc] (+)= sum over k of x[m, k]·panel[k, :] for m < MR. Named accumulators: gcc keeps an array of them on
// the stack, a store after every FMA.
template <int MR, bool ACC>
inline void tile(const float* x, int64_t K, const float* panel, float* y, int64_t ldy, int64_t nc) {
#define S2LPO_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5)
#define S2LPO_INIT(m) __m256 a##m = _mm256_setzero_ps(), b##m = a##m; const float* x##m = x + (MR > m ? m : 0) * K;
  S2LPO_ROWS(S2LPO_INIT)
#pragma GCC unroll 4  // 8-13 % faster at 8-64 rows than the loop as it is (fewer loop-carried increments)
  for (int64_t k = 0; k < K; ++k) {
    const __m256 w0 = _mm256_loadu_ps(panel + k * kPanel), w1 = _mm256_loadu_ps(panel + k * kPanel + 8);
#define S2LPO_FMA(m)                                     \
  if constexpr (MR > m) {                                \
    const __m256 xb = _mm256_broadcast_ss(x##m + k);     \
    a##m = _mm256_fmadd_ps(xb, w0, a##m);                \
    b##m = _mm256_fmadd_ps(xb, w1, b##m);                \
  }
    S2LPO_ROWS(S2LPO_FMA)
  }
  alignas(32) float t[kPanel];
#define S2LPO_STORE(m)                                                                             \
  if constexpr (MR > m) {                                                                          \
    float* yr = y + m * ldy;                                                                       \
    if (nc == kPanel) {                                                                            \
      if (ACC) {                                                                                   \
        a##m = _mm256_add_ps(a##m, _mm256_loadu_ps(yr));                                           \
        b##m = _mm256_add_ps(b##m, _mm256_loadu_ps(yr + 8));                                       \
      }                                                                                            \
      _mm256_storeu_ps(yr, a##m);                                                                  \
      _mm256_storeu_ps(yr + 8, b##m);                                                              \
    } else {                                                                                       \
      _mm256_store_ps(t, a##m);                                                                    \
      _mm256_store_ps(t + 8, b##m);                                                                \
      for (int64_t j = 0; j < nc; ++j) yr[j] = ACC ? yr[j] + t[j] : t[j];                          \
    }                                                                                              \
  }
  S2LPO_ROWS(S2LPO_STORE)
#undef S2LPO_ROWS
#undef S2LPO_INIT
#undef S2LPO_FMA
#undef S2LPO_STORE
}
#else
template <int MR, bool ACC>
inline void tile(const float* x, int64_t K, const float* panel, float* y, int64_t ldy, int64_t nc) {
  for (int m = 0; m < MR; ++m) {
    float acc[kPanel] = {};
    for (int64_t k = 0; k < K; ++k)
      for (int64_t j = 0; j < kPanel; ++j) acc[j] += x[m * K + k] * panel[k * kPanel + j];
    for (int64_t j = 0; j < nc; ++j) y[m * ldy + j] = ACC ? y[m * ldy + j] + acc[j] : acc[j];
  }
}
#endif

// all M rows against one panel (its 16·K floats stay in L1 while the rows pass)
template <bool ACC>
void panel_rows(const float* x, int64_t M, int64_t K, const float* panel, float* y, int64_t ldy, int64_t nc) {
  int64_t m = 0;
  for (; m + kRows <= M; m += kRows) tile<kRows, ACC>(x + m * K, K, panel, y + m * ldy, ldy, nc);
  const float* xm = x + m * K;
  float* ym = y + m * ldy;
  switch (M - m) {
    case 5: tile<5, ACC>(xm, K, panel, ym, ldy, nc); break;
    case 4: tile<4, ACC>(xm, K, panel, ym, ldy, nc); break;
    case 3: tile<3, ACC>(xm, K, panel, ym, ldy, nc); break;
    case 2: tile<2, ACC>(xm, K, panel, ym, ldy, nc); break;
    case 1: tile<1, ACC>(xm, K, panel, ym, ldy, nc); break;
    default: break;
  }
}

void gemm(const at::Tensor& x_, const at::Tensor& w, at::Tensor& y, bool acc) {
  TORCH_CHECK(w.dim() == 3 && w.size(2) == kPanel && w.is_contiguous() && w.scalar_type() == at::kFloat,
              "packed_mm: the weight is not one of pack_weights'");
  const at::Tensor x = x_.contiguous();
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.size(1) == w.size(1), "packed_mm: x is [rows, ",
              w.size(1), "] float32, not ", x.sizes(), " ", x.scalar_type());
  const int64_t M = x.size(0), K = x.size(1), N = y.size(1), panels = w.size(0);
  TORCH_CHECK(y.size(0) == M && y.stride(1) == 1 && (N + kPanel - 1) / kPanel == panels,
              "packed_mm: ", N, " output columns do not fit a weight of ", panels, " panels");
  const float* xp = x.data_ptr<float>();
  const float* wp = w.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const int64_t ldy = y.stride(0);
  // panels per thread: at least ~0.5 MFLOP of work each, or a parallel region's fork and join cost more
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 19) / std::max<int64_t>(1, 2 * M * K * kPanel));
  at::parallel_for(0, panels, grain, [&](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p) {
      const int64_t nc = std::min(kPanel, N - p * kPanel);
      if (acc)
        panel_rows<true>(xp, M, K, wp + p * K * kPanel, yp + p * kPanel, ldy, nc);
      else
        panel_rows<false>(xp, M, K, wp + p * K * kPanel, yp + p * kPanel, ldy, nc);
    }
  });
}

}  // namespace

at::Tensor pack_weights(const std::vector<at::Tensor>& parts) {
  TORCH_CHECK(!parts.empty(), "pack_weights: no weights");
  const int64_t K = parts[0].size(1);
  std::vector<at::Tensor> dense;
  std::vector<const float*> rows;  // each output column's weight row
  for (const auto& p : parts) {
    TORCH_CHECK(p.dim() == 2 && p.size(1) == K && p.scalar_type() == at::kFloat,
                "pack_weights: float32 [out, ", K, "] weights, not ", p.sizes(), " ", p.scalar_type());
    dense.push_back(p.contiguous());
    const float* d = dense.back().data_ptr<float>();
    for (int64_t i = 0; i < p.size(0); ++i) rows.push_back(d + i * K);
  }
  const int64_t N = rows.size(), panels = (N + kPanel - 1) / kPanel;
  at::Tensor out = at::empty({panels, K, kPanel}, parts[0].options());
  float* o = out.data_ptr<float>();
  at::parallel_for(0, panels, 8, [&](int64_t b, int64_t e) {
    for (int64_t p = b; p < e; ++p)
      for (int64_t c = 0; c < kPanel; ++c) {
        float* col = o + p * K * kPanel + c;
        const int64_t j = p * kPanel + c;
        if (j < N)
          for (int64_t k = 0; k < K; ++k) col[k * kPanel] = rows[j][k];
        else
          for (int64_t k = 0; k < K; ++k) col[k * kPanel] = 0.f;
      }
  });
  return out;
}

at::Tensor packed_mm(const at::Tensor& x, const at::Tensor& w, int64_t n) {
  at::Tensor y = at::empty({x.size(0), n}, x.options());
  gemm(x, w, y, false);
  return y;
}

void packed_addmm_(at::Tensor& y, const at::Tensor& x, const at::Tensor& w) { gemm(x, w, y, true); }

bool packed_gemm_simd() {
#if defined(S2LPO_GEMM_SIMD)
  return true;
#else
  return false;
#endif
}

}  // namespace s2lpo
