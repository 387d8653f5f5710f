// One decode step (one new token per row; or a prefill, s tokens per row) of a Qwen3 causal LM in float32 on the
// CPU: the function of s2lpo.rollout.decode.FastDecoder.forward, with its matmuls through packed_gemm.cpp (weights
// laid out once per sampling call) or ATen's mm, and everything between them (RMSNorms, q/k norms, RoPE, the cache write,
// grouped-query attention, SiLU; exp through common.h's SLEEF loop) as loops over the rows, spread over torch's
// intra-op threads. Built and loaded by s2lpo/rollout/kernel.py.
#include <ATen/ATen.h>
#include "common.h"
#include "packed_gemm.h"
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>
#include <algorithm>
#include <cmath>
#include <vector>

using at::Tensor;

Tensor silu_mul_fwd(const Tensor& gu);  // train_ops.cpp: silu(gate)·up of [gate | up]

namespace {

inline void rms_norm(const float* x, const float* w, float* y, int64_t d, float eps) {
  const float r = s2lpo::rstd_of(x, d, eps);
#pragma omp simd
  for (int64_t j = 0; j < d; ++j) y[j] = x[j] * r * w[j];
}

void rms_norm_rows(const Tensor& x, const Tensor& w, Tensor& y, float eps) {
  const int64_t d = x.size(1);
  const float *xp = x.data_ptr<float>(), *wp = w.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  // on one thread below ~16 k elements (a decode step's rows of a small model): a parallel region's fork and join
  // cost more than the norm
  at::parallel_for(0, x.size(0), std::max<int64_t>(1, 16384 / d), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) rms_norm(xp + r * d, wp, yp + r * d, d, eps);
  });
}

// x·wᵀ with n output columns: through packed_gemm.cpp where w is a weight laid out beforehand (FastDecoder's
// packed weights, [panels, in, 16]), else through ATen's mm (MKL)
Tensor times_t(const Tensor& x, const Tensor& w, int64_t n) {
  if (w.dim() == 3) return s2lpo::packed_mm(x, w, n);
  TORCH_CHECK(w.size(0) == n, "decode_step: a weight of ", w.size(0), " rows where ", n, " were expected");
  return at::mm(x, w.t());
}

// h += x·wᵀ
void add_times_t(Tensor& h, const Tensor& x, const Tensor& w) {
  if (w.dim() == 3)
    s2lpo::packed_addmm_(h, x, w);
  else
    h.addmm_(x, w.t());
}

struct Dims {
  int64_t H, KV, hd, cap, start;  // heads, kv heads, head dim, cache length, this token's position in the cache
  float eps, scale;
};

#if defined(__AVX2__) && defined(__FMA__)
#define S2LPO_ATT_SIMD 1
// r[i] = the sum of v[i]'s 8 lanes: eight dot products finished at once (three rounds of pairwise sums)
inline __m256 sums8(const __m256* v) {
  const __m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
  const __m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

// p[t] = q·k_t for t < end, eight keys at a time (p holds end rounded up to 8; the last block repeats key end - 1),
// k_t = (t < split ? kp : kc) + t·hd, hd = 8·C
template <int C>
void scores(const float* q, const float* kp, const float* kc, int64_t split, int64_t end, float* p) {
  __m256 qv[C];
  for (int c = 0; c < C; ++c) qv[c] = _mm256_loadu_ps(q + 8 * c);
  for (int64_t t0 = 0; t0 < end; t0 += 8) {
    __m256 acc[8];
    for (int u = 0; u < 8; ++u) {
      const int64_t t = std::min<int64_t>(t0 + u, end - 1);
      const float* k = (t < split ? kp : kc) + t * 8 * C;
      __m256 a = _mm256_mul_ps(qv[0], _mm256_loadu_ps(k));
      for (int c = 1; c < C; ++c) a = _mm256_fmadd_ps(qv[c], _mm256_loadu_ps(k + 8 * c), a);
      acc[u] = a;
    }
    _mm256_storeu_ps(p + t0, sums8(acc));
  }
}

// out_i[0 .. 8·C) = sum over t < end of p_i[t]·v_t, v_t = (t < split ? vp : vc) + t·hd, for one query (p1 null) or
// two sharing the values (hd = 8·C, C <= 4: the sums in registers, each in order of t)
template <int C, bool TWO>
void combine(const float* p0, const float* p1, const float* vp, const float* vc, int64_t split, int64_t end,
             int64_t hd, float* out0, float* out1) {
  __m256 a[C], b[C];
  for (int c = 0; c < C; ++c) a[c] = b[c] = _mm256_setzero_ps();
  auto span = [&](const float* v, int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const float* vt = v + t * hd;
      const __m256 w0 = _mm256_set1_ps(p0[t]), w1 = _mm256_set1_ps(TWO ? p1[t] : 0.f);
      for (int c = 0; c < C; ++c) {
        const __m256 x = _mm256_loadu_ps(vt + 8 * c);
        a[c] = _mm256_fmadd_ps(w0, x, a[c]);
        if (TWO) b[c] = _mm256_fmadd_ps(w1, x, b[c]);
      }
    }
  };
  span(vp, 0, std::min(split, end));
  span(vc, std::min(split, end), end);
  for (int c = 0; c < C; ++c) {
    _mm256_storeu_ps(out0 + 8 * c, a[c]);
    if (TWO) _mm256_storeu_ps(out1 + 8 * c, b[c]);
  }
}

