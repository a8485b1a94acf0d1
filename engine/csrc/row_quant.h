// Rows of bf16 activations as integers, for the kernels that multiply quantized weights in
// integers (gemv.cpp's VNNI ones, amx_linear.cpp's AMX-INT8 one): per row x ~= x_q * scale with
// |x_q| <= 16383 (15 bits: every value not tiny keeps more bits than bf16 gives it), stored as
// two signed bytes, x_q = 128 * high + low with low in 0..127, since both units multiply bytes.
#pragma once

#include <ATen/ATen.h>
#if defined(__AVX512BW__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

namespace dyno_rows {

constexpr int kLimit = 16383;

struct Rows {
  int64_t m, stride;              // rows quantized; bytes per row (inputs, padded with zeros)
  std::vector<int8_t> high, low;  // [rows allocated][stride]
  std::vector<float> scale;       // [m]
};

// One row; a row holding inf or NaN gets scale NaN, so its outputs are NaN (as a float
// matmul's would be, or inf).
inline float quantize_row(const at::BFloat16* x, int64_t k, int8_t* high, int8_t* low) {
  uint16_t top_bits = 0;  // |x| of a bf16 orders as its bits without the sign
  for (int64_t i = 0; i < k; ++i) top_bits = std::max<uint16_t>(top_bits, x[i].x & 0x7FFF);
  if ((top_bits & 0x7F80) == 0x7F80) return std::numeric_limits<float>::quiet_NaN();  // not isfinite: -ffast-math
  const float top = static_cast<float>(at::BFloat16(top_bits, at::BFloat16::from_bits()));
  if (top == 0.f) return 1.f;  // all zero, as high and low start
  const float inv = static_cast<float>(kLimit) / top;
  int64_t i = 0;
#if defined(__AVX512BW__)
  // 16 at a time (at 32 rows a scalar loop here took longer than the tiles' work)
  const __m512i limit = _mm512_set1_epi32(kLimit), low_bits = _mm512_set1_epi32(127);
  for (; i + 16 <= k; i += 16) {
    const __m512i bits = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i)));
    const __m512 v = _mm512_mul_ps(_mm512_castsi512_ps(_mm512_slli_epi32(bits, 16)), _mm512_set1_ps(inv));
    const __m512i q = _mm512_min_epi32(_mm512_max_epi32(_mm512_cvtps_epi32(v), _mm512_sub_epi32(_mm512_setzero_si512(), limit)), limit);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(high + i), _mm512_cvtepi32_epi8(_mm512_srai_epi32(q, 7)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(low + i), _mm512_cvtepi32_epi8(_mm512_and_si512(q, low_bits)));
  }
#endif
  for (; i < k; ++i) {
    const long v = std::clamp<long>(std::lrintf(static_cast<float>(x[i]) * inv), -kLimit, kLimit);
    high[i] = static_cast<int8_t>(v >> 7);  // floor, so low is 0..127
    low[i] = static_cast<int8_t>(v & 127);
  }
  return top / static_cast<float>(kLimit);
}

