// A decode step's decoder layers in one call from Python (engine/models/decode_stack.py).
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Optional.h>

#include <cstdint>
#include <tuple>
#include <vector>

namespace dyno_stack {

// One linear layer as the kernel that takes its decode batches: bf16 weights in tile order,
// int8 on AMX-INT8, int4 on AMX (and on the VNNI kernel up to gemv_up_to_rows rows), or, on a
// CPU without AMX, int4 or int8 on vnni_linear.cpp's kernels (int4: weight and params in
// pack_int4_gemv's order; int8: pack_int8_vnni's codes and the fp32 scales).
struct Linear {
  enum Kind : int64_t { kBf16 = 0, kInt8 = 1, kInt4 = 2, kInt4Vnni = 3, kInt8Vnni = 4 };
  int64_t kind;
  at::Tensor weight, params;            // tiles (bf16); packed + scale (int8); codes + params (int4)
  at::Tensor gemv_codes, gemv_params;   // int4 only
  int64_t out_features, gemv_up_to_rows;
  c10::optional<at::Tensor> bias;
  bool silu_fused = false;  // int4 gate/up: AMX (or VNNI) codes interleaved for SiLU-and-mul on the way out

  at::Tensor operator()(const at::Tensor& x) const;
  at::Tensor silu_and_mul_of(const at::Tensor& x) const;  // silu_and_mul(this(x))
};

struct Layer {
  at::Tensor input_norm, post_norm;
  double eps;
  Linear qkv, o, gate_up, down;
  int64_t num_heads, num_kv_heads, head_dim, window;
  double scale;
};

// The cache and batch facts every layer shares; kv and its scales are per layer.
struct Step {
  const at::Tensor& cos;
  const at::Tensor& sin;
  const at::Tensor& slots;
  const at::Tensor& block_table;
  const at::Tensor& context_lens;
  int64_t block_size;
};

// A model's decoder layers. forward's x: the embedded tokens [rows, hidden], one decode token
// per sequence; kv and its scales: one per layer. Returns (the last layer's output, the
// residual stream), as the Python layers hand them to the final norm.
struct Stack {
  std::vector<Layer> layers;

  std::tuple<at::Tensor, at::Tensor> forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                                             std::vector<at::Tensor> kv, const std::vector<double>& k_scales,
                                             const std::vector<double>& v_scales, const at::Tensor& slots,
                                             const at::Tensor& block_table, const at::Tensor& context_lens,
                                             int64_t block_size) const;

 private:
  bool all_vnni() const;
};

}  // namespace dyno_stack
