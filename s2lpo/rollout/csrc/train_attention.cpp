// A layer's attention block of s2lpo.rollout.train_forward, forward and backward: from the qkv matmul's output
// to the input of the o matmul — q/k RMSNorm, RoPE (cos and sign-folded sin tables, indexed per token), and
// grouped-query attention over the flat token layout: the distinct prompts' tokens first (prompt p at p·P),
// then every row's R1 response tokens (row b at np·P + b·R1). A prompt's queries see its real keys up to
// themselves; a row's queries see its prompt's real keys and its own real keys up to themselves (a padded query
// sees itself too, never an empty row) — train_forward._masks. Work is split by prompt: a prompt's tokens and
// its rows' tokens are read and written by its task only, so key gradients need no locks and the sums run in a
// fixed order. The forward keeps its attention probabilities for the backward ([tokens, H, P + R1]).
#include <ATen/ATen.h>
#include "common.h"
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <vector>

using at::Tensor;

namespace {

struct Layout {
  int64_t prompts, P, R1, B, H, KV, hd;
  const int64_t* row_prompt;
  const bool *preal, *rreal;  // [prompts, P], [B, P + R1]
};

struct Block {  // queries qs .. qs+nq-1 over keys[0..nk); query i may see key k <= i + off when real or its own
  int64_t qs, nq, off;
  std::vector<int64_t> keys;
  std::vector<char> real;
  int64_t limit(int64_t i) const { return std::min<int64_t>(keys.size(), i + off + 1); }
};

// the prompt's block, then its rows'
std::vector<Block> blocks_of(const Layout& L, int64_t p) {
  std::vector<Block> out;
  Block pb{p * L.P, L.P, 0, {}, {}};
  for (int64_t j = 0; j < L.P; ++j) {
    pb.keys.push_back(p * L.P + j);
    pb.real.push_back(L.preal[p * L.P + j]);
  }
  out.push_back(pb);
  const int64_t base = L.prompts * L.P, W = L.P + L.R1;
  for (int64_t b = 0; b < L.B && L.R1 > 0; ++b) {
    if (L.row_prompt[b] != p) continue;
    Block rb{base + b * L.R1, L.R1, L.P, pb.keys, {}};
    for (int64_t t = 0; t < L.R1; ++t) rb.keys.push_back(base + b * L.R1 + t);
    for (int64_t k = 0; k < W; ++k) rb.real.push_back(L.rreal[b * W + k]);
    out.push_back(rb);
  }
  return out;
}

struct Blocks {  // every prompt's block, every row's (rows in order)
  std::vector<Block> prompt, rows;
};

Blocks all_blocks(const Layout& L) {
  Blocks out;
  for (int64_t p = 0; p < L.prompts; ++p) {
    std::vector<Block> bs = blocks_of(L, p);
    out.prompt.push_back(std::move(bs[0]));
    for (size_t i = 1; i < bs.size(); ++i) out.rows.push_back(std::move(bs[i]));
  }
  std::stable_sort(out.rows.begin(), out.rows.end(), [](const Block& x, const Block& y) { return x.qs < y.qs; });
  return out;
}

template <typename T>
struct Heads {  // one layer's tensors, as pointers; heads of a token are contiguous, hd floats each
  const T *qkv, *wq, *wk, *cos, *sin;
  T *qk, *rstd;
  int64_t W, QK;  // floats per token in qkv and in qk
};

// RoPE of one head: o = n·cos + roll(n, hd/2)·sin (sin sign-folded); with o = go, c = cos, s = roll(sin) it is
// also its own backward: dn = go·cos + roll(go·sin, hd/2)
template <typename T>
inline void rope(const T* n, const T* c, const T* s, T* o, int64_t hd) {
  const int64_t half = hd / 2;
#pragma omp simd
  for (int64_t d = 0; d < half; ++d) o[d] = n[d] * c[d] + n[d + half] * s[d];
#pragma omp simd
  for (int64_t d = half; d < hd; ++d) o[d] = n[d] * c[d] + n[d - half] * s[d];
}

// q/k RMSNorm and RoPE of token t's H + KV heads, into qk
template <typename T>
void rope_token(const Heads<T>& X, const Layout& L, int64_t t, double eps, T* n) {
  const int64_t hd = L.hd;
  for (int64_t j = 0; j < L.H + L.KV; ++j) {
    const T* x = X.qkv + t * X.W + j * hd;
    const T* w = j < L.H ? X.wq : X.wk;
    const T r = X.rstd[t * (L.H + L.KV) + j] = s2lpo::rstd_of(x, hd, eps);
#pragma omp simd
    for (int64_t d = 0; d < hd; ++d) n[d] = x[d] * r * w[d];
    rope(n, X.cos + t * hd, X.sin + t * hd, X.qk + t * X.QK + j * hd, hd);
  }
}

// the block's keys of kv head g, one row each: M [nk, hd]
template <typename T>
void gather(const T* base, int64_t stride, int64_t col, const Block& B, int64_t hd, std::vector<T>& M) {
  const int64_t nk = B.keys.size();
  M.resize(nk * hd);
  for (int64_t k = 0; k < nk; ++k) std::copy_n(base + B.keys[k] * stride + col, hd, M.data() + k * hd);
}

// the same keys transposed, Mt [hd, n], the keys past nk zero (n: nk rounded up to 8)
template <typename T>
void gather_t(const T* base, int64_t stride, int64_t col, const Block& B, int64_t hd, int64_t n, std::vector<T>& Mt) {
  const int64_t nk = B.keys.size();
  Mt.assign(hd * n, T(0));
  for (int64_t k = 0; k < nk; ++k) {
    const T* src = base + B.keys[k] * stride + col;
    for (int64_t d = 0; d < hd; ++d) Mt[d * n + k] = src[d];
  }
}

// the block's query rows of kv head g (row r = i·G + h - g·G) from a [tokens, H·hd]-strided buffer, into M [R, hd]
template <typename T>
void gather_queries(const T* base, int64_t stride, const Block& B, int64_t g, int64_t G, int64_t hd,
                    std::vector<T>& M) {
  M.resize(B.nq * G * hd);
  for (int64_t i = 0; i < B.nq; ++i)
    for (int64_t j = 0; j < G; ++j) std::copy_n(base + (B.qs + i) * stride + (g * G + j) * hd, hd, M.data() + (i * G + j) * hd);
}

Layout layout_of(const Tensor& qkv, const Tensor& row_prompt, const Tensor& preal, const Tensor& rreal, int64_t P,
                 int64_t R1, int64_t H, int64_t KV) {
  const int64_t prompts = preal.size(0), B = row_prompt.size(0), hd = qkv.size(1) / (H + 2 * KV);
  TORCH_CHECK(qkv.dim() == 2 && qkv.is_contiguous() && qkv.size(1) == (H + 2 * KV) * hd && H % KV == 0 && hd % 2 == 0,
              "attention: qkv must be contiguous [tokens, (H + 2·KV)·head_dim]");
  TORCH_CHECK(qkv.size(0) == prompts * P + B * R1, "attention: tokens = prompts·P + rows·R1");
  TORCH_CHECK(preal.is_contiguous() && rreal.is_contiguous() && row_prompt.is_contiguous() &&
                  preal.scalar_type() == at::kBool && rreal.scalar_type() == at::kBool && preal.size(1) == P &&
                  rreal.size(0) == B && rreal.size(1) == P + R1 && row_prompt.scalar_type() == at::kLong,
              "attention: masks [prompts, P], [rows, P + R1] (bool), row_prompt [rows] (int64)");
  const int64_t* rp = row_prompt.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b)  // a row of no prompt would be left out of every task, its output unwritten
    TORCH_CHECK(rp[b] >= 0 && rp[b] < prompts, "attention: row ", b, " has prompt ", rp[b], " of ", prompts);
  return {prompts, P, R1, B, H, KV, hd, rp, preal.data_ptr<bool>(), rreal.data_ptr<bool>()};
}

}  // namespace

