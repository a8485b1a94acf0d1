// fp8 cache codes (e4m3fn, e5m2) read as fp32 (or fp16) by dyno's CPU attention kernels, and
// written from bf16 or fp32 values by the kernels that fill the cache.
#pragma once

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <ATen/ATen.h>
#include <c10/util/Float8_e4m3fn.h>
#include <c10/util/Float8_e5m2.h>

#include <cstdint>
#include <type_traits>

#include "bf16_vec.h"

namespace dyno_fp8 {

enum class Fp8 { kE4M3, kE5M2 };

// An e5m2 code is the top byte of an fp16. An e4m3 code's exponent and mantissa bits placed in
// an fp16's give its value / 256, subnormals included (so the caller's scale takes the 256).
template <Fp8 F>
constexpr float kFp8Unit = F == Fp8::kE4M3 ? 256.f : 1.f;

template <Fp8 F>
inline uint16_t fp8_half_bits(uint8_t b) {
  return F == Fp8::kE5M2 ? static_cast<uint16_t>(b << 8)
                         : static_cast<uint16_t>(((b & 0x80) << 8) | ((b & 0x7F) << 7));
}

#if defined(__AVX512F__)
// e4m3: the code sign-extended to 16 bits and shifted left by 7 has the sign in bits 15 and 14
// and the rest in place below; clearing bit 14 leaves fp8_half_bits (3 integer ops, not 6).
template <Fp8 F>
inline __m512 fp8x16_to_float(const uint8_t* src) {
  const __m128i codes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src));
  if constexpr (F == Fp8::kE5M2) return _mm512_cvtph_ps(_mm256_slli_epi16(_mm256_cvtepu8_epi16(codes), 8));
  const __m256i shifted = _mm256_slli_epi16(_mm256_cvtepi8_epi16(codes), 7);
  return _mm512_cvtph_ps(_mm256_and_si256(shifted, _mm256_set1_epi16(static_cast<short>(0xBFFF))));
}
#endif

#if defined(__AVX512FP16__)
// 32 codes as fp16 in the same way, for arithmetic in fp16 (kFp8Unit<F> too small too).
template <Fp8 F>
inline __m512h fp8x32_to_half(const uint8_t* src) {
  const __m256i codes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src));
  if constexpr (F == Fp8::kE5M2) return _mm512_castsi512_ph(_mm512_slli_epi16(_mm512_cvtepu8_epi16(codes), 8));
  const __m512i shifted = _mm512_slli_epi16(_mm512_cvtepi8_epi16(codes), 7);
  return _mm512_castsi512_ph(_mm512_and_si512(shifted, _mm512_set1_epi16(static_cast<short>(0xBFFF))));
}
#endif

#if defined(__AVX512BF16__) && defined(__AVX512VBMI__)
// 64 codes as bf16 (their value / kFp8Unit<F>, as the others), by table: the low and the high
// byte of each magnitude's bf16 looked up 128 at a time (VPERMI2B), the sign put back; exact, e4m3's
// subnormals too (5 operations a 64, where the way through fp16 and fp32 takes 14). The words
// come out by 128-bit lanes: `first` holds codes 16L + j (j < 8) at word 8L + j, `second` codes
// 16L + 8 + j, L the lane.
template <Fp8 F>
struct Bf16Table {
  __m512i low[2], high[2];
  Bf16Table() {
    alignas(64) uint8_t lo[128], hi[128];
    for (int m = 0; m < 128; ++m) {
      const float v = F == Fp8::kE4M3 ? static_cast<float>(c10::Float8_e4m3fn(static_cast<uint8_t>(m), c10::Float8_e4m3fn::from_bits()))
                                      : static_cast<float>(c10::Float8_e5m2(static_cast<uint8_t>(m), c10::Float8_e5m2::from_bits()));
      const uint16_t bits = at::BFloat16(v / kFp8Unit<F>).x;
      lo[m] = static_cast<uint8_t>(bits & 0xFF);
      hi[m] = static_cast<uint8_t>(bits >> 8);
    }
    for (int h = 0; h < 2; ++h) {
      low[h] = _mm512_load_si512(lo + 64 * h);
      high[h] = _mm512_load_si512(hi + 64 * h);
    }
  }
  void convert(const uint8_t* src, __m512i& first, __m512i& second) const {
    convert_codes(_mm512_loadu_si512(src), first, second);
  }
  void convert_codes(const __m512i codes, __m512i& first, __m512i& second) const {
    const __m512i lo = _mm512_permutex2var_epi8(low[0], codes, low[1]);
    const __m512i hi = _mm512_ternarylogic_epi32(_mm512_permutex2var_epi8(high[0], codes, high[1]), codes,
                                                 _mm512_set1_epi8(static_cast<char>(0x80)), 0xF8);  // | sign
    first = _mm512_unpacklo_epi8(lo, hi);
    second = _mm512_unpackhi_epi8(lo, hi);
  }
};
#endif

