// A sampling call's loop after its prefill, in one call, for the plain case (no top-k, top-p or presence penalty):
// as tensor operations a token's bookkeeping was ~20 small ops (~0.5-0.9 ms a step at 64 rows), and the Python loop
// around the compiled step and bookkeeping still ~0.5 ms. The log-softmax and exp are ATen's own kernels, as in the
// Python loop, and the draw is torch.multinomial's for one sample (argmax of p / q, q torch's Exp(1) draws): the
// same tokens, bit for bit. exp_draws: the same draws as a tensor (the probe that they are torch's).
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <cmath>
#include <mutex>
#include <tuple>
#include <vector>

using at::Tensor;

Tensor decode_step(const Tensor& ids, const Tensor& pos, const Tensor& k_cache, const Tensor& v_cache,
                   const Tensor& cache_rows, const Tensor& prefix_rows, int64_t split, int64_t start,
                   const Tensor& key_mask, const Tensor& cos, const Tensor& sin, const std::vector<Tensor>& weights,
                   const Tensor& embed, const Tensor& norm, const Tensor& lm_head, int64_t heads, int64_t kv_heads,
                   int64_t head_dim, double eps, double scale);  // decode_step.cpp

namespace {

constexpr uint64_t kMask = (uint64_t(1) << 53) - 1;
const double kScale = 1.0 / double(uint64_t(1) << 53);

// ATen's default CPU exponential_(1) of one 64-bit draw: float(-log1p(-u)), u = (bits & (2^53 - 1)) · 2^-53
// (ATen: -1.0 / lambda · log1p(-u), lambda = 1)
inline float exp1(uint64_t bits) { return static_cast<float>(-std::log1p(-double(bits & kMask) * kScale)); }

// torch.multinomial's draw for one sample from probabilities p [V] with the Exp(1) draws of these bits: the argmax
// of p / q, the first of equal maxima, NaN winning as in torch.argmax. q = -log1p(-u) >= u, so p / float(u) bounds
// p / q from above (float rounding and division keep the order): an entry whose bound does not beat the running
// maximum cannot win, and its log1p (most of a draw's cost) is never taken. The same token, bit for bit.
int64_t draw(const float* p, const uint64_t* bits, int64_t V) {
  int64_t best = 0;
  float top = p[0] / exp1(bits[0]);
  for (int64_t j = 1; j < V && !std::isnan(top); ++j) {
    const float bound = p[j] / static_cast<float>(double(bits[j] & kMask) * kScale);
    if (!(bound > top) && !std::isnan(bound)) continue;
    const float x = p[j] / exp1(bits[j]);
    if (x > top || std::isnan(x)) {
      top = x;
      best = j;
    }
  }
  return best;
}

}  // namespace

