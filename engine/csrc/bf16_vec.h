// AVX-512 helpers for bf16 kernels: 16 lanes of fp32 at a time, loads and stores of bf16.
#pragma once

#if defined(__AVX512BF16__)
#include <ATen/ATen.h>
#include <immintrin.h>

#include <cstdint>

namespace dyno_vec {

using bf16 = at::BFloat16;

// 16 lanes at a time; conversions to bf16 round to nearest even, as at::BFloat16's do.
constexpr int64_t kLanes = 16;

inline __m512 load(const bf16* p) {
  const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
}

inline __m256i to_bf16(__m512 v) { return reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(v)); }

inline void store(bf16* p, __m512 v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), to_bf16(v)); }

inline __m512 round(__m512 v) {  // what r() does to each lane, kept in fp32
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(to_bf16(v)), 16));
}

// e^x to about an fp32 ulp: 2^n * e^r with |r| <= ln2 / 2 (Cephes' expf polynomial); scalef
// takes overflow to inf and underflow to 0, which SiLU needs at the extremes.
inline __m512 exp(__m512 x) {
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  for (const float c : {1.3981999507e-3f, 8.3334519073e-3f, 4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f}) {
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
  }
  p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.f)));
  return _mm512_scalef_ps(p, n);
}

// silu(g) = g / (1 + e^-g), in fp32.
inline __m512 silu(__m512 g) {
  return _mm512_div_ps(g, _mm512_add_ps(_mm512_set1_ps(1.f), exp(_mm512_sub_ps(_mm512_setzero_ps(), g))));
}

// SiLU-and-mul of bf16 gate and up values: bf16(silu(gate)) * up, rounded where transformers'
// torch code rounds (the caller rounds the product as it stores it). Every kernel that gives
// SiLU-and-mul takes it from here, so fused and separate paths keep the same bits.
inline __m512 silu_mul(__m512 gate, __m512 up) { return _mm512_mul_ps(round(silu(gate)), up); }

}  // namespace dyno_vec
#endif
