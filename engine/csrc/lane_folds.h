// Many vectors' lanes folded at once into one vector of results, in order: a fold of two
// vectors takes two permutes and an add (or max), where reducing each vector on its own takes
// four shuffles and four adds.
#pragma once

#if defined(__AVX512F__)
#include <immintrin.h>

#include <cstdint>

namespace dyno_vec {

// The lanes of a 16-lane vector that `left` remaining elements fill (all 16 from 16 on).
inline __mmask16 lanes_left(int64_t left) {
  return left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1);
}

// sum_pairs: 16 short sums from 8 vectors each holding 8 partial sums of two things (lanes 0-7
// the first, 8-15 the second): 7 folds. Lane o of a fold: the sum of lanes first[o] and second[o] of (a, b), b's lanes numbered 16 on.
// At level l the inputs hold 16 / w things of w = 8 >> l lanes each; the output 32 / w of w / 2.
struct PairFolds {
  alignas(64) int32_t first[3][16], second[3][16];
  PairFolds() {
    for (int level = 0; level < 3; ++level) {
      const int width = 8 >> level, per_input = 16 / width, half = width / 2;
      for (int o = 0; o < 16; ++o) {
        const int thing = o / half, lane = o % half;
        const int base = (thing >= per_input ? 16 : 0) + (thing % per_input) * width + lane;
        first[level][o] = base;
        second[level][o] = base + half;
      }
    }
  }
};

inline const PairFolds& pair_folds() {
  static const PairFolds folds;
  return folds;
}

// Lane o: lane first[o] of (a, b) plus lane second[o], for float and int32 lanes.
inline __m512 fold(__m512 a, __m512i first, __m512i second, __m512 b) {
  return _mm512_add_ps(_mm512_permutex2var_ps(a, first, b), _mm512_permutex2var_ps(a, second, b));
}
inline __m512i fold(__m512i a, __m512i first, __m512i second, __m512i b) {
  return _mm512_add_epi32(_mm512_permutex2var_epi32(a, first, b), _mm512_permutex2var_epi32(a, second, b));
}

// v[j]: partial sums of things 2j (lanes 0-7) and 2j + 1 (lanes 8-15); v is overwritten.
template <typename Vec>
inline Vec sum_pairs(Vec v[8]) {
  const PairFolds& f = pair_folds();
  for (int level = 0, count = 8; level < 3; ++level, count /= 2) {
    const __m512i first = _mm512_load_si512(f.first[level]), second = _mm512_load_si512(f.second[level]);
    for (int i = 0; i < count / 2; ++i) v[i] = fold(v[2 * i], first, second, v[2 * i + 1]);
  }
  return v[0];
}

// Lane i: the largest of v[i]'s lanes, as unsigned integers (16 vectors, 15 folds; v is
// overwritten).
inline __m512i max16_epu32(__m512i v[16]) {
  const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  for (int width = 16; width > 1; width /= 2)
    for (int i = 0; i < width / 2; ++i)
      v[i] = _mm512_max_epu32(_mm512_permutex2var_epi32(v[2 * i], even, v[2 * i + 1]),
                              _mm512_permutex2var_epi32(v[2 * i], odd, v[2 * i + 1]));
  return v[0];
}

}  // namespace dyno_vec
#endif