// exp(p[t] - max) over the n8 (a multiple of 8) entries of p, masked ones -inf (exp 0); returns 1 / their sum
inline float softmax_weights(float* p, int64_t n8) {
  __m256 mx = _mm256_set1_ps(-INFINITY);
  for (int64_t t = 0; t < n8; t += 8) mx = _mm256_max_ps(mx, _mm256_loadu_ps(p + t));
  __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
  const __m256 m = _mm256_set1_ps(_mm_cvtss_f32(m4));
  __m256 z = _mm256_setzero_ps();
  for (int64_t t = 0; t < n8; t += 8) {
    const __m256 e = Sleef_expf8_u10(_mm256_sub_ps(_mm256_loadu_ps(p + t), m));
    _mm256_storeu_ps(p + t, e);
    z = _mm256_add_ps(z, e);
  }
  return 1.f / s2lpo::hsum(z);
}

// one kv head's G queries (q: [G, hd] in a row) over its keys and values: scores, softmax, weighted sum; hd = 8·C
template <int C>
void attend_group(const float* q, int64_t G, const float* kp, const float* kc, const float* vp, const float* vc,
                  int64_t split, int64_t end, int64_t self, const bool* mask, float scale, float* out, float* sc) {
  constexpr int64_t hd = 8 * C;
  const int64_t n8 = (end + 7) / 8 * 8;
  for (int64_t qi = 0; qi < G; qi += 2) {
    const bool two = qi + 1 < G;
    float *p0 = sc, *p1 = sc + n8;
    float iz[2];
    for (int i = 0; i < 1 + two; ++i) {
      float* p = i ? p1 : p0;
      scores<C>(q + (qi + i) * hd, kp, kc, split, end, p);
      for (int64_t t = 0; t < end; ++t) p[t] = mask[t] || t == self ? p[t] * scale : -INFINITY;
      for (int64_t t = end; t < n8; ++t) p[t] = -INFINITY;
      iz[i] = softmax_weights(p, n8);
    }
    float *o0 = out + qi * hd, *o1 = out + (qi + 1) * hd;
    if (two)
      combine<C, true>(p0, p1, vp, vc, split, end, hd, o0, o1);
    else
      combine<C, false>(p0, nullptr, vp, vc, split, end, hd, o0, nullptr);
    for (int i = 0; i < 1 + two; ++i) {
      float* o = i ? o1 : o0;
#pragma omp simd
      for (int64_t d = 0; d < hd; ++d) o[d] *= iz[i];
    }
  }
}
#endif

// one kv head's G queries the plain way (any head dim): a dot product per key, a row combination
void attend_group_loops(const float* q, int64_t G, const float* kp, const float* kc, const float* vp, const float* vc,
                        int64_t split, int64_t end, int64_t self, const bool* mask, float scale, int64_t hd,
                        float* out, float* p) {
  for (int64_t qi = 0; qi < G; ++qi) {
    float mx = -INFINITY;
    for (int64_t t = 0; t < end; ++t) {  // masked: exp 0; a padded query of a prefill sees itself
      p[t] = mask[t] || t == self ? s2lpo::dot(q + qi * hd, (t < split ? kp : kc) + t * hd, hd) * scale : -INFINITY;
      mx = std::max(mx, p[t]);
    }
    for (int64_t t = 0; t < end; ++t) p[t] -= mx;
    s2lpo::exp_inplace(p, end);
    float z = 0.f;
    for (int64_t t = 0; t < end; ++t) z += p[t];
    const float iz = 1.f / z;
    for (int64_t t = 0; t < end; ++t) p[t] *= iz;
    s2lpo::combine_split(p, vp, split, vc, end, hd, out + qi * hd);  // masked positions weigh 0 (finite values)
  }
}

