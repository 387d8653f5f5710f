// A layer's attention block of s2lpo.rollout.train_forward, forward and backward: from the qkv matmul's output
// to the input of the o matmul — q/k RMSNorm, RoPE (cos and sign-folded sin tables, indexed per token), and
// grouped-query attention over the flat token layout: the distinct prompts' tokens first (prompt p at p·P),
// then each row's row_len[b] response tokens, one row after the other (packed: no padding after a short row; R1,
// the longest, sizes the masks). A prompt's queries see its real keys up to themselves; a row's queries see its
// prompt's real keys and its own real keys up to themselves (a padded query sees itself too, never an empty row)
// — train_forward._masks. Work is split by block: the prompts' first, then
// one task per row (a step's 3-7 prompts split by prompt ran unevenly on two threads). A row's task writes its own
// tokens only; the gradients it owes its prompt's keys go to slots of its own, which the prompt's task then adds in
// row order: no locks, and every sum in a fixed order. The forward keeps its attention probabilities for the
// backward ([tokens, H, P + R1]).
#include "train_attention.h"
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <vector>

std::vector<Tensor> attention_fwd(const Tensor& qkv, const Tensor& wq, const Tensor& wk, const Tensor& cos,
                                  const Tensor& sin, const Tensor& row_prompt, const Tensor& row_len,
                                  const Tensor& preal, const Tensor& rreal, int64_t P, int64_t H, int64_t KV,
                                  double eps, double scale) {
  const Layout L = layout_of(qkv, row_prompt, row_len, preal, rreal, P, H, KV);
  const int64_t N = qkv.size(0), hd = L.hd, G = H / KV, R1 = L.R1;
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
      for (int64_t r = b; r < e; ++r)
        if (all.rows[r].nq) attend(all.rows[r], W_);
    });
  });
  return {out, qk, rstd, probs};
}

// gqkv [N, (H+2KV)·hd], gwq [hd], gwk [hd]
std::vector<Tensor> attention_bwd(const Tensor& gout_, const Tensor& qkv, const Tensor& wq, const Tensor& wk,
                                  const Tensor& cos, const Tensor& sin, const Tensor& row_prompt,
                                  const Tensor& row_len, const Tensor& preal, const Tensor& rreal, int64_t P,
                                  int64_t H, int64_t KV, double scale, const Tensor& qk, const Tensor& rstd,
                                  const Tensor& probs, const Tensor& out) {
  const Layout L = layout_of(qkv, row_prompt, row_len, preal, rreal, P, H, KV);
  const Tensor gout = gout_.contiguous();
  const int64_t N = qkv.size(0), hd = L.hd, G = H / KV, half = hd / 2, R1 = L.R1;
  // the parts summed into (the values' gradient in gqkv, the keys' in gqk) are zeroed by the task that owns their
  // tokens; the rest is written whole (the queries' gradient, and the q/k columns of gqkv by the norms' backward)
  Tensor gqkv = at::empty_like(qkv), gqk = at::empty({N, (H + KV) * hd}, qkv.options());
  // per prompt and per row: the q-norm and k-norm weight gradients of its tokens
  Tensor parts = at::zeros({L.prompts + L.B, 2, hd}, qkv.options());
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
    const int64_t nr = all.rows.size(), per_row = P * KV * hd;  // all.rows[r]: row r
    std::vector<T> pk(nr * per_row), pv(nr * per_row);
    at::parallel_for(0, nr, 1, [&](int64_t b, int64_t e) {
      Scratch W_;
      for (int64_t r = b; r < e; ++r) {
        if (!all.rows[r].nq) continue;  // its slots stay zero
        back(all.rows[r], W_, pk.data() + r * per_row, pv.data() + r * per_row);
        norms(all.rows[r], W_, pp + (L.prompts + r) * 2 * hd);
      }
    });
    at::parallel_for(0, L.prompts, 1, [&](int64_t b, int64_t e) {
      Scratch W_;
      for (int64_t p = b; p < e; ++p) {
        const Block& B = all.prompt[p];
        back(B, W_, nullptr, nullptr);
        for (int64_t r = 0; r < nr; ++r) {
          if (L.row_prompt[r] != p) continue;
          for (int64_t k = 0; k < P; ++k)
            for (int64_t g = 0; g < KV; ++g) {
              T *a = gk + B.keys[k] * QK + (H + g) * hd, *v = gx + B.keys[k] * W + (H + KV + g) * hd;
              const T *sa = pk.data() + r * per_row + (k * KV + g) * hd, *sv = pv.data() + r * per_row + (k * KV + g) * hd;
#pragma omp simd
              for (int64_t d = 0; d < hd; ++d) a[d] += sa[d];
#pragma omp simd
              for (int64_t d = 0; d < hd; ++d) v[d] += sv[d];
            }
        }
        norms(B, W_, pp + p * 2 * hd);
      }
    });
  });
  const Tensor gw = parts.sum(0);
  return {gqkv, gw[0], gw[1]};
}
