// Rows of bf16 activations as integers, for the kernels that multiply quantized weights in
// integers (gemv.cpp's VNNI ones, amx_linear.cpp's AMX-INT8 one): per row x ~= x_q * scale with
// |x_q| <= 16383 (15 bits: every value not tiny keeps more bits than bf16 gives it), stored as
// two signed bytes, x_q = 128 * high + low with low in 0..127, since both units multiply bytes.
#pragma once

#include <ATen/ATen.h>
#if defined(__AVX512BW__)
#include <immintrin.h>
#endif

#include "lane_folds.h"

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
// scale[g] = the group's max |x| / 127, weighted_sum[g] = scale[g] * the sum of its x_q, and
// sum[g] = factor * that sum (the kernel starts its integer sums there); a group holding inf or
// NaN gets scale NaN (and sums 0).
inline void quantize_groups8(const at::BFloat16* x, int64_t k, int8_t* q, float* scale, float* weighted_sum,
                             int32_t* sum, int32_t factor) {
  constexpr int64_t kGroup = 32;
  const int64_t groups = k / kGroup;
#if defined(__AVX512BW__) && defined(__AVX512VNNI__)
  // Two passes, 16 groups at a time: their largest |x|, scales and inverses; then their bytes
  // and sums. Nothing stored is read back by a load wider than its store or after a masked
  // store: such loads wait for the stores to land, and had cost this function over half its
  // time (int4 prompt steps of 2048 tokens on Zen 5: 5.7-5.9% of the samples -> 3.3-3.5%).
  constexpr int64_t kMaxGroups = 256;  // 8192 inputs; longer rows go in parts
  if (groups > kMaxGroups) {
    for (int64_t g0 = 0; g0 < groups; g0 += kMaxGroups) {
      const int64_t part = std::min(kMaxGroups, groups - g0) * kGroup;
      quantize_groups8(x + g0 * kGroup, part, q + g0 * kGroup, scale + g0, weighted_sum + g0, sum + g0, factor);
    }
    return;
  }
  alignas(64) float inverse[kMaxGroups + 16], scales[kMaxGroups + 16];  // scales: read back below
  for (int64_t g0 = 0; g0 < groups; g0 += 16) {
    // Each group's largest |x| as bf16 bits (|x| of a bf16 orders as its bits without the sign,
    // and inf and NaN order above the rest; compared as integers, which -ffast-math leaves
    // alone), 16 groups into one vector: each dword's larger word, then max16_epu32 (tops stored
    // a word at a time and read back as a vector had stalled on the stores).
    __m512i largest[16];
    for (int i = 0; i < 16; ++i) {
      if (g0 + i >= groups) {
        largest[i] = _mm512_setzero_si512();
        continue;
      }
      const __m512i magnitude = _mm512_and_si512(_mm512_loadu_si512(x + (g0 + i) * kGroup), _mm512_set1_epi16(0x7FFF));
      largest[i] = _mm512_and_si512(_mm512_max_epu16(magnitude, _mm512_srli_epi32(magnitude, 16)), _mm512_set1_epi32(0xFFFF));
    }
    const __mmask16 lanes = dyno_vec::lanes_left(groups - g0);
    const __m512i bits = dyno_vec::max16_epu32(largest);
    const __m512 top = _mm512_castsi512_ps(_mm512_slli_epi32(bits, 16));
    const __mmask16 finite = _mm512_cmplt_epu32_mask(bits, _mm512_set1_epi32(0x7F80));
    const __mmask16 usable = finite & _mm512_cmpneq_epu32_mask(bits, _mm512_setzero_si512());
    // all zero: scale 0; inf or NaN: scale NaN; either way bytes 0
    const __m512 unusable = _mm512_mask_mov_ps(_mm512_set1_ps(std::numeric_limits<float>::quiet_NaN()), finite, _mm512_setzero_ps());
    const __m512 s = _mm512_mask_div_ps(unusable, usable, top, _mm512_set1_ps(127.f));
    _mm512_mask_storeu_ps(scale + g0, lanes, s);
    _mm512_store_ps(scales + g0, s);
    _mm512_store_ps(inverse + g0, _mm512_maskz_div_ps(usable, _mm512_set1_ps(127.f), top));
  }
  // The bytes: each bf16 put in the top half of its lane as fp32 (in-lane unpacks, so the lanes
  // take words 8L .. 8L + 3 and 8L + 4 .. 8L + 7), scaled and rounded, then packed back in order
  // by saturating packs (what one saturating narrowing of each int32 gives) and a 64-bit permute.
  const __m512i low_halves = _mm512_set_epi64(7, 7, 7, 7, 6, 4, 2, 0);
  auto bytes_of = [&](int64_t g) {
    if (g >= groups || inverse[g] == 0.f) return _mm256_setzero_si256();  // unusable: bytes 0
    const __m512i raw = _mm512_loadu_si512(x + g * kGroup);
    const __m512 inv = _mm512_set1_ps(inverse[g]);
    const __m512 lo = _mm512_castsi512_ps(_mm512_unpacklo_epi16(_mm512_setzero_si512(), raw));
    const __m512 hi = _mm512_castsi512_ps(_mm512_unpackhi_epi16(_mm512_setzero_si512(), raw));
    const __m512i words = _mm512_packs_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(lo, inv)),
                                             _mm512_cvtps_epi32(_mm512_mul_ps(hi, inv)));
    return _mm512_castsi512_si256(_mm512_permutexvar_epi64(low_halves, _mm512_packs_epi16(words, words)));
  };
  // 16 groups at a time, two to a vector: VPDPBUSD of ones and a pair's bytes gives 8 partial
  // sums of each group, and sum_pairs folds them (a full horizontal sum per group had cost more
  // than its bytes; reading the stored bytes back, wider than they were stored, stalled).
  const __m512i ones = _mm512_set1_epi8(1);
  for (int64_t g0 = 0; g0 < groups; g0 += 16) {
    __m512i partial[8];
    for (int j = 0; j < 8; ++j) {
      const int64_t g = g0 + 2 * j;
      const __m256i a = bytes_of(g), b = bytes_of(g + 1);
      if (g < groups) _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + g * kGroup), a);
      if (g + 1 < groups) _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + (g + 1) * kGroup), b);
      partial[j] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), ones, _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1));
    }
    const __m512i total = dyno_vec::sum_pairs(partial);
    const __mmask16 lanes = dyno_vec::lanes_left(groups - g0);
    _mm512_mask_storeu_epi32(sum + g0, lanes, _mm512_mullo_epi32(total, _mm512_set1_epi32(factor)));
    // an unusable group's weighted sum: its scale (0, or NaN) times 0. The scales come from the
    // local copy: a load from the masked store into `scale` waits for it (no store forwarding).
    _mm512_mask_storeu_ps(weighted_sum + g0, lanes, _mm512_mul_ps(_mm512_load_ps(scales + g0), _mm512_cvtepi32_ps(total)));
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
    int32_t total = 0;
    for (int64_t i = 0; i < kGroup; ++i) {
      qg[i] = static_cast<int8_t>(std::lrintf(static_cast<float>(xg[i]) * inv));
      total += qg[i];
    }
    sum[g] = factor * total;
    weighted_sum[g] = scale[g] * static_cast<float>(total);
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