// q/k norms and RoPE of one token's q and k heads (in place), its k and v written to the cache at D.start, and its
// attention output: queries grouped by the kv head they share, over the cached positions up to its own that the
// row's mask keeps — positions below split read from kp, vp (its prompt's cache row), the others from kc, vc.
// sc: scratch for two rows of scores, each D.start + 1 rounded up to 8.
void attend_row(float* row, const float* qk_norm, const float* c, const float* s, float* kc, float* vc,
                const float* kp, const float* vp, int64_t split, const bool* mask, float* out, const Dims& D,
                std::vector<float>& sc) {
  const int64_t H = D.H, KV = D.KV, hd = D.hd, half = hd / 2, end = D.start + 1, G = H / KV;
  float tmp[512];
  for (int64_t j = 0; j < H + KV; ++j) {
    float* x = row + j * hd;
    rms_norm(x, qk_norm + j * hd, tmp, hd, D.eps);
#pragma omp simd
    for (int64_t d = 0; d < half; ++d) x[d] = tmp[d] * c[d] + tmp[d + half] * s[d];
#pragma omp simd
    for (int64_t d = half; d < hd; ++d) x[d] = tmp[d] * c[d] + tmp[d - half] * s[d];
  }
  for (int64_t g = 0; g < KV; ++g) {
    float *kb = kc + g * D.cap * hd, *vb = vc + g * D.cap * hd;
    const float *kpb = kp + g * D.cap * hd, *vpb = vp + g * D.cap * hd;
    std::copy_n(row + (H + g) * hd, hd, kb + D.start * hd);
    std::copy_n(row + (H + KV + g) * hd, hd, vb + D.start * hd);
    const float* q = row + g * G * hd;
    float* o = out + g * G * hd;
#if defined(S2LPO_ATT_SIMD)
    switch (hd) {  // the head dims of the tiny models (16, 24, 32); Qwen3's 128 takes the loops
      case 16: attend_group<2>(q, G, kpb, kb, vpb, vb, split, end, D.start, mask, D.scale, o, sc.data()); continue;
      case 24: attend_group<3>(q, G, kpb, kb, vpb, vb, split, end, D.start, mask, D.scale, o, sc.data()); continue;
      case 32: attend_group<4>(q, G, kpb, kb, vpb, vb, split, end, D.start, mask, D.scale, o, sc.data()); continue;
      default: break;
    }
#endif
    attend_group_loops(q, G, kpb, kb, vpb, vb, split, end, D.start, mask, D.scale, hd, o, sc.data());
  }
}

}  // namespace

