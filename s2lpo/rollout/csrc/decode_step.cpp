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

// q/k norms and RoPE of one token's q and k heads (in place), its k and v written to the cache at D.start, and its
// attention output: queries grouped by the kv head they share, over the cached positions up to its own that the
// row's mask keeps — positions below split read from kp, vp (its prompt's cache row), the others from kc, vc.
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
    const float *kb = kc + g * D.cap * hd, *vb = vc + g * D.cap * hd;
    const float *kpb = kp + g * D.cap * hd, *vpb = vp + g * D.cap * hd;
    std::copy_n(row + (H + g) * hd, hd, kc + (g * D.cap + D.start) * hd);
    std::copy_n(row + (H + KV + g) * hd, hd, vc + (g * D.cap + D.start) * hd);
    for (int64_t qi = 0; qi < G; ++qi) {
      const int64_t j = g * G + qi;
      const float* q = row + j * hd;
      float* p = sc.data();
      float mx = -INFINITY;
      for (int64_t t = 0; t < end; ++t) {  // masked: exp 0; a padded query of a prefill sees itself
        p[t] = mask[t] || t == D.start ? s2lpo::dot(q, (t < split ? kpb : kb) + t * hd, hd) * D.scale : -INFINITY;
        mx = std::max(mx, p[t]);
      }
#pragma omp simd
      for (int64_t t = 0; t < end; ++t) p[t] -= mx;
      s2lpo::exp_inplace(p, end);
      float z = 0.f;
      for (int64_t t = 0; t < end; ++t) z += p[t];
      const float iz = 1.f / z;
#pragma omp simd
      for (int64_t t = 0; t < end; ++t) p[t] *= iz;
      s2lpo::combine_split(p, vpb, split, vb, end, hd, out + j * hd);  // masked positions weigh 0 (finite values)
    }
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
      std::vector<float> sc(start + s);
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
