// Writes a step's keys and values into their cache slots: one row copy per token, with the
// rows read in place from the fused QKV output. At 32 tokens, 0.7 us against 9 us for the two
// index_copy_ calls it replaces (per layer, bf16), most of theirs being dispatch. An fp8 cache
// takes each value divided by its scale (rounded to the model dtype first, as the torch path
// computes it), then converted as torch converts.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstring>

#include "fp8.h"

namespace {

using dyno_fp8::Fp8;
using dyno_fp8::quantize_row;

// Prompts split over the threads; a decode step's few dozen rows stay on one (an fp8 row takes
// ~0.1 us, less than waking the other thread).
constexpr int64_t kTokensPerTask = 128;

template <typename T, Fp8 F>
void write_fp8(at::Tensor& kv, const at::Tensor& k, const at::Tensor& v, const int64_t* slots,
               float k_scale, float v_scale) {
  const int64_t tokens = k.size(0), row = kv.size(2) * kv.size(3), num_slots = kv.size(1);
  auto* base = static_cast<uint8_t*>(kv.data_ptr());
  const T* kp = k.data_ptr<T>();
  const T* vp = v.data_ptr<T>();
  at::parallel_for(0, tokens, kTokensPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      quantize_row<T, F>(kp + i * k.stride(0), base + slots[i] * row, row, k_scale);
      quantize_row<T, F>(vp + i * v.stride(0), base + (num_slots + slots[i]) * row, row, v_scale);
    }
  });
}

void check_rows(const at::Tensor& kv, const at::Tensor& k, const at::Tensor& v, const at::Tensor& slots) {
  TORCH_CHECK(kv.is_contiguous() && slots.is_contiguous() && slots.scalar_type() == at::kLong,
              "kv_write: kv and slots must be contiguous, slots int64");
  for (const at::Tensor* t : {&k, &v})
    TORCH_CHECK(t->size(0) == slots.size(0) && t->stride(2) == 1 && t->stride(1) == kv.size(3),
                "kv_write: each token's k and v row must be contiguous");
  const int64_t* sp = slots.data_ptr<int64_t>();
  for (int64_t i = 0; i < slots.size(0); ++i)
    TORCH_CHECK(sp[i] >= 0 && sp[i] < kv.size(1), "kv_write: slot out of range");
}

}  // namespace

// kv: [2, num_slots, kv_heads, head_dim], contiguous; k, v: [tokens, kv_heads, head_dim] with
// each token's row contiguous; slots: [tokens] int64.
void kv_write(at::Tensor& kv, const at::Tensor& k, const at::Tensor& v, const at::Tensor& slots) {
  check_rows(kv, k, v, slots);
  TORCH_CHECK(k.scalar_type() == kv.scalar_type() && v.scalar_type() == kv.scalar_type(),
              "kv_write: k, v and the cache must share a dtype");
  const int64_t tokens = k.size(0), row = kv.size(2) * kv.size(3), num_slots = kv.size(1);
  const int64_t bytes = row * kv.element_size();
  auto* base = static_cast<char*>(kv.data_ptr());
  const auto* kp = static_cast<const char*>(k.data_ptr());
  const auto* vp = static_cast<const char*>(v.data_ptr());
  const int64_t* sp = slots.data_ptr<int64_t>();
  at::parallel_for(0, tokens, kTokensPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      std::memcpy(base + sp[i] * bytes, kp + i * k.stride(0) * k.element_size(), bytes);
      std::memcpy(base + (num_slots + sp[i]) * bytes, vp + i * v.stride(0) * v.element_size(), bytes);
    }
  });
}

// kv_write for an fp8 cache (e4m3fn or e5m2): k, v bf16 or fp32, stored as value / scale.
void kv_write_fp8(at::Tensor& kv, const at::Tensor& k, const at::Tensor& v, const at::Tensor& slots,
                  double k_scale, double v_scale) {
  check_rows(kv, k, v, slots);
  const auto src = k.scalar_type(), cache = kv.scalar_type();
  TORCH_CHECK(v.scalar_type() == src && (src == at::kBFloat16 || src == at::kFloat),
              "kv_write_fp8: k and v both bf16 or both fp32");
  TORCH_CHECK(cache == at::kFloat8_e4m3fn || cache == at::kFloat8_e5m2, "kv_write_fp8: an fp8 cache");
  const int64_t* sp = slots.data_ptr<int64_t>();
  const float ks = static_cast<float>(k_scale), vs = static_cast<float>(v_scale);
  const bool e4 = cache == at::kFloat8_e4m3fn;
  if (src == at::kBFloat16) {
    e4 ? write_fp8<at::BFloat16, Fp8::kE4M3>(kv, k, v, sp, ks, vs)
       : write_fp8<at::BFloat16, Fp8::kE5M2>(kv, k, v, sp, ks, vs);
  } else {
    e4 ? write_fp8<float, Fp8::kE4M3>(kv, k, v, sp, ks, vs) : write_fp8<float, Fp8::kE5M2>(kv, k, v, sp, ks, vs);
  }
}