// Logits [rows, vocab] at the last of s new tokens per row (s = 1: a decode step; s > 1: a prefill, each row's
// tokens causal among themselves). ids, pos: [rows · s] (int64, row-major); k_cache, v_cache: [layers, cache rows,
// kv heads, cap, head dim], written at positions start .. start + s - 1; cache_rows: [rows] (int64), the cache row
// of each row (rows that left the batch leave their cache rows unused instead of the cache being copied without
// them); prefix_rows: [rows] (int64) with split > 0, the cache row holding each row's positions below split (its
// prompt's, prefilled once for the rows that share it: no copy per row), else unused; key_mask: [rows, >= start + s] (bool), which cached positions are real tokens; cos, sin: the sign-folded
// RoPE tables [positions, head dim]; weights: per layer in_norm, qkv, qk_norm, o, post_norm, gate_up, down
// (FastDecoder's _Layer, flattened; the matmul weights and lm_head dense [out, in] or packed, pack_weights).
Tensor decode_step(const Tensor& ids, const Tensor& pos, const Tensor& k_cache, const Tensor& v_cache,
                   const Tensor& cache_rows, const Tensor& prefix_rows, int64_t split, int64_t start,
                   const Tensor& key_mask, const Tensor& cos, const Tensor& sin, const std::vector<Tensor>& weights,
                   const Tensor& embed, const Tensor& norm, const Tensor& lm_head, int64_t heads, int64_t kv_heads,
                   int64_t head_dim, double eps, double scale) {
  TORCH_CHECK(weights.size() % 7 == 0, "decode_step: 7 weights per layer");
  TORCH_CHECK(head_dim <= 512 && heads % kv_heads == 0, "decode_step: unsupported head layout");
  TORCH_CHECK(k_cache.is_contiguous() && v_cache.is_contiguous() && key_mask.stride(1) == 1 && cos.is_contiguous() &&
                  sin.is_contiguous() && pos.is_contiguous() && cache_rows.is_contiguous(), "decode_step: layout");
  const int64_t n = cache_rows.size(0);
  TORCH_CHECK(ids.dim() == 1 && n > 0 && ids.size(0) % n == 0 && pos.size(0) == ids.size(0),
              "decode_step: s ids and positions per cache row");
  const int64_t s = ids.size(0) / n, layers = weights.size() / 7;
  TORCH_CHECK(split >= 0 && split <= start && (split == 0 || (prefix_rows.is_contiguous() && prefix_rows.size(0) == n &&
                                                              prefix_rows.scalar_type() == at::kLong)),
              "decode_step: a prefix row for each row, its positions below split <= start");
  TORCH_CHECK(k_cache.scalar_type() == at::kFloat && embed.scalar_type() == at::kFloat, "decode_step: float32 only");
  TORCH_CHECK(start + s <= k_cache.size(3) && key_mask.size(1) >= start + s, "decode_step: the cache is full");
  c10::NoGradGuard no_grad;
  const Dims D{heads, kv_heads, head_dim, k_cache.size(3), start, static_cast<float>(eps), static_cast<float>(scale)};
  Tensor h = embed.index_select(0, ids).contiguous();
  Tensor x = at::empty_like(h), att = at::empty({n * s, heads * head_dim}, h.options());
  const int64_t *P = pos.data_ptr<int64_t>(), *R = cache_rows.data_ptr<int64_t>();
  const int64_t* PR = split > 0 ? prefix_rows.data_ptr<int64_t>() : R;
  for (int64_t r = 0; r < n; ++r)
    TORCH_CHECK(R[r] >= 0 && R[r] < k_cache.size(1) && PR[r] >= 0 && PR[r] < k_cache.size(1), "decode_step: row ", r,
                "'s cache rows ", R[r], ", ", PR[r], " are not among the cache's ", k_cache.size(1));
  const bool* M = key_mask.data_ptr<bool>();
  const float *C = cos.data_ptr<float>(), *S = sin.data_ptr<float>();
  const int64_t width = (heads + 2 * kv_heads) * head_dim, row_cache = kv_heads * D.cap * head_dim;
  for (int64_t i = 0; i < layers; ++i) {
    const Tensor* w = weights.data() + 7 * i;
    rms_norm_rows(h, w[0], x, D.eps);
    Tensor qkv = times_t(x, w[1], width);
    float *qp = qkv.data_ptr<float>(), *ap = att.data_ptr<float>();
    float *kc = k_cache[i].data_ptr<float>(), *vc = v_cache[i].data_ptr<float>();
    const float* qn = w[2].data_ptr<float>();
    at::parallel_for(0, n, std::max<int64_t>(1, 4 / s), [&](int64_t b, int64_t e) {
      std::vector<float> sc(2 * ((start + s + 7) / 8 * 8));
      for (int64_t r = b; r < e; ++r)
        for (int64_t j = 0; j < s; ++j) {  // in order: token j's keys and values are in the cache for j + 1
          const int64_t tk = r * s + j;
          Dims Dj = D;
          Dj.start = start + j;
          attend_row(qp + tk * width, qn, C + P[tk] * head_dim, S + P[tk] * head_dim, kc + R[r] * row_cache,
                     vc + R[r] * row_cache, kc + PR[r] * row_cache, vc + PR[r] * row_cache, split,
                     M + r * key_mask.stride(0), ap + tk * heads * head_dim, Dj, sc);
        }
    });
    add_times_t(h, att, w[3]);
    rms_norm_rows(h, w[4], x, D.eps);
    add_times_t(h, silu_mul_fwd(times_t(x, w[5], 2 * w[6].size(1))), w[6]);  // [gate | up]: 2·inter
  }
  if (s > 1) {  // each row's last token
    h = h.view({n, s, -1}).select(1, s - 1).contiguous();
    x = at::empty_like(h);
  }
  rms_norm_rows(h, norm, x, D.eps);
  return times_t(x, lm_head, embed.size(0));  // Qwen3's head has a row per token of the embedding
}