// The plain case (no top-k, top-p or presence penalty) of s2lpo.rollout.sampler.sample_batch after its prefill, in
// one call: every token's Exp(1) draws (torch's exponential_ from gen, for every row of the batch in turn as the
// generator must give them), log-softmax (ATen's, logits / temperature) and the draw, the token and its log-prob
// into toks, lps ([n, T]) at column t, a row that samples eos done (done [n], lengths [n] = t + 1) and out of the
// batch at once, then the compiled decode step of the rows left. The Python loop it replaces spent ~0.5 ms a token
// between these calls. logits: [n, V] at the prefill's last token; next_pos [n]: each row's first new position;
// keys [n, width + T]: which cache positions are real; cache_rows, prefix_rows, split: the decode step's (the
// cache's rows and its prompts' rows, FastDecoder.forward). Returns the number of decode steps run.
int64_t sample_loop(const Tensor& logits0, const at::Generator& gen, Tensor& toks, Tensor& lps, Tensor& lengths,
                    Tensor& done, const Tensor& next_pos, const Tensor& keys, const Tensor& k_cache,
                    const Tensor& v_cache, const Tensor& cache_rows, const Tensor& prefix_rows, int64_t split,
                    int64_t width, const Tensor& cos, const Tensor& sin, const std::vector<Tensor>& weights,
                    const Tensor& embed, const Tensor& norm, const Tensor& lm_head, int64_t heads, int64_t kv_heads,
                    int64_t head_dim, double eps, double scale, int64_t eos, double temperature) {
  const int64_t n = logits0.size(0), V = logits0.size(1), T = toks.size(1);
  TORCH_CHECK(logits0.dim() == 2 && toks.is_contiguous() && toks.scalar_type() == at::kLong && toks.size(0) == n &&
                  lps.is_contiguous() && lps.scalar_type() == at::kFloat && lps.sizes() == toks.sizes() &&
                  lengths.is_contiguous() && lengths.scalar_type() == at::kLong && lengths.size(0) == n &&
                  done.is_contiguous() && done.scalar_type() == at::kBool && done.size(0) == n &&
                  next_pos.is_contiguous() && next_pos.scalar_type() == at::kLong && next_pos.size(0) == n &&
                  keys.dim() == 2 && keys.size(0) == n && keys.size(1) >= width + T - 1 &&
                  cache_rows.is_contiguous() && cache_rows.scalar_type() == at::kLong && cache_rows.size(0) == n &&
                  (split == 0 || (prefix_rows.is_contiguous() && prefix_rows.size(0) == n)),
              "sample_loop: layout");
  auto* g = at::check_generator<at::CPUGeneratorImpl>(gen);
  int64_t *K = toks.data_ptr<int64_t>(), *N = lengths.data_ptr<int64_t>();
  float* LP = lps.data_ptr<float>();
  bool* D = done.data_ptr<bool>();
  const int64_t* NP = next_pos.data_ptr<int64_t>();
  std::vector<int64_t> live(n), rows(cache_rows.data_ptr<int64_t>(), cache_rows.data_ptr<int64_t>() + n), prefix;
  for (int64_t r = 0; r < n; ++r) live[r] = r;
  if (split > 0) prefix.assign(prefix_rows.data_ptr<int64_t>(), prefix_rows.data_ptr<int64_t>() + n);
  std::vector<uint64_t> bits(n * V);
  std::vector<int64_t> tok(n);
  const auto i64 = at::TensorOptions().dtype(at::kLong);
  Tensor logits = logits0;
  int64_t steps = 0;
  for (int64_t t = 0; t < T; ++t) {
    {
      std::lock_guard<std::mutex> lock(g->mutex_);
      for (int64_t i = 0; i < n * V; ++i) bits[i] = g->random64();
    }
    const Tensor x = logits.to(at::kFloat);
    const Tensor logp = at::log_softmax(temperature == 1.0 ? x : x / temperature, -1).contiguous();
    const Tensor probs = logp.exp();
    const float *lp = logp.data_ptr<float>(), *pp = probs.data_ptr<float>();
    const int64_t nl = live.size();
    int64_t kept = 0;
    for (int64_t r = 0; r < nl; ++r) {  // live rows are never done: a row leaves the batch the step it samples eos
      const int64_t b = live[r], best = draw(pp + r * V, bits.data() + b * V, V);
      K[b * T + t] = best;
      LP[b * T + t] = lp[r * V + best];
      if (best == eos) {
        D[b] = true;
        N[b] = t + 1;
        continue;
      }
      live[kept] = b;  // in place: kept <= r
      rows[kept] = rows[r];
      if (split > 0) prefix[kept] = prefix[r];
      tok[kept++] = best;
    }
    if (kept == 0 || t == T - 1) break;
    live.resize(kept);
    rows.resize(kept);
    if (split > 0) prefix.resize(kept);
    Tensor ids = at::empty({kept}, i64), pos = at::empty({kept}, i64), sel = at::empty({kept}, i64);
    for (int64_t r = 0; r < kept; ++r) {
      ids.data_ptr<int64_t>()[r] = tok[r];
      pos.data_ptr<int64_t>()[r] = NP[live[r]] + t;
      sel.data_ptr<int64_t>()[r] = live[r];
    }
    const Tensor crow = at::from_blob(rows.data(), {kept}, i64),
                 prow = split > 0 ? at::from_blob(prefix.data(), {kept}, i64) : prefix_rows;
    logits = decode_step(ids, pos, k_cache, v_cache, crow, prow, split, width + t, keys.index_select(0, sel), cos, sin,
                         weights, embed, norm, lm_head, heads, kv_heads, head_dim, eps, scale);
    ++steps;
  }
  return steps;
}

// torch's CPU exponential_(1) into q [rows, cols] (float32) from the same generator, for the rows in live only (the
// others are left unset: sample_step reads live rows only), the generator advanced as by all rows · cols draws.
// ATen's default CPU kernel draws each entry in turn as float(-log1p(-u)), u = (random64() & (2^53 - 1)) · 2^-53 in
// double, ~32 ns an entry on one thread, most of it the log1p (~4 % of a toy-l step). Here the 64-bit draws are
// taken in turn, as the generator must give them, and the log1p (the same libm call, not vectorised: its result
// must be the same double) runs over the live rows on torch's threads. The caller checks once per process that
// this is torch's own draw (s2lpo.rollout.sampler.exp_draws_match): where torch draws otherwise (its kernel is not
// the default one) it keeps torch's.
Tensor exp_draws(const at::Generator& gen, int64_t rows, int64_t cols, const Tensor& live) {
  TORCH_CHECK(rows >= 0 && cols > 0 && live.dim() == 1 && live.is_contiguous() && live.scalar_type() == at::kLong,
              "exp_draws: rows, cols and the live rows (int64)");
  auto* g = at::check_generator<at::CPUGeneratorImpl>(gen);
  const int64_t n = rows * cols;
  std::vector<uint64_t> bits(n);
  {
    std::lock_guard<std::mutex> lock(g->mutex_);
    for (int64_t i = 0; i < n; ++i) bits[i] = g->random64();
  }
  Tensor q = at::empty({rows, cols}, at::kFloat);
  float* qp = q.data_ptr<float>();
  const int64_t* L = live.data_ptr<int64_t>();
  const int64_t nl = live.size(0);
  for (int64_t r = 0; r < nl; ++r) TORCH_CHECK(L[r] >= 0 && L[r] < rows, "exp_draws: live row ", L[r], " of ", rows);
  at::parallel_for(0, nl, std::max<int64_t>(1, 2048 / cols), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r)
      for (int64_t j = 0; j < cols; ++j) qp[L[r] * cols + j] = exp1(bits[L[r] * cols + j]);
  });
  return q;
}
