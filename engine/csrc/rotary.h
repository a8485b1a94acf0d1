// Rotary embedding of one head, shared by the rotary kernel (elementwise.cpp) and the decode
// attention that rotates each sequence's fresh query and key itself (paged_decode.cpp), so both
// give the same bits.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "bf16_vec.h"

namespace dyno_rotary {

// out = bf16(x * cos) + bf16(rotate_half(x) * sin), rounded again: where transformers rounds.
inline void rotate_head(const at::BFloat16* x, const at::BFloat16* c, const at::BFloat16* s, at::BFloat16* out,
                        int64_t hd) {
  const int64_t half = hd / 2;
  int64_t d = 0;
#if defined(__AVX512BF16__)
  using namespace dyno_vec;
  if (half % kLanes == 0) {
    for (; d < half; d += kLanes) {
      const __m512 lo = load(x + d), hi = load(x + d + half);
      store(out + d, _mm512_sub_ps(round(_mm512_mul_ps(lo, load(c + d))),
                                   round(_mm512_mul_ps(hi, load(s + d)))));
      store(out + d + half, _mm512_add_ps(round(_mm512_mul_ps(hi, load(c + d + half))),
                                          round(_mm512_mul_ps(lo, load(s + d + half)))));
    }
    return;
  }
#endif
  auto f = [](at::BFloat16 v) { return static_cast<float>(v); };
  auto r = [](float v) { return static_cast<at::BFloat16>(v); };  // round to nearest even
  for (; d < hd; ++d) {
    const float rot = d < half ? -f(x[d + half]) : f(x[d - half]);
    out[d] = r(f(r(f(x[d]) * f(c[d]))) + f(r(rot * f(s[d]))));
  }
}

}  // namespace dyno_rotary
