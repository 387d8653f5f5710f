// The extension's Python module (built and loaded by s2lpo/rollout/kernel.py): the decode step
// (decode_step.cpp), its matmuls against weights laid out once (packed_gemm.cpp), a sampling call's loop after its
// prefill (sample_step.cpp), and the training pass's element-wise parts (train_ops.cpp, train_attention.cpp).
#include <torch/extension.h>
#include <vector>

#include "packed_gemm.h"

using at::Tensor;

Tensor decode_step(const Tensor& ids, const Tensor& pos, const Tensor& k_cache, const Tensor& v_cache,
                   const Tensor& cache_rows, const Tensor& prefix_rows, int64_t split, int64_t start,
                   const Tensor& key_mask, const Tensor& cos,
                   const Tensor& sin, const std::vector<Tensor>& weights, const Tensor& embed, const Tensor& norm,
                   const Tensor& lm_head, int64_t heads, int64_t kv_heads, int64_t head_dim, double eps,
                   double scale);
int64_t sample_loop(const Tensor& logits0, const at::Generator& gen, Tensor& toks, Tensor& lps, Tensor& lengths,
                    Tensor& done, const Tensor& next_pos, const Tensor& keys, const Tensor& k_cache,
                    const Tensor& v_cache, const Tensor& cache_rows, const Tensor& prefix_rows, int64_t split,
                    int64_t width, const Tensor& cos, const Tensor& sin, const std::vector<Tensor>& weights,
                    const Tensor& embed, const Tensor& norm, const Tensor& lm_head, int64_t heads, int64_t kv_heads,
                    int64_t head_dim, double eps, double scale, int64_t eos, double temperature);
Tensor exp_draws(const at::Generator& gen, int64_t rows, int64_t cols, const Tensor& live);
std::vector<Tensor> rms_norm_fwd(const Tensor& x, const Tensor& w, double eps);
std::vector<Tensor> rms_norm_bwd(const Tensor& gy, const Tensor& x, const Tensor& w, const Tensor& r);
Tensor silu_mul_fwd(const Tensor& gu);
Tensor silu_mul_bwd(const Tensor& ga, const Tensor& gu);
std::vector<Tensor> attention_fwd(const Tensor& qkv, const Tensor& wq, const Tensor& wk, const Tensor& cos,
                                  const Tensor& sin, const Tensor& row_prompt, const Tensor& row_len,
                                  const Tensor& preal, const Tensor& rreal, int64_t P, int64_t H, int64_t KV,
                                  double eps, double scale);
std::vector<Tensor> attention_bwd(const Tensor& gout, const Tensor& qkv, const Tensor& wq, const Tensor& wk,
                                  const Tensor& cos, const Tensor& sin, const Tensor& row_prompt,
                                  const Tensor& row_len, const Tensor& preal, const Tensor& rreal, int64_t P,
                                  int64_t H, int64_t KV, double scale, const Tensor& qk, const Tensor& rstd,
                                  const Tensor& probs, const Tensor& out);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("decode_step", &decode_step);
  m.def("pack_weights", &s2lpo::pack_weights);
  m.def("packed_mm", &s2lpo::packed_mm);
  m.def("packed_addmm_", &s2lpo::packed_addmm_);
  m.def("packed_gemm_simd", &s2lpo::packed_gemm_simd);
  m.def("sample_loop", &sample_loop);
  m.def("exp_draws", &exp_draws);
  m.def("rms_norm_fwd", &rms_norm_fwd);
  m.def("rms_norm_bwd", &rms_norm_bwd);
  m.def("silu_mul_fwd", &silu_mul_fwd);
  m.def("silu_mul_bwd", &silu_mul_bwd);
  m.def("attention_fwd", &attention_fwd);
  m.def("attention_bwd", &attention_bwd);
}