std::vector<Tensor> attention_fwd(const Tensor& qkv, const Tensor& wq, const Tensor& wk, const Tensor& cos,
                                  const Tensor& sin, const Tensor& row_prompt, const Tensor& preal,
                                  const Tensor& rreal, int64_t P, int64_t R1, int64_t H, int64_t KV, double eps,
                                  double scale) {
  const Layout L = layout_of(qkv, row_prompt, preal, rreal, P, R1, H, KV);
  const int64_t N = qkv.size(0), hd = L.hd, G = H / KV;
  Tensor out = at::empty({N, H * hd}, qkv.options()), qk = at::empty({N, (H + KV) * hd}, qkv.options());
  Tensor rstd = at::empty({N, H + KV}, qkv.options()), probs = at::empty({N, H, P + R1}, qkv.options());
  s2lpo::dispatch(qkv, "attention_fwd", [&](auto tag) {
    using T = decltype(tag);
    const Heads<T> X{qkv.data_ptr<T>(), wq.data_ptr<T>(), wk.data_ptr<T>(), cos.data_ptr<T>(), sin.data_ptr<T>(),
                     qk.data_ptr<T>(), rstd.data_ptr<T>(), qkv.size(1), (H + KV) * hd};
    T *op = out.data_ptr<T>(), *pp = probs.data_ptr<T>();
    const T sc = T(scale);
    struct Scratch {
      std::vector<T> Kt, V, Q, S, bias, n;
    };
    auto attend = [&](const Block& B, Scratch& W_) {
      auto &Kt = W_.Kt, &V = W_.V, &Q = W_.Q, &S = W_.S, &bias = W_.bias, &n = W_.n;
      n.resize(hd);
      for (int64_t i = 0; i < B.nq; ++i) rope_token(X, L, B.qs + i, eps, n.data());
      const int64_t nk = B.keys.size(), np = (nk + 7) / 8 * 8, R = B.nq * G;
      S.resize(R * np);
      bias.resize(np);  // additive: 0 for a real key, -inf for a padded one (a query's own key is let in below)
      for (int64_t k = 0; k < np; ++k) bias[k] = k < nk && B.real[k] ? T(0) : T(-INFINITY);
      for (int64_t g = 0; g < KV; ++g) {
        gather_t(X.qk, X.QK, (H + g) * hd, B, hd, np, Kt);
        gather(X.qkv, X.W, (H + KV + g) * hd, B, hd, V);
        gather_queries(X.qk, X.QK, B, g, G, hd, Q);
        s2lpo::products(Q.data(), Kt.data(), R, np, hd, S.data());
        for (int64_t r = 0; r < R; ++r) {
          const int64_t i = r / G, h = g * G + r % G, t = B.qs + i, lim = B.limit(i), own = lim - 1;
          // whole vectors up to lim8 <= np, the keys from lim on at -inf (exp 0): no scalar tail, whose
          // 4-byte stores a following 32-byte load cannot take from the store buffer (a stall each row: a fifth
          // of this block's time, perf)
          const int64_t lim8 = (lim + 7) / 8 * 8;
          T* s = S.data() + r * np;
          T mx = -INFINITY, z = 0;
#pragma omp simd reduction(max : mx)
          for (int64_t k = 0; k < lim8; ++k) {
            s[k] = k < lim ? s[k] * sc + (k == own ? T(0) : bias[k]) : T(-INFINITY);
            mx = std::max(mx, s[k]);
          }
#pragma omp simd
          for (int64_t k = 0; k < lim8; ++k) s[k] -= mx;
          s2lpo::exp_inplace(s, lim8);  // exp(-inf) = 0: masked keys drop out
#pragma omp simd reduction(+ : z)
          for (int64_t k = 0; k < lim8; ++k) z += s[k];
          T* pr = pp + (t * H + h) * (P + R1);  // kept for the backward
#pragma omp simd
          for (int64_t k = 0; k < lim; ++k) pr[k] = s[k] /= z;
          s2lpo::combine(s, V.data(), lim, hd, op + t * H * hd + h * hd);
        }
      }
    };
    // the prompts' blocks first (a row's queries read its prompt's keys), then the rows', one task each: split by
    // prompt (its rows with it), 5 prompts on 2 threads ran as 3 against 2
    const Blocks all = all_blocks(L);
    at::parallel_for(0, L.prompts, 1, [&](int64_t b, int64_t e) {
      Scratch W_;
      for (int64_t p = b; p < e; ++p) attend(all.prompt[p], W_);
    });
    at::parallel_for(0, static_cast<int64_t>(all.rows.size()), 1, [&](int64_t b, int64_t e) {
      Scratch W_;
      for (int64_t r = b; r < e; ++r) attend(all.rows[r], W_);
    });
  });
  return {out, qk, rstd, probs};
}

