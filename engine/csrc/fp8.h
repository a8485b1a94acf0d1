// fp8 cache codes (e4m3fn, e5m2) read as fp32, for dyno's CPU attention kernels.
#pragma once

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <cstdint>

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
template <Fp8 F>
inline __m512 fp8x16_to_float(const uint8_t* src) {
  const __m256i b = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src)));
  if constexpr (F == Fp8::kE5M2) return _mm512_cvtph_ps(_mm256_slli_epi16(b, 8));
  const __m256i sign = _mm256_slli_epi16(_mm256_and_si256(b, _mm256_set1_epi16(0x80)), 8);
  const __m256i rest = _mm256_slli_epi16(_mm256_and_si256(b, _mm256_set1_epi16(0x7F)), 7);
  return _mm512_cvtph_ps(_mm256_or_si256(sign, rest));
}
#endif

}  // namespace dyno_fp8
