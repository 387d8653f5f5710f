// x·Wᵀ for the decode step's few rows, with W laid out beforehand (packed_gemm.cpp).
#pragma once
#include <ATen/ATen.h>
#include <vector>

namespace s2lpo {

constexpr int64_t kPanel = 16;  // output columns per panel of a packed weight

// The weights [n_i, K] (concatenated along their rows: q, k and v into qkv) laid out as [ceil(N / 16), K, 16]:
// panel p holds output columns 16p .. 16p + 15, k-major; columns past N are zero.
at::Tensor pack_weights(const std::vector<at::Tensor>& parts);
// y [M, n] = x [M, K] · Wᵀ of a packed W with n output columns
at::Tensor packed_mm(const at::Tensor& x, const at::Tensor& w, int64_t n);
// y [M, n] += x · Wᵀ (y contiguous rows)
void packed_addmm_(at::Tensor& y, const at::Tensor& x, const at::Tensor& w);
// whether the multiplication is vectorised here (AVX2 and FMA); elsewhere it is correct but slow: not worth packing
bool packed_gemm_simd();

}  // namespace s2lpo
