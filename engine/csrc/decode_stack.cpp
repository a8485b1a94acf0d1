// A decode step's decoder layers in one call: the same kernels, in the same order and on the
// same views, as the Python layers run them (engine/models/llama.py), so the outputs are the
// same bits; what goes is the Python between them. Offline decode steps of the default model
// (int4, fp8 cache): 32 sequences 21.7-21.9 -> 18.0-18.1 ms, one 6.5-6.7 -> 4.9-5.1 ms. Only the
// attention differs in form: rotary, the cache write and the attention run as one pass per
// sequence (paged_decode_qkv, the same bits as the three in turn): the stack at 32 sequences
// 13.2-13.5 -> 12.5-13.1 ms in alternating pairs.
//
// From kSplitFromRows rows on a CPU without AMX, each thread takes its share of the sequences
// through every layer, where each kernel had spread every piece over all threads and they met
// at each piece's end (~7 times a layer): a thread held up (by the server's HTTP thread, by the
// benchmark's client) no longer holds up the other at every piece. Served (Zen 5, int4 + fp8
// cache, 192 requests at c=32, alternating): 946, 1004, 948 -> 1021, 975, 1013 tok/s. Offline,
// with nothing else on the cores, decode steps at 32 sequences came out even (11.90-12.59
// against 12.38-12.57 ms), and at 8 and 16 sequences slower, hence the bound.
#include "decode_stack.h"

#include "kernels.h"

#include <c10/core/InferenceMode.h>
#include <omp.h>

#include <exception>

namespace dyno_stack {

// Decode batches of this many rows or more go one share of the sequences to each thread (below,
// shares of 4 to 12 rows make the int4 kernel's row blocks short while each thread reads all
// the weights: offline decode steps at 8 and 16 sequences took longer split).
constexpr int64_t kSplitFromRows = 32;

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

// Every layer for the rows of x (one decode token per sequence), the kernels spreading each
// piece over the threads that call this: all of them, or just the one within forward's split.
std::tuple<at::Tensor, at::Tensor> run_layers(const std::vector<Layer>& layers, const at::Tensor& x, const Step& step,
                                              std::vector<at::Tensor>& kv, const std::vector<double>& k_scales,
                                              const std::vector<double>& v_scales) {
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

}  // namespace

// Only VNNI linears take every batch on the one kernel: with AMX, a share of a few rows would
// go to the few-row kernel, whose bits differ from the AMX kernel's.
bool Stack::all_vnni() const {
  for (const Layer& layer : layers)
    for (const Linear* linear : {&layer.qkv, &layer.o, &layer.gate_up, &layer.down})
      if (linear->kind != Linear::kInt4Vnni && linear->kind != Linear::kInt8Vnni) return false;
  return true;
}

std::tuple<at::Tensor, at::Tensor> Stack::forward(
    const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, std::vector<at::Tensor> kv,
    const std::vector<double>& k_scales, const std::vector<double>& v_scales, const at::Tensor& slots,
    const at::Tensor& block_table, const at::Tensor& context_lens, int64_t block_size) const {
  TORCH_CHECK(kv.size() == layers.size() && k_scales.size() == layers.size() && v_scales.size() == layers.size(),
              "decode stack: one cache and one pair of scales per layer");
  const int64_t rows = x.size(0);
  const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  if (threads < 2 || rows < kSplitFromRows || !all_vnni()) {
    const Step step{cos, sin, slots, block_table, context_lens, block_size};
    return run_layers(layers, x, step, kv, k_scales, v_scales);
  }
  // Each thread takes its own sequences through every layer, its kernels on that thread alone
  // (regions nested in this one run on one thread). A row's result does not depend on the rows
  // beside it, so the bits are those of the whole batch on all threads, and the threads meet
  // once a step instead of at every piece of every layer.
  std::vector<at::Tensor> hidden(threads), residual(threads);
  std::vector<std::exception_ptr> failed(threads);
  int team = threads;  // what OpenMP gives, which may be fewer
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), n = omp_get_num_threads();
    if (t == 0) team = n;
    const int64_t r0 = rows * t / n, r1 = rows * (t + 1) / n;
    try {
      c10::InferenceMode inference;  // thread-local: as the caller's
      const at::Tensor c = cos.narrow(0, r0, r1 - r0), s = sin.narrow(0, r0, r1 - r0);
      const at::Tensor sl = slots.narrow(0, r0, r1 - r0), table = block_table.narrow(0, r0, r1 - r0);
      const at::Tensor lens = context_lens.narrow(0, r0, r1 - r0);
      const Step step{c, s, sl, table, lens, block_size};
      std::vector<at::Tensor> caches = kv;
      std::tie(hidden[t], residual[t]) = run_layers(layers, x.narrow(0, r0, r1 - r0), step, caches, k_scales, v_scales);
    } catch (...) {
      failed[t] = std::current_exception();
    }
  }
  for (const std::exception_ptr& e : failed)
    if (e) std::rethrow_exception(e);
  hidden.resize(team);
  residual.resize(team);
  return {at::cat(hidden), at::cat(residual)};
}

}  // namespace dyno_stack