// gqkv [N, (H+2KV)·hd], gwq [hd], gwk [hd]
std::vector<Tensor> attention_bwd(const Tensor& gout_, const Tensor& qkv, const Tensor& wq, const Tensor& wk,
                                  const Tensor& cos, const Tensor& sin, const Tensor& row_prompt,
                                  const Tensor& preal, const Tensor& rreal, int64_t P, int64_t R1, int64_t H,
                                  int64_t KV, double scale, const Tensor& qk, const Tensor& rstd, const Tensor& probs,
                                  const Tensor& out) {
  const Layout L = layout_of(qkv, row_prompt, preal, rreal, P, R1, H, KV);
  const Tensor gout = gout_.contiguous();
  const int64_t N = qkv.size(0), hd = L.hd, G = H / KV, half = hd / 2;
  // the parts summed into (the values' gradient in gqkv, the keys' in gqk) are zeroed by the task that owns their
  // tokens; the rest is written whole (the queries' gradient, and the q/k columns of gqkv by the norms' backward)
  Tensor gqkv = at::empty_like(qkv), gqk = at::empty({N, (H + KV) * hd}, qkv.options());
  // per prompt and per row: the q-norm and k-norm weight gradients of its tokens
  Tensor parts = at::zeros({L.prompts + (R1 > 0 ? L.B : 0), 2, hd}, qkv.options());
  s2lpo::dispatch(qkv, "attention_bwd", [&](auto tag) {
    using T = decltype(tag);
    const T *xp = qkv.data_ptr<T>(), *qkp = qk.data_ptr<T>(), *rp = rstd.data_ptr<T>(), *prp = probs.data_ptr<T>(),
            *op = out.data_ptr<T>(), *gop = gout.data_ptr<T>(), *cp = cos.data_ptr<T>(), *sp = sin.data_ptr<T>(),
            *wqp = wq.data_ptr<T>(), *wkp = wk.data_ptr<T>();
    T *gx = gqkv.data_ptr<T>(), *gk = gqk.data_ptr<T>(), *pp = parts.data_ptr<T>();
    const int64_t W = qkv.size(1), QK = (H + KV) * hd;
    const T sc = T(scale);
    struct Scratch {
      std::vector<T> K, Vt, dP, Q, GO, Pt, DSt, acc, dn, rs;
    };
    // a block's gradients: its queries' (written), its keys' and values' (summed into the key's token, or for a row's
    // prompt keys into that row's slots of pk, pv: [rows, P, KV, hd], which its prompt's task adds in row order)
    auto back = [&](const Block& B, Scratch& W_, T* pk, T* pv) {
      auto &K = W_.K, &Vt = W_.Vt, &dP = W_.dP, &Q = W_.Q, &GO = W_.GO, &Pt = W_.Pt, &DSt = W_.DSt, &acc = W_.acc;
      acc.resize(hd);
      for (int64_t t = B.qs; t < B.qs + B.nq; ++t) {  // the sums' own tokens
        std::fill_n(gx + t * W + (H + KV) * hd, KV * hd, T(0));
        std::fill_n(gk + t * QK + H * hd, KV * hd, T(0));
      }
      const int64_t nk = B.keys.size(), np = (nk + 7) / 8 * 8, R = B.nq * G;  // row r = i·G + h - g·G
      dP.resize(R * np);
      for (int64_t g = 0; g < KV; ++g) {
        gather(qkp, QK, (H + g) * hd, B, hd, K);
        gather_t(xp, W, (H + KV + g) * hd, B, hd, np, Vt);
        gather_queries(qkp, QK, B, g, G, hd, Q);
        gather_queries(gop, H * hd, B, g, G, hd, GO);
        s2lpo::products(GO.data(), Vt.data(), R, np, hd, dP.data());  // the probabilities' gradient
        Pt.assign(nk * R, T(0));  // probabilities and score gradients, a key's column contiguous
        DSt.assign(nk * R, T(0));
        for (int64_t r = 0; r < R; ++r) {
          const int64_t i = r / G, h = g * G + r % G, t = B.qs + i, lim = B.limit(i);
          const T* pr = prp + (t * H + h) * (P + R1);  // the forward's probabilities; masked keys 0
          T* dp = dP.data() + r * np;
          const T D = s2lpo::dot(GO.data() + r * hd, op + t * H * hd + h * hd, hd);
          for (int64_t k = 0; k < lim; ++k) {
            dp[k] = pr[k] * (dp[k] - D) * sc;  // the scores' gradient
            Pt[k * R + r] = pr[k];
            DSt[k * R + r] = dp[k];
          }
          s2lpo::combine(dp, K.data(), lim, hd, gk + t * QK + h * hd);  // dq: one block per query
        }
        for (int64_t k = 0; k < nk; ++k) {  // dk, dv: over the rows that may see key k
          const int64_t r0 = std::max<int64_t>(0, k - B.off) * G;
          const bool slot = pk != nullptr && k < P;
          T *a = slot ? pk + (k * KV + g) * hd : gk + B.keys[k] * QK + (H + g) * hd,
            *v = slot ? pv + (k * KV + g) * hd : gx + B.keys[k] * W + (H + KV + g) * hd;
          s2lpo::combine(DSt.data() + k * R + r0, Q.data() + r0 * hd, R - r0, hd, slot ? a : acc.data());
          if (!slot)
#pragma omp simd
            for (int64_t d = 0; d < hd; ++d) a[d] += acc[d];
          s2lpo::combine(Pt.data() + k * R + r0, GO.data() + r0 * hd, R - r0, hd, slot ? v : acc.data());
          if (!slot)
#pragma omp simd
            for (int64_t d = 0; d < hd; ++d) v[d] += acc[d];
        }
      }
    };
    // back through RoPE and the q/k norms of the block's tokens (every gradient of theirs in), the norms' weight
    // gradients into the block's part
    auto norms = [&](const Block& B, Scratch& W_, T* part) {
      auto &dn = W_.dn, &rs = W_.rs;
      dn.resize(hd);
      rs.resize(hd);
      for (int64_t t = B.qs; t < B.qs + B.nq; ++t) {
        const T* c = cp + t * hd;
        for (int64_t d = 0; d < hd; ++d) rs[d] = sp[t * hd + (d + half) % hd];
        for (int64_t j = 0; j < H + KV; ++j) {
          rope(gk + t * QK + j * hd, c, rs.data(), dn.data(), hd);
          s2lpo::rms_back(xp + t * W + j * hd, j < H ? wqp : wkp, rp[t * (H + KV) + j], dn.data(), gx + t * W + j * hd,
                          part + (j < H ? 0 : 1) * hd, hd);
        }
      }
    };
    // the rows first, one task each (their own keys are theirs alone; their prompt keys' sums go to their slots),
    // then each prompt's block, its rows' slots added in row order: the sums of the one-task-per-prompt loop, in
    // its order (split by prompt, 5 prompts on 2 threads ran as 3 against 2)
    const Blocks all = all_blocks(L);
    const int64_t nr = all.rows.size(), per_row = P * KV * hd;
    std::vector<T> pk(nr * per_row), pv(nr * per_row);
    std::vector<std::vector<int64_t>> rows_of(L.prompts);
    for (int64_t r = 0; r < nr; ++r) rows_of[L.row_prompt[(all.rows[r].qs - L.prompts * P) / R1]].push_back(r);
    at::parallel_for(0, nr, 1, [&](int64_t b, int64_t e) {
      Scratch W_;
      for (int64_t r = b; r < e; ++r) {
        back(all.rows[r], W_, pk.data() + r * per_row, pv.data() + r * per_row);
        norms(all.rows[r], W_, pp + (L.prompts + r) * 2 * hd);
      }
    });
    at::parallel_for(0, L.prompts, 1, [&](int64_t b, int64_t e) {
      Scratch W_;
      for (int64_t p = b; p < e; ++p) {
        const Block& B = all.prompt[p];
        back(B, W_, nullptr, nullptr);
        for (const int64_t r : rows_of[p])
          for (int64_t k = 0; k < P; ++k)
            for (int64_t g = 0; g < KV; ++g) {
              T *a = gk + B.keys[k] * QK + (H + g) * hd, *v = gx + B.keys[k] * W + (H + KV + g) * hd;
              const T *sa = pk.data() + r * per_row + (k * KV + g) * hd, *sv = pv.data() + r * per_row + (k * KV + g) * hd;
#pragma omp simd
              for (int64_t d = 0; d < hd; ++d) a[d] += sa[d];
#pragma omp simd
              for (int64_t d = 0; d < hd; ++d) v[d] += sv[d];
            }
        norms(B, W_, pp + p * 2 * hd);
      }
    });
  });
  const Tensor gw = parts.sum(0);
  return {gqkv, gw[0], gw[1]};
}
