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
// scale[g] = the group's max |x| / 127, sum[g] = the sum of its x_q, weighted_sum[g] =
// scale[g] * sum[g]; a group holding inf or NaN gets scale NaN (and sum 0).
inline void quantize_groups8(const at::BFloat16* x, int64_t k, int8_t* q, float* scale, float* weighted_sum,
                             int32_t* sum) {
  constexpr int64_t kGroup = 32;
  const int64_t groups = k / kGroup;
#if defined(__AVX512BW__)
  // Three passes: each group's largest |x|, then every group's scale and its inverse 16 at a
  // time, then the bytes and their sums (a pass a group, with two scalar divisions and two
  // full-width reductions each, had taken ~5% of a 2048-token prompt step on Zen 5).
  constexpr int64_t kMaxGroups = 256;  // 8192 inputs; longer rows go in parts
  if (groups > kMaxGroups) {
    for (int64_t g0 = 0; g0 < groups; g0 += kMaxGroups) {
      const int64_t part = std::min(kMaxGroups, groups - g0) * kGroup;
      quantize_groups8(x + g0 * kGroup, part, q + g0 * kGroup, scale + g0, weighted_sum + g0, sum + g0);
    }
    return;
  }
  alignas(64) uint16_t tops[kMaxGroups + 32];
  std::fill(tops + groups, tops + groups + 16, uint16_t{0});  // the last vector's unused lanes
  alignas(64) float inverse[kMaxGroups + 16];
  for (int64_t g = 0; g < groups; ++g) {
    // |x| of a bf16 orders as its bits without the sign, and inf and NaN order above the rest
    // (compared as integers, which -ffast-math leaves alone); the max of 8 words is the min of
    // their complements (PHMINPOSUW)
    const __m512i magnitude = _mm512_and_si512(_mm512_loadu_si512(x + g * kGroup), _mm512_set1_epi16(0x7FFF));
    const __m256i m16 = _mm256_max_epu16(_mm512_castsi512_si256(magnitude), _mm512_extracti64x4_epi64(magnitude, 1));
    const __m128i m8 = _mm_max_epu16(_mm256_castsi256_si128(m16), _mm256_extracti128_si256(m16, 1));
    tops[g] = static_cast<uint16_t>(~_mm_cvtsi128_si32(_mm_minpos_epu16(_mm_xor_si128(m8, _mm_set1_epi16(-1)))));
  }
  for (int64_t g = 0; g < groups; g += 16) {
    const __mmask16 lanes = groups - g >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (groups - g)) - 1);
    const __m512i bits = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(tops + g)));
    const __m512 top = _mm512_castsi512_ps(_mm512_slli_epi32(bits, 16));
    const __mmask16 finite = _mm512_cmplt_epu32_mask(bits, _mm512_set1_epi32(0x7F80));
    const __mmask16 usable = finite & _mm512_cmpneq_epu32_mask(bits, _mm512_setzero_si512());
    // all zero: scale 0; inf or NaN: scale NaN; either way bytes 0
    const __m512 unusable = _mm512_mask_mov_ps(_mm512_set1_ps(std::numeric_limits<float>::quiet_NaN()), finite, _mm512_setzero_ps());
    const __m512 s = _mm512_mask_div_ps(unusable, usable, top, _mm512_set1_ps(127.f));
    _mm512_mask_storeu_ps(scale + g, lanes, s);
    _mm512_store_ps(inverse + g, _mm512_maskz_div_ps(usable, _mm512_set1_ps(127.f), top));
  }
  for (int64_t g = 0; g < groups; ++g) {
    int8_t* qg = q + g * kGroup;
    if (inverse[g] == 0.f) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(qg), _mm256_setzero_si256());
      weighted_sum[g] = scale[g];
      sum[g] = 0;
      continue;
    }
    const __m512i raw = _mm512_loadu_si512(x + g * kGroup);
    const __m512 inv = _mm512_set1_ps(inverse[g]);
    const __m512 lo = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(raw)), 16));
    const __m512 hi = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(raw, 1)), 16));
    const __m256i bytes = _mm256_set_m128i(_mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(hi, inv))),
                                           _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(lo, inv))));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(qg), bytes);
    // the bytes' sum: as unsigned (x_q + 128), eight at a time (VPSADBW), less 32 * 128
    const __m256i eights = _mm256_sad_epu8(_mm256_xor_si256(bytes, _mm256_set1_epi8(static_cast<char>(0x80))), _mm256_setzero_si256());
    const __m128i pairs = _mm_add_epi64(_mm256_castsi256_si128(eights), _mm256_extracti128_si256(eights, 1));
    sum[g] = static_cast<int32_t>(_mm_cvtsi128_si64(_mm_add_epi64(pairs, _mm_unpackhi_epi64(pairs, pairs))) - 32 * 128);
    weighted_sum[g] = scale[g] * static_cast<float>(sum[g]);
  }
#else
  for (int64_t g = 0; g < groups; ++g) {
    const at::BFloat16* xg = x + g * kGroup;
    int8_t* qg = q + g * kGroup;
    uint16_t top_bits = 0;
    for (int64_t i = 0; i < kGroup; ++i) top_bits = std::max<uint16_t>(top_bits, xg[i].x & 0x7FFF);
    const float top = static_cast<float>(at::BFloat16(top_bits, at::BFloat16::from_bits()));
    if (top_bits >= 0x7F80 || top_bits == 0) {  // inf or NaN, or all zero
      std::fill(qg, qg + kGroup, int8_t{0});
      scale[g] = top_bits == 0 ? 0.f : std::numeric_limits<float>::quiet_NaN();
      weighted_sum[g] = scale[g];
      sum[g] = 0;
      continue;
    }
    const float inv = 127.f / top;
    scale[g] = top / 127.f;
    sum[g] = 0;
    for (int64_t i = 0; i < kGroup; ++i) {
      qg[i] = static_cast<int8_t>(std::lrintf(static_cast<float>(xg[i]) * inv));
      sum[g] += qg[i];
    }
    weighted_sum[g] = scale[g] * static_cast<float>(sum[g]);
  }
#endif
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
