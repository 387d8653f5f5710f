// One sampling step's bookkeeping after the logits, in one call: s2lpo.rollout.sampler.sample_batch's loop body for
// the plain case (no top-k, top-p or presence penalty), which as tensor operations was ~20 small ops a token
// (~0.5-0.9 ms a step at 64 rows, each op costing more than its arithmetic). The log-softmax and exp are ATen's
// own kernels, as in the Python loop, and the draw is torch.multinomial's for one sample (argmax of p / q, q the
// caller's Exp(1) draws): the same tokens, bit for bit.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <cmath>
#include <mutex>
#include <tuple>
#include <vector>

using at::Tensor;

// logits [nl, V]: the live rows' (batch rows live[r], increasing); q [n, V]: this step's Exp(1) draws for every
// batch row; done [n] (bool), toks [n, T] (int64), lps [n, T] (float32), lengths [n] (int64): the batch's, updated
// in place at column t. A row already done gets pad and log-prob 0; a row that samples eos is done with length t + 1.
// Returns the live rows' tokens [nl] and how many live rows are done now.
std::tuple<Tensor, int64_t> sample_step(const Tensor& logits, const Tensor& q, const Tensor& live, Tensor& done,
                                        Tensor& toks, Tensor& lps, Tensor& lengths, int64_t t, int64_t eos,
                                        int64_t pad, double temperature) {
  const int64_t nl = logits.size(0), V = logits.size(1), T = toks.size(1);
  TORCH_CHECK(q.dim() == 2 && q.size(1) == V && q.is_contiguous() && q.scalar_type() == at::kFloat && live.size(0) == nl &&
                  live.is_contiguous() && live.scalar_type() == at::kLong && done.scalar_type() == at::kBool &&
                  toks.is_contiguous() && toks.scalar_type() == at::kLong && lps.is_contiguous() &&
                  lps.scalar_type() == at::kFloat && lengths.scalar_type() == at::kLong && done.is_contiguous() &&
                  lengths.is_contiguous() && t < T,
              "sample_step: layout");
  // what the Python loop computes: log_softmax(logits / temperature) and its exp (x / 1.0 is x, bit for bit)
  const Tensor logp = at::log_softmax(temperature == 1.0 ? logits.to(at::kFloat) : logits.to(at::kFloat) / temperature,
                                      -1).contiguous();
  const Tensor probs = logp.exp();
  Tensor tok = at::empty({nl}, live.options());
  const float *lp = logp.data_ptr<float>(), *pp = probs.data_ptr<float>(), *qp = q.data_ptr<float>();
  const int64_t* L = live.data_ptr<int64_t>();
  bool* D = done.data_ptr<bool>();
  int64_t *K = toks.data_ptr<int64_t>(), *N = lengths.data_ptr<int64_t>(), *out = tok.data_ptr<int64_t>();
  float* LP = lps.data_ptr<float>();
  int64_t gone = 0;
  for (int64_t r = 0; r < nl; ++r) {
    const int64_t b = L[r];
    TORCH_CHECK(b >= 0 && b < q.size(0), "sample_step: live row ", b, " out of ", q.size(0));
    if (D[b]) {
      out[r] = K[b * T + t] = pad;
      LP[b * T + t] = 0.f;
      ++gone;
      continue;
    }
    // argmax over the vocabulary of p / q, the first of equal maxima (torch.argmax); NaN wins, as in torch
    const float *p = pp + r * V, *e = qp + b * V;
    int64_t best = 0;
    float top = p[0] / e[0];
    for (int64_t j = 1; j < V; ++j) {
      const float x = p[j] / e[j];
      if (x > top || (std::isnan(x) && !std::isnan(top))) {
        top = x;
        best = j;
      }
    }
    out[r] = K[b * T + t] = best;
    LP[b * T + t] = lp[r * V + best];
    if (best == eos) {
      D[b] = true;
      N[b] = t + 1;
      ++gone;
    }
  }
  return {tok, gone};
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
  constexpr uint64_t kMask = (uint64_t(1) << 53) - 1;
  const double kScale = 1.0 / double(uint64_t(1) << 53);
  at::parallel_for(0, nl, std::max<int64_t>(1, 2048 / cols), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const int64_t row = L[r];
      for (int64_t j = 0; j < cols; ++j) {
        const double u = double(bits[row * cols + j] & kMask) * kScale;
        qp[row * cols + j] = static_cast<float>(-std::log1p(-u));  // ATen: -1.0 / lambda · log1p(-u), lambda = 1
      }
    }
  });
  return q;
}