#if defined(__AVX512F__)
// 16 fp32 values as fp8 codes, rounded and saturated as torch's conversions do (c10's
// fp8e4m3fn_from_fp32_value, fp8e5m2_from_fp32_value, lane by lane): e4m3 saturates to 448,
// e5m2 overflows to inf, NaN stays NaN.
template <Fp8 F>
inline __m128i float_to_fp8x16(__m512 x) {
  constexpr bool kE4 = F == Fp8::kE4M3;
  constexpr int kShift = kE4 ? 20 : 21;  // fp32 mantissa bits dropped
  constexpr uint32_t kRebias = kE4 ? (static_cast<uint32_t>(7 - 127) << 23) + 0x7FFFF
                                   : (static_cast<uint32_t>(15 - 127) << 23) + 0xFFFFF;
  constexpr uint32_t kDenormMask = kE4 ? 141u << 23 : 134u << 23;
  constexpr uint32_t kSmallestNormal = kE4 ? 121u << 23 : 113u << 23;
  constexpr uint32_t kFirstTooBig = kE4 ? 1087u << 20 : 143u << 23;
  auto all = [](uint32_t v) { return _mm512_set1_epi32(static_cast<int>(v)); };
  const __m512i with_sign = _mm512_castps_si512(x);
  const __m512i sign = _mm512_and_si512(with_sign, all(0x80000000u));
  const __m512i bits = _mm512_xor_si512(with_sign, sign);
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(bits, kShift), all(1));
  __m512i code = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(bits, all(kRebias)), odd), kShift);
  code = _mm512_and_si512(code, all(0xFF));
  if constexpr (kE4) {  // a rounding carry into e4m3's NaN pattern saturates instead
    code = _mm512_mask_mov_epi32(code, _mm512_cmpeq_epi32_mask(code, all(0x7F)), all(0x7E));
  }
  const __m512 shifted = _mm512_add_ps(_mm512_castsi512_ps(bits), _mm512_castsi512_ps(all(kDenormMask)));
  const __m512i denormal = _mm512_sub_epi32(_mm512_castps_si512(shifted), all(kDenormMask));
  code = _mm512_mask_mov_epi32(code, _mm512_cmplt_epu32_mask(bits, all(kSmallestNormal)), denormal);
  code = _mm512_mask_mov_epi32(code, _mm512_cmpge_epu32_mask(bits, all(kFirstTooBig)), all(kE4 ? 0x7E : 0x7C));
  code = _mm512_mask_mov_epi32(code, _mm512_cmpgt_epu32_mask(bits, all(0x7F800000u)), all(0x7F));
  code = _mm512_or_si512(_mm512_and_si512(code, all(0xFF)), _mm512_srli_epi32(sign, 24));
  return _mm512_cvtepi32_epi8(code);
}
#endif

template <Fp8 F>
inline uint8_t fp8_code(float y) {
  if constexpr (F == Fp8::kE4M3) return c10::Float8_e4m3fn(y).x;
  return c10::Float8_e5m2(y).x;
}

// x / y, a true division as torch's: under -ffast-math the compiler may multiply by the
// reciprocal instead, which rounds differently now and then (and so picks other fp8 codes).
inline float divide(float x, float y) {
#if defined(__AVX__)
  asm("vdivss %2, %1, %0" : "=v"(x) : "v"(x), "v"(y));
  return x;
#else
  return x / y;
#endif
}

#if defined(__AVX512BF16__)
inline __m512 divide(__m512 x, __m512 y) {
  asm("vdivps %2, %1, %0" : "=v"(x) : "v"(x), "v"(y));
  return x;
}
#endif

// One row of `n` values / scale as fp8 codes, as the torch path computes them: the quotient
// rounded to the model dtype first, then converted as torch converts. Every kernel that writes
// the cache takes it from here.
template <typename T, Fp8 F>
inline void quantize_row(const T* src, uint8_t* dst, int64_t n, float scale) {
  int64_t d = 0;
#if defined(__AVX512BF16__)
  for (const __m512 s = _mm512_set1_ps(scale); d + 16 <= n; d += 16) {
    __m512 y;
    if constexpr (std::is_same_v<T, at::BFloat16>) {
      y = dyno_vec::round(divide(dyno_vec::load(src + d), s));  // rounded as bf16 arithmetic rounds
    } else {
      y = divide(_mm512_loadu_ps(src + d), s);
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + d), float_to_fp8x16<F>(y));
  }
#endif
  for (; d < n; ++d) {
    dst[d] = fp8_code<F>(static_cast<float>(static_cast<T>(divide(static_cast<float>(src[d]), scale))));
  }
}

}  // namespace dyno_fp8