// One row as single signed bytes with a scale per group of 32 inputs, |x_q| <= 127, as
// llama.cpp's Q8_0 (vnni_linear.cpp's kernel for many rows, where the arithmetic, not the
// weights' bytes, sets the time; one scale per row lost 8 points of top-1 agreement with fp32).
// scale[g] = the group's max |x| / 127, weighted_sum[g] = scale[g] * sum of the group's x_q; a
// group holding inf or NaN gets scale NaN.
inline void quantize_groups8(const at::BFloat16* x, int64_t k, int8_t* q, float* scale, float* weighted_sum) {
  constexpr int64_t kGroup = 32;
  for (int64_t g = 0; g * kGroup < k; ++g) {
    const at::BFloat16* xg = x + g * kGroup;
    int8_t* qg = q + g * kGroup;
    // |x| of a bf16 orders as its bits without the sign, and inf and NaN order above the rest
    // (compared as integers, which -ffast-math leaves alone)
#if defined(__AVX512BW__)
    const __m512i raw = _mm512_loadu_si512(xg);
    const __m512i magnitude = _mm512_and_si512(raw, _mm512_set1_epi16(0x7FFF));
    const __m256i halves = _mm256_max_epu16(_mm512_castsi512_si256(magnitude), _mm512_extracti64x4_epi64(magnitude, 1));
    const uint16_t top_bits = static_cast<uint16_t>(_mm512_reduce_max_epu32(_mm512_cvtepu16_epi32(halves)));
#else
    uint16_t top_bits = 0;
    for (int64_t i = 0; i < kGroup; ++i) top_bits = std::max<uint16_t>(top_bits, xg[i].x & 0x7FFF);
#endif
    const float top = static_cast<float>(at::BFloat16(top_bits, at::BFloat16::from_bits()));
    if (top_bits >= 0x7F80 || top_bits == 0) {  // inf or NaN, or all zero
      std::fill(qg, qg + kGroup, int8_t{0});
      scale[g] = top_bits == 0 ? 0.f : std::numeric_limits<float>::quiet_NaN();
      weighted_sum[g] = scale[g];
      continue;
    }
    const float inv = 127.f / top;
    scale[g] = top / 127.f;
#if defined(__AVX512BW__)
    // both halves' codes, then their 32 bytes and one sum (a store and a sum per half: 2048 rows
    // of 576 inputs through a 32-channel int4 layer took 370 us instead of 345 on one Zen 5 core)
    const __m512 lo = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(raw)), 16));
    const __m512 hi = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(raw, 1)), 16));
    const __m512i r_lo = _mm512_cvtps_epi32(_mm512_mul_ps(lo, _mm512_set1_ps(inv)));
    const __m512i r_hi = _mm512_cvtps_epi32(_mm512_mul_ps(hi, _mm512_set1_ps(inv)));
    const __m256i bytes = _mm256_set_m128i(_mm512_cvtsepi32_epi8(r_hi), _mm512_cvtsepi32_epi8(r_lo));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(qg), bytes);
    weighted_sum[g] = scale[g] * static_cast<float>(_mm512_reduce_add_epi32(_mm512_add_epi32(r_lo, r_hi)));
#else
    int32_t sum = 0;
    for (int64_t i = 0; i < kGroup; ++i) {
      qg[i] = static_cast<int8_t>(std::lrintf(static_cast<float>(xg[i]) * inv));
      sum += qg[i];
    }
    weighted_sum[g] = scale[g] * static_cast<float>(sum);
#endif
  }
}

// x: [m, k] bf16 with contiguous rows; rows_alloc >= m rows of stride >= k bytes, zero past x.
inline Rows quantize(const at::Tensor& x, int64_t rows_alloc, int64_t stride) {
  const int64_t m = x.size(0), k = x.size(1);
  Rows rows{m, stride, std::vector<int8_t>(rows_alloc * stride), std::vector<int8_t>(rows_alloc * stride),
            std::vector<float>(m)};
  const auto* xd = x.data_ptr<at::BFloat16>();
  // rows apart on the threads once there are enough (all int8 linears at 512 rows: 86 ms with
  // one thread quantizing; few-row kernels keep to one)
#pragma omp parallel for schedule(static) if (m >= 16)
  for (int64_t i = 0; i < m; ++i)
    rows.scale[i] = quantize_row(xd + i * x.stride(0), k, rows.high.data() + i * stride, rows.low.data() + i * stride);
  return rows;
}

// fn(std::integral_constant<int, R>()) with R = min(m, Max): the kernels' row counts as template
// arguments, so that their per-row registers are arrays of a known size.
template <int Max, typename Fn>
void by_rows(int64_t m, Fn fn) {
  if constexpr (Max == 1) {
    fn(std::integral_constant<int, 1>());
  } else if (m >= Max) {
    fn(std::integral_constant<int, Max>());
  } else {
    by_rows<Max - 1>(m, fn);
  }
}

}  // namespace dyno_rows
