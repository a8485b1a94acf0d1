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

}  // namespace dyno_rows
