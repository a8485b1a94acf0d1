// A decode step's decoder layers in one call: the same kernels, in the same order and on the
// same views, as the Python layers run them (engine/models/llama.py), so the outputs are the
// same bits; what goes is the Python between them. Offline decode steps of the default model
// (int4, fp8 cache): 32 sequences 21.7-21.9 -> 18.0-18.1 ms, one 6.5-6.7 -> 4.9-5.1 ms. Only the
// attention differs in form: rotary, the cache write and the attention run as one pass per
// sequence (paged_decode_qkv, the same bits as the three in turn): the stack at 32 sequences
// 13.2-13.5 -> 12.5-13.1 ms in alternating pairs.
#include "decode_stack.h"

#include "kernels.h"

namespace dyno_stack {

at::Tensor Linear::operator()(const at::Tensor& x) const {
  switch (kind) {
    case kBf16:
      return amx_bf16_linear(x, weight, out_features, bias);
    case kInt8:
      return amx_int8_linear(x, weight, params, bias);
    case kInt4:
      if (x.size(0) <= gemv_up_to_rows) return int4_gemv(x, gemv_codes, gemv_params, bias);
      TORCH_CHECK(!silu_fused, "decode stack: a fused gate/up layer's AMX batches give SiLU-and-mul only");
      return amx_int4_linear(x, weight, params, bias, false);
    case kInt4Vnni:
      TORCH_CHECK(!silu_fused, "decode stack: a fused gate/up layer gives SiLU-and-mul only");
      return vnni_int4_linear(x, weight, params, bias, false);
    case kInt8Vnni:
      return vnni_int8_linear(x, weight, params, bias);
  }
  TORCH_CHECK(false, "decode stack: unknown linear kind ", kind);
  return {};
}

at::Tensor Linear::silu_and_mul_of(const at::Tensor& x) const {
  if (silu_fused && kind == kInt4Vnni) return vnni_int4_linear(x, weight, params, bias, true);
  if (silu_fused && x.size(0) > gemv_up_to_rows) return amx_int4_linear(x, weight, params, bias, true);
  return silu_and_mul((*this)(x));
}

namespace {

// Attention.forward and TorchAttention's decode-only path: rotary, the cache write and the
// attention in one pass per sequence (paged_decode_qkv).
at::Tensor attention(const Layer& layer, const at::Tensor& h, const Step& step, at::Tensor& kv,
                     double k_scale, double v_scale) {
  const at::Tensor out = paged_decode_qkv(layer.qkv(h), step.cos, step.sin, kv, step.slots, step.block_table,
                                          step.context_lens, step.block_size, layer.num_heads, layer.window,
                                          layer.scale, k_scale, v_scale);
  return layer.o(out);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> Stack::forward(
    const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, std::vector<at::Tensor> kv,
    const std::vector<double>& k_scales, const std::vector<double>& v_scales, const at::Tensor& slots,
    const at::Tensor& block_table, const at::Tensor& context_lens, int64_t block_size) const {
  TORCH_CHECK(kv.size() == layers.size() && k_scales.size() == layers.size() && v_scales.size() == layers.size(),
              "decode stack: one cache and one pair of scales per layer");
  const Step step{cos, sin, slots, block_table, context_lens, block_size};
  at::Tensor hidden = x, residual;
  for (size_t i = 0; i < layers.size(); ++i) {
    const Layer& layer = layers[i];
    at::Tensor h;
    if (i == 0) {  // the first layer's norm has no residual to add
      h = std::get<0>(add_rms_norm(hidden, c10::nullopt, layer.input_norm, layer.eps));
      residual = hidden;
    } else {
      std::tie(h, residual) = add_rms_norm(hidden, residual, layer.input_norm, layer.eps);
    }
    h = attention(layer, h, step, kv[i], k_scales[i], v_scales[i]);
    std::tie(h, residual) = add_rms_norm(h, residual, layer.post_norm, layer.eps);
    hidden = layer.down(layer.gate_up.silu_and_mul_of(h));
  }
  return {hidden, residual};
}

}  // namespace dyno_stack
