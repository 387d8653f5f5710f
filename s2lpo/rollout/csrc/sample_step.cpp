// One sampling step's bookkeeping after the logits, in one call: s2lpo.rollout.sampler.sample_batch's loop body for
// the plain case (no top-k, top-p or presence penalty), which as tensor operations was ~20 small ops a token
// (~0.5-0.9 ms a step at 64 rows, each op costing more than its arithmetic). The log-softmax and exp are ATen's
// own kernels, as in the Python loop, and the draw is torch.multinomial's for one sample (argmax of p / q, q the
// caller's Exp(1) draws): the same tokens, bit for bit.
#include <ATen/ATen.h>
#include <cmath>
#include <tuple>

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
