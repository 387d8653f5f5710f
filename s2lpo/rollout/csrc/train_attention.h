// The layout of s2lpo.rollout.train_forward's flat token matrix for train_attention.cpp: the blocks of queries and
// the keys each may see (a prompt's, then each of its rows'), and the gathers and RoPE the attention's forward and
// backward share. Included by train_attention.cpp only.
#pragma once
#include <ATen/ATen.h>
#include "common.h"
#include <algorithm>
#include <cmath>
#include <vector>

using at::Tensor;

namespace {

struct Layout {
  int64_t prompts, P, R1, B, H, KV, hd;  // R1: the longest row's response tokens
  const int64_t* row_prompt;
  std::vector<int64_t> row_start;  // [B + 1]: row b's tokens are prompts·P + row_start[b] .. prompts·P + row_start[b + 1]
  const bool *preal, *rreal;  // [prompts, P], [B, P + R1]
};

struct Block {  // queries qs .. qs+nq-1 over keys[0..nk); query i may see key k <= i + off when real or its own
  int64_t qs, nq, off;
  std::vector<int64_t> keys;
  std::vector<char> real;
  int64_t limit(int64_t i) const { return std::min<int64_t>(keys.size(), i + off + 1); }
};

struct Blocks {  // every prompt's block (prompt p), every row's (row b)
  std::vector<Block> prompt, rows;
};

Blocks all_blocks(const Layout& L) {
  Blocks out;
  for (int64_t p = 0; p < L.prompts; ++p) {
    Block pb{p * L.P, L.P, 0, {}, {}};
    for (int64_t j = 0; j < L.P; ++j) {
      pb.keys.push_back(p * L.P + j);
      pb.real.push_back(L.preal[p * L.P + j]);
    }
    out.prompt.push_back(std::move(pb));
  }
  const int64_t base = L.prompts * L.P, W = L.P + L.R1;
  for (int64_t b = 0; b < L.B; ++b) {  // a row sees its prompt's keys, then its own (a row of none: no queries)
    const int64_t qs = base + L.row_start[b], nq = L.row_start[b + 1] - L.row_start[b];
    Block rb{qs, nq, L.P, out.prompt[L.row_prompt[b]].keys, {}};
    for (int64_t t = 0; t < nq; ++t) rb.keys.push_back(qs + t);
    for (int64_t k = 0; k < L.P + nq; ++k) rb.real.push_back(L.rreal[b * W + k]);
    out.rows.push_back(std::move(rb));
  }
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

Layout layout_of(const Tensor& qkv, const Tensor& row_prompt, const Tensor& row_len, const Tensor& preal,
                 const Tensor& rreal, int64_t P, int64_t H, int64_t KV) {
  const int64_t prompts = preal.size(0), B = row_prompt.size(0), hd = qkv.size(1) / (H + 2 * KV);
  TORCH_CHECK(rreal.dim() == 2 && rreal.size(1) >= P && row_len.dim() == 1 && row_len.size(0) == B &&
                  row_len.is_contiguous() && row_len.scalar_type() == at::kLong,
              "attention: rreal [rows, P + R1] (bool), row_len [rows] (int64)");
  const int64_t R1 = rreal.size(1) - P;
  const int64_t* rl = row_len.data_ptr<int64_t>();
  std::vector<int64_t> start(B + 1, 0);
  for (int64_t b = 0; b < B; ++b) {
    TORCH_CHECK(rl[b] >= 0 && rl[b] <= R1, "attention: row ", b, " has ", rl[b], " tokens of at most ", R1);
    start[b + 1] = start[b] + rl[b];
  }
  TORCH_CHECK(qkv.dim() == 2 && qkv.is_contiguous() && qkv.size(1) == (H + 2 * KV) * hd && H % KV == 0 && hd % 2 == 0,
              "attention: qkv must be contiguous [tokens, (H + 2·KV)·head_dim]");
  TORCH_CHECK(qkv.size(0) == prompts * P + start[B], "attention: tokens = prompts·P + the rows' lengths");
  TORCH_CHECK(preal.is_contiguous() && rreal.is_contiguous() && row_prompt.is_contiguous() &&
                  preal.scalar_type() == at::kBool && rreal.scalar_type() == at::kBool && preal.size(1) == P &&
                  rreal.size(0) == B && row_prompt.scalar_type() == at::kLong,
              "attention: masks [prompts, P], [rows, P + R1] (bool), row_prompt [rows] (int64)");
  const int64_t* rp = row_prompt.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b)  // a row of no prompt would be left out of every task, its output unwritten
    TORCH_CHECK(rp[b] >= 0 && rp[b] < prompts, "attention: row ", b, " has prompt ", rp[b], " of ", prompts);
  return {prompts, P, R1, B, H, KV, hd, rp, std::move(start), preal.data_ptr<bool>(), rreal.data_ptr<bool>()};
}

}  // namespace
