// Paged decode attention for the CPU: one query token per sequence, keys and values read in
// place from the block pool (no gathered copy), fp32 accumulation, grouped-query heads.
//
// Each sequence is one task: it scores its context for every head, then takes the softmax and
// the weighted sum of values. Positions outside [ctx_len - window, ctx_len) are never read.
// bf16 on AVX-512 takes faster paths for both halves (see score_tile_bf16, dot_bf16 for other
// head sizes, and weigh_values_64). An fp8 cache (e4m3 or e5m2, one scale each for keys and
// values) is read as is, each row converted to fp32 on the way (keys met by bf16 queries: to
// fp16, see score_tile_half): half the bytes of bf16 a position. With head_dim 64 all of them
// score 16 positions at a time (score_tile, score_tile_half, score_tile_bf16); with bf16
// queries an fp8 cache's values are weighed in fp16 too (weigh_values_half). At 32 sequences
// of 160 positions, 30 layers: bf16 7.4-8.2 ms (7.9-9.7 with one reduction per score); fp8
// 3.9-4.1 ms, from 5.4-5.9 in the same sitting with the values in fp32 (4.7-4.8 in a quieter
// one, 5.9-7.3 before fp8.h's shorter e4m3 conversion). The bf16 cache's 118 MB there is about
// all the memory bandwidth gives. Without AVX512-FP16 but with AVX-512 BF16 and VBMI (AMD Zen
// 4/5), bf16 queries meet an fp8 cache through a table: the codes become bf16 (fp8.h
// Bf16Table) and both halves take VDPBF16PS (score_tile_fp8_bf16, weigh_values_fp8_bf16); with
// the value rows fetched along with the keys, 32 sequences of 180 positions, 30 layers, went
// 5.2-5.3 -> 3.5 ms on Zen 5.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Half.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "bf16_vec.h"
#include "fp8.h"
#include "lane_folds.h"
#include "rotary.h"
#include "row_quant.h"  // by_rows: a kv head's query heads (1 to 4) as a template argument

namespace {

using namespace dyno_fp8;

inline float to_float(float x) { return x; }
inline float to_float(at::BFloat16 x) {
  uint32_t bits = static_cast<uint32_t>(x.x) << 16;
  float out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}

template <typename T>
inline void load_row(const T* __restrict__ src, float* __restrict__ dst, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) dst[i] = to_float(src[i]);
}


// The cache row of the position one block ahead, fetched while this one is worked on: in the
// engine each layer's K/V was last touched a whole step ago, and a block's 16 rows are too few
// for the hardware prefetcher to get going before the next block, elsewhere in the pool.
// slot_bytes: one slot's row in the pool; bytes: how much of it, from `pool` on, to fetch.
inline void prefetch_ahead(const void* pool, const int64_t* table, int64_t t, int64_t ctx_len,
                           int64_t block_size, int64_t slot_bytes, int64_t bytes) {
  const int64_t ahead = t + block_size;
  if (ahead >= ctx_len) return;
  const char* row = static_cast<const char*>(pool) +
                    (table[ahead / block_size] * block_size + ahead % block_size) * slot_bytes;
#if defined(__SSE__)
  for (int64_t off = 0; off < bytes; off += 64) _mm_prefetch(row + off, _MM_HINT_T0);
#endif
}

// bf16 queries and keys on AVX-512 BF16: dot products of the raw bf16 pairs (exact products,
// fp32 sums), so keys are never converted to fp32. With the values weighed in registers
// (weigh_values_64), a layer at 32 sequences of 192 positions takes 0.19 ms instead of 0.36.
#if defined(__AVX512BF16__)
constexpr bool kBf16Dot = true;
inline float dot_bf16(const at::BFloat16* q, const at::BFloat16* k, int64_t n) {
  __m512 acc = _mm512_setzero_ps();
  for (int64_t d = 0; d < n; d += 32)
    acc = _mm512_dpbf16_ps(acc, (__m512bh)_mm512_loadu_si512(q + d), (__m512bh)_mm512_loadu_si512(k + d));
  return _mm512_reduce_add_ps(acc);
}
#else
constexpr bool kBf16Dot = false;
inline float dot_bf16(const at::BFloat16*, const at::BFloat16*, int64_t) { return 0.f; }
#endif

// n fp8 codes as fp32, each kFp8Unit<F> times too small.
template <Fp8 F>
inline void load_fp8_row(const uint8_t* src, float* dst, int64_t n) {
  int64_t i = 0;
#if defined(__AVX512F__)
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, fp8x16_to_float<F>(src + i));
#endif
  for (; i < n; ++i) dst[i] = c10::detail::fp16_ieee_to_fp32_value(fp8_half_bits<F>(src[i]));
}

#if defined(__AVX512F__)
// 64 values of one kv head's cache row as fp32, in four registers.
struct Bf16Rows {
  using T = at::BFloat16;
  static void load64(const T* v, __m512 x[4]) {
    for (int c = 0; c < 4; ++c)
      x[c] = _mm512_castsi512_ps(_mm512_slli_epi32(
          _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + 16 * c))), 16));
  }
};

template <Fp8 F>
struct Fp8Rows {  // kFp8Unit<F> times too small, as load_fp8_row's
  using T = uint8_t;
  static void load64(const T* v, __m512 x[4]) {
    for (int c = 0; c < 4; ++c) x[c] = fp8x16_to_float<F>(v + 16 * c);
  }
};

// The values weighed for the G query heads of one kv head, head_dim 64: the G x 4 accumulators
// stay in registers across the whole context (the generic loop reloads and stores them at every
// position), and each value row is converted once for all G heads.
template <int G, typename Rows>
void weigh_values_64(const typename Rows::T* v_pool, const int64_t* table, int64_t first,
                     int64_t ctx_len, int64_t block_size, int64_t kv_stride, const float* scores,
                     int64_t n, float* acc) {
  constexpr int64_t kElem = sizeof(typename Rows::T);
  __m512 a[G][4];
  for (int g = 0; g < G; ++g)
    for (int c = 0; c < 4; ++c) a[g][c] = _mm512_setzero_ps();
  for (int64_t t = first; t < ctx_len; ++t) {
    const int64_t slot = table[t / block_size] * block_size + t % block_size;
    prefetch_ahead(v_pool, table, t, ctx_len, block_size, kv_stride * kElem, 64 * kElem);  // this kv head
    __m512 x[4];
    Rows::load64(v_pool + slot * kv_stride, x);
    for (int g = 0; g < G; ++g) {
      const __m512 p = _mm512_set1_ps(scores[g * n + (t - first)]);
      for (int c = 0; c < 4; ++c) a[g][c] = _mm512_fmadd_ps(p, x[c], a[g][c]);
    }
  }
  for (int g = 0; g < G; ++g)
    for (int c = 0; c < 4; ++c) _mm512_storeu_ps(acc + g * 64 + 16 * c, a[g][c]);
}

// True when the register path took the values of every kv head.
template <typename Rows>
bool weigh_values_fast(const typename Rows::T* v_pool, const int64_t* table, int64_t first,
                       int64_t ctx_len, int64_t block_size, int64_t num_kv_heads, int64_t group,
                       int64_t head_dim, const float* scores, int64_t n, float* acc) {
  if (head_dim != 64 || group < 1 || group > 4) return false;
  const int64_t kv_stride = num_kv_heads * head_dim;
  for (int64_t kv = 0; kv < num_kv_heads; ++kv) {
    const auto* v = v_pool + kv * head_dim;
    const float* s = scores + kv * group * n;
    float* a = acc + kv * group * head_dim;
    dyno_rows::by_rows<4>(group, [&](auto heads) {
      weigh_values_64<decltype(heads)::value, Rows>(v, table, first, ctx_len, block_size, kv_stride, s, n, a);
    });
  }
  return true;
}
#else
struct Bf16Rows {
  using T = at::BFloat16;
};
template <Fp8 F>
struct Fp8Rows {
  using T = uint8_t;
};
template <typename Rows>
bool weigh_values_fast(const typename Rows::T*, const int64_t*, int64_t, int64_t, int64_t, int64_t,
                       int64_t, int64_t, const float*, int64_t, float*) {
  return false;
}
#endif

#if defined(__AVX512BF16__)
// Keys of head_dim 64, scored 16 positions at a time: one vector of products per (head,
// position), the 16 summed across lanes together (15 folds of two permutes and an add) instead
// of one full reduction per score.
constexpr int kTile = 16;
constexpr int64_t kMaxTableHeads = 64;  // query heads the bf16 table path holds

using dyno_vec::lanes_left;

// Each vector's lane sum, in order, as the lanes of one vector.
inline __m512 sum16(__m512 v[kTile]) {
  const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  for (int width = kTile; width > 1; width /= 2) {
    for (int i = 0; i < width / 2; ++i) {
      v[i] = _mm512_add_ps(_mm512_permutex2var_ps(v[2 * i], even, v[2 * i + 1]),
                           _mm512_permutex2var_ps(v[2 * i], odd, v[2 * i + 1]));
    }
  }
  return v[0];
}

// Key rows of positions t .. t + 15, the last real one repeated past ctx_len; returns how many
// are real. Each real one's row a block ahead is prefetched, and with v_pool its value row: the
// values' pass after the softmax then finds them in cache rather than in memory (an fp8 cache's
// attention, 32 sequences of 180 positions, 30 layers: 5.2-5.3 -> 4.0-4.3 ms on Zen 5; into L2
// only, 4.3-4.6).
inline int tile_rows(const uint8_t* k_pool, const int64_t* table, int64_t t, int64_t ctx_len,
                     int64_t block_size, int64_t kv_stride, const uint8_t* rows[kTile],
                     const uint8_t* v_pool = nullptr) {
  const int count = static_cast<int>(std::min<int64_t>(kTile, ctx_len - t));
  int64_t block = t / block_size, off = t % block_size;  // one division a tile, not two a row
  for (int i = 0; i < count; ++i) {
    rows[i] = k_pool + (table[block] * block_size + off) * kv_stride;
    if (v_pool != nullptr) {
      const char* values = reinterpret_cast<const char*>(v_pool + (rows[i] - k_pool));
      for (int64_t b = 0; b < kv_stride; b += 64) _mm_prefetch(values + b, _MM_HINT_T0);
    }
    if (t + i + block_size < ctx_len) {
      const char* ahead = reinterpret_cast<const char*>(k_pool + (table[block + 1] * block_size + off) * kv_stride);
      for (int64_t b = 0; b < kv_stride; b += 64) _mm_prefetch(ahead + b, _MM_HINT_T0);
    }
    if (++off == block_size) off = 0, ++block;
  }
  for (int i = count; i < kTile; ++i) rows[i] = rows[count - 1];
  return count;
}

// A tile's 16 score sums (count of them real) times scale, into dst.
inline void store_scores(__m512 sums, int count, float scale, float* dst) {
  const __mmask16 keep = static_cast<__mmask16>((1u << count) - 1);
  _mm512_mask_storeu_ps(dst, keep, _mm512_mul_ps(sums, _mm512_set1_ps(scale)));
}

// fp8: each kv head's 16 key rows converted once into `keys` (16 x 64 fp32), for all its heads.
template <Fp8 F>
void score_tile(const float* qf, const uint8_t* const rows[kTile], int count, int64_t num_kv_heads,
                int64_t group, float scale, int64_t n, float* scores, float* keys) {
  for (int64_t kv = 0; kv < num_kv_heads; ++kv) {
    for (int i = 0; i < kTile; ++i)
      for (int c = 0; c < 4; ++c)
        _mm512_storeu_ps(keys + i * 64 + 16 * c, fp8x16_to_float<F>(rows[i] + kv * 64 + 16 * c));
    for (int64_t h = kv * group; h < (kv + 1) * group; ++h) {
      const float* qh = qf + h * 64;
      __m512 acc[kTile];
      for (int i = 0; i < kTile; ++i) {
        const float* k = keys + i * 64;
        __m512 a = _mm512_mul_ps(_mm512_loadu_ps(qh), _mm512_loadu_ps(k));
        for (int c = 1; c < 4; ++c)
          a = _mm512_fmadd_ps(_mm512_loadu_ps(qh + 16 * c), _mm512_loadu_ps(k + 16 * c), a);
        acc[i] = a;
      }
      store_scores(sum16(acc), count, scale, scores + h * n);
    }
  }
}

#if defined(__AVX512VBMI__)
// fp8 with bf16 queries on AVX-512 BF16 (the fp16 path below goes first where there is one): the
// codes turned into bf16 by table (fp8.h Bf16Table), the products two at a time by VDPBF16PS
// (exact products, fp32 sums) instead of one by an fp32 multiply-add on codes turned into fp32.
//
// Keys go two positions to a vector: half of each one's dims in each 256-bit half, so that a
// vector of products holds 8 partial sums of each position, and 16 positions' scores take 7
// folds of their sums instead of sum16's 15 (30 layers of 32 sequences of 180 positions, one
// layer's cache in L3, Zen 5, alternating runs: 2.31-2.45 -> 2.04-2.18 ms). The table gives 64
// codes' words by 128-bit lanes (the codes at 16L .. 16L + 7 in lane L of the first vector,
// 16L + 8 .. 16L + 15 of the second); a head's query words are laid out to match, once per half
// of its dims.
struct PairOrder {  // which of a head's 64 query words goes to each word of its four vectors
  alignas(64) int16_t index[4][32];  // dims 0-31 first, second; dims 32-63 first, second
  PairOrder() {
    for (int v = 0; v < 4; ++v)
      for (int w = 0; w < 32; ++w)  // lanes 2 and 3 (the second position) repeat lanes 0 and 1
        index[v][w] = static_cast<int16_t>(32 * (v / 2) + 16 * ((w / 8) % 2) + 8 * (v % 2) + w % 8);
  }
};

inline void query_in_pair_order(const at::BFloat16* q, __m512i words[4]) {
  static const PairOrder order;
  const __m512i lo = _mm512_loadu_si512(q), hi = _mm512_loadu_si512(q + 32);
  for (int v = 0; v < 4; ++v) words[v] = _mm512_permutex2var_epi16(lo, _mm512_load_si512(order.index[v]), hi);
}

// Scores of 16 positions for every head, head_dim 64: each kv head's key rows converted once.
template <Fp8 F>
void score_tile_fp8_bf16(const Bf16Table<F>& table, const __m512i* q, const uint8_t* const rows[kTile], int count,
                         int64_t num_kv_heads, int64_t group, float scale, int64_t n, float* scores) {
  for (int64_t kv = 0; kv < num_kv_heads; ++kv) {
    __m512i keys[kTile / 2][4];  // pair j: dims 0-31 first, second; dims 32-63 first, second
    for (int j = 0; j < kTile / 2; ++j) {
      const uint8_t* a = rows[2 * j] + kv * 64;
      const uint8_t* b = rows[2 * j + 1] + kv * 64;
      for (int half = 0; half < 2; ++half) {
        const __m512i codes = _mm512_inserti64x4(
            _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + 32 * half))),
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 32 * half)), 1);
        table.convert_codes(codes, keys[j][2 * half], keys[j][2 * half + 1]);
      }
    }
    for (int64_t h = kv * group; h < (kv + 1) * group; ++h) {
      const __m512i* qh = q + 4 * h;
      __m512 acc[kTile / 2];
      for (int j = 0; j < kTile / 2; ++j) {
        __m512 a = _mm512_dpbf16_ps(_mm512_setzero_ps(), (__m512bh)qh[0], (__m512bh)keys[j][0]);
        for (int v = 1; v < 4; ++v) a = _mm512_dpbf16_ps(a, (__m512bh)qh[v], (__m512bh)keys[j][v]);
        acc[j] = a;
      }
      store_scores(dyno_vec::sum_pairs(acc), count, scale, scores + h * n);
    }
  }
}

// The values' half, head_dim 64, G query heads of one kv head: two positions' bf16 words
// interleaved into pairs, and one VDPBF16PS weighs a pair for 16 dims (the softmax weights
// rounded to bf16, 8 bits: inside an fp8 value's own 4). `rows`: each position's row (n of
// them), `weights`: each head's softmax row in bf16, `acc`: each head's 64 sums, kFp8Unit<F>
// too small.
template <int G, Fp8 F>
void weigh_values_fp8_bf16(const Bf16Table<F>& table, const uint8_t* const* rows, int64_t kv_offset,
                           const uint16_t* weights, int64_t n, float* acc) {
  __m512 a[G][4];
  for (int g = 0; g < G; ++g)
    for (int c = 0; c < 4; ++c) a[g][c] = _mm512_setzero_ps();
  for (int64_t t = 0; t < n; t += 2) {
    const bool pair = t + 1 < n;
    __m512i x0, x1, y0 = _mm512_setzero_si512(), y1 = _mm512_setzero_si512();
    table.convert(rows[t] + kv_offset, x0, x1);
    if (pair) table.convert(rows[t + 1] + kv_offset, y0, y1);
    // dword 4L + i of u[c] pairs dim 16L + 4c + i of both positions
    const __m512bh u[4] = {(__m512bh)_mm512_unpacklo_epi16(x0, y0), (__m512bh)_mm512_unpackhi_epi16(x0, y0),
                           (__m512bh)_mm512_unpacklo_epi16(x1, y1), (__m512bh)_mm512_unpackhi_epi16(x1, y1)};
    for (int g = 0; g < G; ++g) {
      // Both weights of the pair in one broadcast load, where two 16-bit loads, a shift, an or
      // and a move had built it (32 sequences of 180 positions, 30 layers, Zen 5: 3.96-4.22 ->
      // 3.18-3.21 ms). Past a head's last position the word holds the next head's first weight
      // (or the zero after all heads), and it weighs y's zeros.
      int32_t both;
      std::memcpy(&both, weights + g * n + t, sizeof(both));
      const __m512bh p = (__m512bh)_mm512_set1_epi32(both);
      for (int c = 0; c < 4; ++c) a[g][c] = _mm512_dpbf16_ps(a[g][c], p, u[c]);
    }
  }
  for (int g = 0; g < G; ++g) {  // back to dim order: lane L of each u[c] holds dims 16L + 4c ..
    const __m512 t0 = _mm512_shuffle_f32x4(a[g][0], a[g][1], _MM_SHUFFLE(1, 0, 1, 0));
    const __m512 t1 = _mm512_shuffle_f32x4(a[g][2], a[g][3], _MM_SHUFFLE(1, 0, 1, 0));
    const __m512 t2 = _mm512_shuffle_f32x4(a[g][0], a[g][1], _MM_SHUFFLE(3, 2, 3, 2));
    const __m512 t3 = _mm512_shuffle_f32x4(a[g][2], a[g][3], _MM_SHUFFLE(3, 2, 3, 2));
    _mm512_storeu_ps(acc + g * 64, _mm512_shuffle_f32x4(t0, t1, _MM_SHUFFLE(2, 0, 2, 0)));
    _mm512_storeu_ps(acc + g * 64 + 16, _mm512_shuffle_f32x4(t0, t1, _MM_SHUFFLE(3, 1, 3, 1)));
    _mm512_storeu_ps(acc + g * 64 + 32, _mm512_shuffle_f32x4(t2, t3, _MM_SHUFFLE(2, 0, 2, 0)));
    _mm512_storeu_ps(acc + g * 64 + 48, _mm512_shuffle_f32x4(t2, t3, _MM_SHUFFLE(3, 1, 3, 1)));
  }
}

// True when the bf16 path took the values of every kv head (acc then holds the sums
// kFp8Unit<F> too small). `rows`, `weights`: scratch.
template <Fp8 F>
bool weigh_values_bf16(const Bf16Table<F>& codes, const uint8_t* v_pool, const int64_t* table, int64_t first,
                       int64_t ctx_len, int64_t block_size, int64_t num_kv_heads, int64_t group, const float* scores,
                       int64_t n, std::vector<const uint8_t*>& rows, std::vector<uint16_t>& weights, float* acc) {
  if (group < 1 || group > 4) return false;
  const int64_t kv_stride = num_kv_heads * 64, count = num_kv_heads * group * n;
  rows.resize(static_cast<size_t>(n));
  for (int64_t t = first; t < ctx_len;) {  // one division a block
    const int64_t block = t / block_size, in_block = t % block_size;
    const int64_t run = std::min(block_size - in_block, ctx_len - t);
    const uint8_t* base = v_pool + (table[block] * block_size + in_block) * kv_stride;
    for (int64_t i = 0; i < run; ++i) rows[t - first + i] = base + i * kv_stride;
    t += run;
  }
  weights.resize(static_cast<size_t>(count + 32));  // bf16 bits; whole vectors written
  for (int64_t i = 0; i < count; i += 32) {
    const __m512 lo = _mm512_maskz_loadu_ps(lanes_left(count - i), scores + i);
    const __m512 hi = _mm512_maskz_loadu_ps(lanes_left(std::max<int64_t>(0, count - i - 16)), scores + i + 16);
    _mm512_storeu_si512(weights.data() + i, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
  }
  weights[static_cast<size_t>(count)] = 0;  // the last head's odd position reads it as its pair
  for (int64_t kv = 0; kv < num_kv_heads; ++kv) {
    const uint16_t* w = weights.data() + kv * group * n;
    float* a = acc + kv * group * 64;
    dyno_rows::by_rows<4>(group, [&](auto heads) {
      weigh_values_fp8_bf16<decltype(heads)::value, F>(codes, rows.data(), kv * 64, w, n, a);
    });
  }
  return true;
}
#endif

#if defined(__AVX512FP16__)
// fp8 keys with bf16 queries, on AVX-512 FP16: a code and a bf16 query (below 2^14) are exact
// in fp16, so the products go 32 at a time in fp16 (each lane's pair of products, then the two
// halves, rounded to fp16's 11 bits: far inside an fp8 key's own 4), and the sums go on in
// fp32. Codes turn into fp16 in 3 integer ops per 32 instead of fp32's 5 per 16. At 32
// sequences of 160 positions, 30 layers (keys and values): 4.7-4.8 ms against 5.1-5.2.
constexpr float kHalfQueryLimit = 16384.f;
constexpr int64_t kMaxHalfHeads = 64;  // query heads the fp16 path holds

// Each head's query (head_dim 64) as two fp16 vectors; false when one is too large for fp16.
inline bool queries_as_half(const float* qf, int64_t num_heads, __m512h* q16) {
  __m512 top = _mm512_setzero_ps();
  for (int64_t i = 0; i < num_heads * 64; i += 16) top = _mm512_max_ps(top, _mm512_abs_ps(_mm512_loadu_ps(qf + i)));
  if (!(_mm512_reduce_max_ps(top) < kHalfQueryLimit)) return false;
  for (int64_t i = 0; i < num_heads * 2; ++i) {
    const __m256h lo = _mm512_cvtxps_ph(_mm512_loadu_ps(qf + 32 * i));
    const __m256h hi = _mm512_cvtxps_ph(_mm512_loadu_ps(qf + 32 * i + 16));
    q16[i] = _mm512_castsi512_ph(_mm512_inserti64x4(_mm512_castsi256_si512(_mm256_castph_si256(lo)),
                                                    _mm256_castph_si256(hi), 1));
  }
  return true;
}

template <Fp8 F>
void score_tile_half(const __m512h* q16, const uint8_t* const rows[kTile], int count, int64_t num_kv_heads,
                     int64_t group, float scale, int64_t n, float* scores, __m512h* keys) {
  for (int64_t kv = 0; kv < num_kv_heads; ++kv) {
    for (int i = 0; i < kTile; ++i)
      for (int c = 0; c < 2; ++c) keys[2 * i + c] = fp8x32_to_half<F>(rows[i] + kv * 64 + 32 * c);
    for (int64_t h = kv * group; h < (kv + 1) * group; ++h) {
      __m512 acc[kTile];
      for (int i = 0; i < kTile; ++i) {
        const __m512h p = _mm512_fmadd_ph(q16[2 * h + 1], keys[2 * i + 1], _mm512_mul_ph(q16[2 * h], keys[2 * i]));
        const __m512i bits = _mm512_castph_si512(p);
        const __m256h halves = _mm256_add_ph(_mm256_castsi256_ph(_mm512_castsi512_si256(bits)),
                                             _mm256_castsi256_ph(_mm512_extracti64x4_epi64(bits, 1)));
        acc[i] = _mm512_cvtxph_ps(halves);
      }
      store_scores(sum16(acc), count, scale, scores + h * n);
    }
  }
}

// The values' half on AVX-512 FP16, head_dim 64, for KV kv heads of G query heads each (the
// pointers at the first of them): each position's 64 codes a kv head become two fp16 vectors (3 integer ops per 32, against fp32's 5 per 16)
// and are weighed 32 lanes at a time in fp16 (weights rounded to fp16's 11 bits), the products
// of each 16 positions summed in fp16 and then added to fp32 totals: rounding far inside an
// fp8 value's own 4 bits. `weights`: each head's softmax row in fp16, times kFp8Unit<F> so that
// the sums come out in the values' units (at most the largest value: the weights sum to 1).
template <int KV, int G, Fp8 F>
void weigh_values_half(const uint8_t* v_pool, const int64_t* table, int64_t first, int64_t ctx_len,
                       int64_t block_size, int64_t kv_stride, const uint16_t* weights, int64_t n,
                       float* acc) {
  __m512 total[KV][G][4];
  for (int kv = 0; kv < KV; ++kv)
    for (int g = 0; g < G; ++g)
      for (int c = 0; c < 4; ++c) total[kv][g][c] = _mm512_setzero_ps();
  // Block by block of the table (a block's slots are consecutive), at most kTile positions a run.
  for (int64_t t0 = first; t0 < ctx_len;) {
    const int64_t block = t0 / block_size, in_block = t0 % block_size;
    const int64_t run = std::min<int64_t>({kTile, block_size - in_block, ctx_len - t0});
    const uint8_t* rows = v_pool + (table[block] * block_size + in_block) * kv_stride;
    const uint8_t* next = block + 1 < (ctx_len + block_size - 1) / block_size
                              ? v_pool + table[block + 1] * block_size * kv_stride : nullptr;
    __m512h part[KV][G][2];
    for (int kv = 0; kv < KV; ++kv)
      for (int g = 0; g < G; ++g) part[kv][g][0] = part[kv][g][1] = _mm512_setzero_ph();
    for (int64_t i = 0; i < run; ++i) {
      if (next != nullptr && in_block + i < block_size) {
        for (int64_t b = 0; b < KV * 64; b += 64)
          _mm_prefetch(reinterpret_cast<const char*>(next + (in_block + i) * kv_stride + b), _MM_HINT_T0);
      }
      const uint16_t* w = weights + (t0 - first) + i;
      for (int kv = 0; kv < KV; ++kv) {
        const __m512h x0 = fp8x32_to_half<F>(rows + i * kv_stride + kv * 64);
        const __m512h x1 = fp8x32_to_half<F>(rows + i * kv_stride + kv * 64 + 32);
        for (int g = 0; g < G; ++g) {
          const __m512h p = _mm512_castsi512_ph(_mm512_set1_epi16(static_cast<short>(w[(kv * G + g) * n])));
          part[kv][g][0] = _mm512_fmadd_ph(p, x0, part[kv][g][0]);
          part[kv][g][1] = _mm512_fmadd_ph(p, x1, part[kv][g][1]);
        }
      }
    }
    for (int kv = 0; kv < KV; ++kv) {
      for (int g = 0; g < G; ++g) {
        for (int c = 0; c < 2; ++c) {
          const __m512i bits = _mm512_castph_si512(part[kv][g][c]);
          __m512* t = total[kv][g];
          t[2 * c] = _mm512_add_ps(t[2 * c], _mm512_cvtxph_ps(_mm256_castsi256_ph(_mm512_castsi512_si256(bits))));
          t[2 * c + 1] = _mm512_add_ps(t[2 * c + 1],
                                       _mm512_cvtxph_ps(_mm256_castsi256_ph(_mm512_extracti64x4_epi64(bits, 1))));
        }
      }
    }
    t0 += run;
  }
  for (int kv = 0; kv < KV; ++kv)
    for (int g = 0; g < G; ++g)
      for (int c = 0; c < 4; ++c) _mm512_storeu_ps(acc + (kv * G + g) * 64 + 16 * c, total[kv][g][c]);
}

// True when the fp16 path took the values of every kv head (acc then holds the sums in the
// values' own units: the caller scales by v_scale alone).
template <Fp8 F>
bool weigh_values_fp16(const uint8_t* v_pool, const int64_t* table, int64_t first, int64_t ctx_len,
                       int64_t block_size, int64_t num_kv_heads, int64_t group, const float* scores,
                       int64_t n, std::vector<uint16_t>& weights, float* acc) {
  if (group < 1 || group > 4) return false;
  const int64_t num_heads = num_kv_heads * group, count = num_heads * n;
  weights.resize(static_cast<size_t>(count + 16));  // fp16 bits; whole vectors written
  const __m512 unit = _mm512_set1_ps(kFp8Unit<F>);
  for (int64_t i = 0; i < count; i += 16) {
    const __mmask16 m = lanes_left(count - i);
    const __m256i h = _mm512_cvtps_ph(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, scores + i), unit),
                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(weights.data() + i), h);
  }
  const int64_t kv_stride = num_kv_heads * 64;
  if (num_kv_heads == 3 && group == 3) {  // the default model: all heads in one pass
    weigh_values_half<3, 3, F>(v_pool, table, first, ctx_len, block_size, kv_stride, weights.data(), n, acc);
    return true;
  }
  for (int64_t kv = 0; kv < num_kv_heads; ++kv) {
    const uint8_t* v = v_pool + kv * 64;
    const uint16_t* w = weights.data() + kv * group * n;
    float* a = acc + kv * group * 64;
    dyno_rows::by_rows<4>(group, [&](auto heads) {
      weigh_values_half<1, decltype(heads)::value, F>(v, table, first, ctx_len, block_size, kv_stride, w, n, a);
    });
  }
  return true;
}
#endif

// bf16: each head's products with the 16 key rows as bf16 pairs (exact products, fp32 sums),
// read in place, the 16 sums folded together.
inline void score_tile_bf16(const at::BFloat16* q, const uint8_t* const rows[kTile], int count,
                            int64_t num_heads, int64_t group, float scale, int64_t n, float* scores) {
  for (int64_t h = 0; h < num_heads; ++h) {
    const __m512bh q0 = (__m512bh)_mm512_loadu_si512(q + h * 64);
    const __m512bh q1 = (__m512bh)_mm512_loadu_si512(q + h * 64 + 32);
    const int64_t k_off = (h / group) * 64 * 2;  // bytes into a row
    __m512 acc[kTile];
    for (int i = 0; i < kTile; ++i) {
      const uint8_t* k = rows[i] + k_off;
      const __m512 a = _mm512_dpbf16_ps(_mm512_setzero_ps(), q0, (__m512bh)_mm512_loadu_si512(k));
      acc[i] = _mm512_dpbf16_ps(a, q1, (__m512bh)_mm512_loadu_si512(k + 64));
    }
    store_scores(sum16(acc), count, scale, scores + h * n);
  }
}
#endif

// One position's scores for every head, from its keys converted to fp32 (`row`).
inline void score_row(const float* qf, const float* row, int64_t t, int64_t n, int64_t num_heads,
                      int64_t group, int64_t head_dim, float scale, float* scores) {
  for (int64_t h = 0; h < num_heads; ++h) {
    const float* __restrict__ qh = qf + h * head_dim;
    const float* __restrict__ r = row + (h / group) * head_dim;
    float dot = 0.f;
#pragma omp simd reduction(+ : dot)
    for (int64_t d = 0; d < head_dim; ++d) dot += qh[d] * r[d];
    scores[h * n + t] = dot * scale;
  }
}

// One position's values (converted to fp32, `row`) added to every head's sum, by its weight.
inline void add_weighted(const float* row, const float* scores, int64_t t, int64_t n,
                         int64_t num_heads, int64_t group, int64_t head_dim, float* acc) {
  for (int64_t h = 0; h < num_heads; ++h) {
    const float p = scores[h * n + t];
    float* __restrict__ a = acc + h * head_dim;
    const float* __restrict__ r = row + (h / group) * head_dim;
#pragma omp simd
    for (int64_t d = 0; d < head_dim; ++d) a[d] += p * r[d];
  }
}

// One head's scores in place of their softmax.
inline void softmax_row(float* s, int64_t n) {
#if defined(__AVX512BF16__)
  // 16 lanes at a time with AVX-512's exp (libm's vector exp is 8 lanes wide), the map and the
  // sum in one pass, the tail's lanes masked.
  using dyno_vec::kLanes;
  auto lanes = [n](int64_t i) { return lanes_left(n - i); };
  __m512 top = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t i = 0; i < n; i += kLanes) top = _mm512_mask_max_ps(top, lanes(i), top, _mm512_maskz_loadu_ps(lanes(i), s + i));
  const __m512 shift = _mm512_set1_ps(_mm512_reduce_max_ps(top));
  __m512 sum = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += kLanes) {
    const __m512 e = _mm512_maskz_mov_ps(lanes(i), dyno_vec::exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(lanes(i), s + i), shift)));
    _mm512_mask_storeu_ps(s + i, lanes(i), e);
    sum = _mm512_add_ps(sum, e);
  }
  const __m512 inv = _mm512_set1_ps(1.f / _mm512_reduce_add_ps(sum));
  for (int64_t i = 0; i < n; i += kLanes)
    _mm512_mask_storeu_ps(s + i, lanes(i), _mm512_mul_ps(_mm512_maskz_loadu_ps(lanes(i), s + i), inv));
#else
  const float m = *std::max_element(s, s + n);
  // Separate map and reduction loops: both vectorize (a fused one does not).
  for (int64_t i = 0; i < n; ++i) s[i] = std::exp(s[i] - m);
  float sum = 0.f;
  for (int64_t i = 0; i < n; ++i) sum += s[i];
  const float inv = 1.f / sum;
  for (int64_t i = 0; i < n; ++i) s[i] *= inv;
#endif
}

inline void softmax_rows(float* scores, int64_t num_heads, int64_t n) {
  for (int64_t h = 0; h < num_heads; ++h) softmax_row(scores + h * n, n);
}

// One position's scores for every head.
template <typename T>
inline void score(const T* q, const float* qf, const T* k, float* row, int64_t t, int64_t n,
                  int64_t num_heads, int64_t group, int64_t kv_stride, int64_t head_dim,
                  float scale, float* scores) {
  if constexpr (std::is_same_v<T, at::BFloat16>) {
    if (kBf16Dot && head_dim % 32 == 0) {
      for (int64_t h = 0; h < num_heads; ++h)
        scores[h * n + t] = dot_bf16(q + h * head_dim, k + (h / group) * head_dim, head_dim) * scale;
      return;
    }
  }
  load_row(k, row, kv_stride);
  score_row(qf, row, t, n, num_heads, group, head_dim, scale, scores);
}

// The values' half of one sequence, after the softmax: the weighted sum of each position's
// values for every head (its rows read as load(src, dst, count) gives them in fp32, or by Rows
// in registers where weigh_values_fast can; Rows void: never), times out_scale, into out.
template <typename Rows, typename T, typename C, typename Load>
void weigh_values(const C* v_pool, const int64_t* table, int64_t first, int64_t ctx_len,
                  int64_t block_size, int64_t num_heads, int64_t num_kv_heads, int64_t head_dim,
                  const float* scores, float out_scale, Load load, T* out, std::vector<float>& row,
                  std::vector<float>& acc) {
  const int64_t n = ctx_len - first, group = num_heads / num_kv_heads;
  const int64_t kv_stride = num_kv_heads * head_dim;
  const int64_t slot_bytes = kv_stride * static_cast<int64_t>(sizeof(C));
  bool in_registers = false;
  if constexpr (!std::is_void_v<Rows>)
    in_registers = weigh_values_fast<Rows>(v_pool, table, first, ctx_len, block_size, num_kv_heads,
                                           group, head_dim, scores, n, acc.data());
  if (!in_registers) {
    std::fill(acc.begin(), acc.end(), 0.f);
    for (int64_t t = first; t < ctx_len; ++t) {
      const int64_t slot = table[t / block_size] * block_size + t % block_size;
      prefetch_ahead(v_pool, table, t, ctx_len, block_size, slot_bytes, slot_bytes);
      load(v_pool + slot * kv_stride, row.data(), kv_stride);
      add_weighted(row.data(), scores, t - first, n, num_heads, group, head_dim, acc.data());
    }
  }
  for (int64_t i = 0; i < num_heads * head_dim; ++i) out[i] = static_cast<T>(acc[i] * out_scale);
}

// One sequence, all heads: each cached position's keys (then values) for every kv head are
// one contiguous row of the pool, read once, front to back.
template <typename T>
void decode_seq(const T* q, const T* k_pool, const T* v_pool, const int64_t* table, int64_t first,
                int64_t ctx_len, int64_t block_size, int64_t num_heads, int64_t num_kv_heads,
                int64_t head_dim, float scale, T* out, std::vector<float>& scores,
                std::vector<float>& qf, std::vector<float>& row, std::vector<float>& acc) {
  const int64_t n = ctx_len - first, group = num_heads / num_kv_heads;
  const int64_t kv_stride = num_kv_heads * head_dim;
  const int64_t slot_bytes = kv_stride * static_cast<int64_t>(sizeof(T));
  scores.resize(static_cast<size_t>(num_heads * n));
  load_row(q, qf.data(), num_heads * head_dim);
  bool scored = false;
#if defined(__AVX512BF16__)
  if constexpr (std::is_same_v<T, at::BFloat16>) {
    if (head_dim == 64) {
      const auto* k_bytes = reinterpret_cast<const uint8_t*>(k_pool);
      for (int64_t t = first; t < ctx_len; t += kTile) {
        const uint8_t* rows[kTile];
        const int count = tile_rows(k_bytes, table, t, ctx_len, block_size, slot_bytes, rows);
        score_tile_bf16(q, rows, count, num_heads, group, scale, n, scores.data() + (t - first));
      }
      scored = true;
    }
  }
#endif
  for (int64_t t = first; t < ctx_len && !scored; ++t) {
    const int64_t slot = table[t / block_size] * block_size + t % block_size;
    prefetch_ahead(k_pool, table, t, ctx_len, block_size, slot_bytes, slot_bytes);
    score(q, qf.data(), k_pool + slot * kv_stride, row.data(), t - first, n, num_heads, group,
          kv_stride, head_dim, scale, scores.data());
  }
  softmax_rows(scores.data(), num_heads, n);
  using Rows = std::conditional_t<std::is_same_v<T, at::BFloat16>, Bf16Rows, void>;  // fp32: no register path
  weigh_values<Rows>(v_pool, table, first, ctx_len, block_size, num_heads, num_kv_heads, head_dim,
                     scores.data(), 1.f, load_row<T>, out, row, acc);
}

// decode_seq for an fp8 cache: rows of codes converted to fp32 as they are read; the key scale
// goes into the score scale, the value scale into the output.
template <typename T, Fp8 F>
void decode_seq_fp8(const T* q, const uint8_t* k_pool, const uint8_t* v_pool, const int64_t* table,
                    int64_t first, int64_t ctx_len, int64_t block_size, int64_t num_heads,
                    int64_t num_kv_heads, int64_t head_dim, float scale, float k_scale,
                    float v_scale, T* out, std::vector<float>& scores, std::vector<float>& qf,
                    std::vector<float>& row, std::vector<float>& acc, std::vector<uint16_t>& half,
                    std::vector<const uint8_t*>& value_rows) {
  const int64_t n = ctx_len - first, group = num_heads / num_kv_heads;
  const int64_t kv_stride = num_kv_heads * head_dim;  // bytes too
  scores.resize(static_cast<size_t>(num_heads * n));
  load_row(q, qf.data(), num_heads * head_dim);
  const float qk_scale = scale * k_scale * kFp8Unit<F>;
  bool scored = false;
#if defined(__AVX512FP16__)
  if constexpr (std::is_same_v<T, at::BFloat16>) {
    __m512h q16[2 * kMaxHalfHeads], keys[2 * kTile];
    if (head_dim == 64 && num_heads <= kMaxHalfHeads && queries_as_half(qf.data(), num_heads, q16)) {
      for (int64_t t = first; t < ctx_len; t += kTile) {
        const uint8_t* rows[kTile];
        const int count = tile_rows(k_pool, table, t, ctx_len, block_size, kv_stride, rows);
        score_tile_half<F>(q16, rows, count, num_kv_heads, group, qk_scale, n, scores.data() + (t - first), keys);
      }
      scored = true;
    }
  }
#endif
#if defined(__AVX512BF16__) && defined(__AVX512VBMI__)
  static const Bf16Table<F> codes;
  if constexpr (std::is_same_v<T, at::BFloat16>) {
    __m512i q_words[4 * kMaxTableHeads];
    if (head_dim == 64 && !scored && num_heads <= kMaxTableHeads) {
      for (int64_t h = 0; h < num_heads; ++h) query_in_pair_order(q + h * 64, q_words + 4 * h);
      for (int64_t t = first; t < ctx_len; t += kTile) {
        const uint8_t* rows[kTile];
        const int count = tile_rows(k_pool, table, t, ctx_len, block_size, kv_stride, rows, v_pool);
        score_tile_fp8_bf16<F>(codes, q_words, rows, count, num_kv_heads, group, qk_scale, n, scores.data() + (t - first));
      }
      scored = true;
    }
  }
#endif
#if defined(__AVX512BF16__)
  if (head_dim == 64 && !scored) {
    alignas(64) float keys[kTile * 64];
    for (int64_t t = first; t < ctx_len; t += kTile) {
      const uint8_t* rows[kTile];
      const int count = tile_rows(k_pool, table, t, ctx_len, block_size, kv_stride, rows, v_pool);
      score_tile<F>(qf.data(), rows, count, num_kv_heads, group, qk_scale, n,
                    scores.data() + (t - first), keys);
    }
    scored = true;
  }
#endif
  for (int64_t t = first; t < ctx_len && !scored; ++t) {
    const int64_t slot = table[t / block_size] * block_size + t % block_size;
    prefetch_ahead(k_pool, table, t, ctx_len, block_size, kv_stride, kv_stride);
    load_fp8_row<F>(k_pool + slot * kv_stride, row.data(), kv_stride);
    score_row(qf.data(), row.data(), t - first, n, num_heads, group, head_dim, qk_scale, scores.data());
  }
  softmax_rows(scores.data(), num_heads, n);
#if defined(__AVX512FP16__)
  if (std::is_same_v<T, at::BFloat16> && head_dim == 64 &&
      weigh_values_fp16<F>(v_pool, table, first, ctx_len, block_size, num_kv_heads, group, scores.data(),
                           n, half, acc.data())) {
    for (int64_t i = 0; i < num_heads * head_dim; ++i) out[i] = static_cast<T>(acc[i] * v_scale);
    return;
  }
#endif
#if defined(__AVX512BF16__) && defined(__AVX512VBMI__)
  if (std::is_same_v<T, at::BFloat16> && head_dim == 64 &&
      weigh_values_bf16<F>(codes, v_pool, table, first, ctx_len, block_size, num_kv_heads, group, scores.data(), n,
                           value_rows, half, acc.data())) {
    for (int64_t i = 0; i < num_heads * head_dim; ++i) out[i] = static_cast<T>(acc[i] * (v_scale * kFp8Unit<F>));
    return;
  }
#endif
  weigh_values<Fp8Rows<F>>(v_pool, table, first, ctx_len, block_size, num_heads, num_kv_heads, head_dim,
                           scores.data(), v_scale * kFp8Unit<F>, load_fp8_row<F>, out, row, acc);
}

// Calls seq(s, first, ctx_len, scratch) for every sequence, spread over the threads.
struct Scratch {
  std::vector<float> scores, qf, row, acc;
  std::vector<uint16_t> half;  // fp16 (or bf16) weights
  std::vector<const uint8_t*> value_rows;  // each position's value row (fp8, bf16 path)
  std::vector<at::BFloat16> q, k;  // a fresh token's rotated query and key
};

template <typename Seq>
void for_each_seq(const at::Tensor& q, int64_t kv_stride, const at::Tensor& ctx_lens,
                  int64_t window, Seq seq) {
  const int64_t num_seqs = q.size(0), q_size = q.size(1) * q.size(2);
  const int64_t* lens = ctx_lens.data_ptr<int64_t>();
  at::parallel_for(0, num_seqs, 1, [&](int64_t begin, int64_t end) {
    Scratch scratch{{}, std::vector<float>(q_size), std::vector<float>(kv_stride),
                    std::vector<float>(q_size), {}, {}, {}, {}};
    for (int64_t s = begin; s < end; ++s) {
      const int64_t first = window > 0 ? std::max<int64_t>(0, lens[s] - window) : 0;
      seq(s, first, lens[s], scratch);
    }
  });
}

// A decode step's fresh token per sequence, straight from the fused QKV output: its query and
// key still to rotate, and its key and value still to store in the cache.
struct Fresh {
  const at::BFloat16* qkv;  // row i at qkv + i * stride: [q heads | k heads | v heads]
  int64_t stride;
  const at::BFloat16 *cos, *sin;  // [rows, head_dim]
  const int64_t* slots;
};

// What rotary and kv_write do for one sequence's fresh token, on the thread that then reads the
// cache for it: the query rotated into w.q, the key rotated and stored with the value.
template <typename C, Fp8 F>
const at::BFloat16* take_fresh(const Fresh& fresh, int64_t seq, int64_t num_heads, int64_t num_kv_heads,
                               int64_t head_dim, C* k_pool, C* v_pool, float k_scale, float v_scale, Scratch& w) {
  const int64_t kv_stride = num_kv_heads * head_dim;
  w.q.resize(static_cast<size_t>(num_heads * head_dim));
  w.k.resize(static_cast<size_t>(kv_stride));
  const at::BFloat16* row = fresh.qkv + seq * fresh.stride;
  const at::BFloat16 *c = fresh.cos + seq * head_dim, *s = fresh.sin + seq * head_dim;
  const at::BFloat16* k = row + num_heads * head_dim;
  for (int64_t h = 0; h < num_heads; ++h) {
    dyno_rotary::rotate_head(row + h * head_dim, c, s, w.q.data() + h * head_dim, head_dim);
  }
  for (int64_t h = 0; h < num_kv_heads; ++h) {
    dyno_rotary::rotate_head(k + h * head_dim, c, s, w.k.data() + h * head_dim, head_dim);
  }
  const at::BFloat16* v = k + kv_stride;
  const int64_t slot = fresh.slots[seq];
  if constexpr (std::is_same_v<C, uint8_t>) {
    quantize_row<at::BFloat16, F>(w.k.data(), k_pool + slot * kv_stride, kv_stride, k_scale);
    quantize_row<at::BFloat16, F>(v, v_pool + slot * kv_stride, kv_stride, v_scale);
  } else {
    std::memcpy(k_pool + slot * kv_stride, w.k.data(), kv_stride * sizeof(C));
    std::memcpy(v_pool + slot * kv_stride, v, kv_stride * sizeof(C));
  }
  return w.q.data();
}

// C: the cache's element type (uint8_t codes for fp8, format F). With `fresh`, q is the
// queries' view of the fused QKV output, each sequence's token not yet rotated nor stored.
template <typename T, typename C, Fp8 F = Fp8::kE4M3>
void run(const at::Tensor& q, const at::Tensor& kv, const at::Tensor& table,
         const at::Tensor& ctx_lens, int64_t block_size, int64_t window, double scale,
         double k_scale, double v_scale, at::Tensor& out, const Fresh* fresh = nullptr) {
  const int64_t num_heads = q.size(1), head_dim = q.size(2), num_kv_heads = kv.size(2);
  const int64_t kv_stride = num_kv_heads * head_dim, max_blocks = table.size(1);
  C* k_pool = static_cast<C*>(kv.data_ptr());
  C* v_pool = k_pool + kv.size(1) * kv_stride;
  const T* q_ptr = q.data_ptr<T>();
  T* out_ptr = out.data_ptr<T>();
  const int64_t* table_ptr = table.data_ptr<int64_t>();
  const float s = static_cast<float>(scale);
  for_each_seq(q, kv_stride, ctx_lens, window, [&](int64_t seq, int64_t first, int64_t len, Scratch& w) {
    const int64_t off = seq * num_heads * head_dim;
    const int64_t* row = table_ptr + seq * max_blocks;
    const T* q_seq = q_ptr + off;
    if constexpr (std::is_same_v<T, at::BFloat16>) {
      if (fresh != nullptr) {
        q_seq = take_fresh<C, F>(*fresh, seq, num_heads, num_kv_heads, head_dim, k_pool, v_pool,
                                 static_cast<float>(k_scale), static_cast<float>(v_scale), w);
      }
    }
    if constexpr (std::is_same_v<C, uint8_t>) {
      decode_seq_fp8<T, F>(q_seq, k_pool, v_pool, row, first, len, block_size, num_heads,
                           num_kv_heads, head_dim, s, static_cast<float>(k_scale),
                           static_cast<float>(v_scale), out_ptr + off, w.scores, w.qf, w.row, w.acc, w.half,
                           w.value_rows);
    } else {
      decode_seq<T>(q_seq, k_pool, v_pool, row, first, len, block_size, num_heads, num_kv_heads,
                    head_dim, s, out_ptr + off, w.scores, w.qf, w.row, w.acc);
    }
  });
}

template <typename T>
void run_any_cache(const at::Tensor& q, const at::Tensor& kv, const at::Tensor& table,
                   const at::Tensor& ctx_lens, int64_t block_size, int64_t window, double scale,
                   double k_scale, double v_scale, at::Tensor& out, const Fresh* fresh = nullptr) {
  if (kv.scalar_type() == at::kFloat8_e4m3fn) {
    run<T, uint8_t, Fp8::kE4M3>(q, kv, table, ctx_lens, block_size, window, scale, k_scale, v_scale, out, fresh);
  } else if (kv.scalar_type() == at::kFloat8_e5m2) {
    run<T, uint8_t, Fp8::kE5M2>(q, kv, table, ctx_lens, block_size, window, scale, k_scale, v_scale, out, fresh);
  } else {
    TORCH_CHECK(q.scalar_type() == kv.scalar_type(), "paged_decode: q and kv dtypes differ");
    run<T, T>(q, kv, table, ctx_lens, block_size, window, scale, k_scale, v_scale, out, fresh);
  }
}

}  // namespace

// q: [num_seqs, num_heads, head_dim]; kv: [2, num_slots, num_kv_heads, head_dim], contiguous,
// q's dtype or fp8 (stored as value / k_scale, value / v_scale); table: [num_seqs, max_blocks]
// int64; ctx_lens: [num_seqs] int64. window <= 0: no window.
at::Tensor paged_decode(const at::Tensor& q, const at::Tensor& kv, const at::Tensor& table,
                        const at::Tensor& ctx_lens, int64_t block_size, int64_t window,
                        double scale, double k_scale, double v_scale) {
  TORCH_CHECK(kv.is_contiguous() && table.is_contiguous() && ctx_lens.is_contiguous(),
              "paged_decode: kv, table and ctx_lens must be contiguous");
  TORCH_CHECK(q.size(1) % kv.size(2) == 0, "paged_decode: heads not a multiple of kv heads");
  at::Tensor qc = q.contiguous();
  at::Tensor out = at::empty_like(qc);
  if (q.scalar_type() == at::kFloat) {
    run_any_cache<float>(qc, kv, table, ctx_lens, block_size, window, scale, k_scale, v_scale, out);
  } else {
    TORCH_CHECK(q.scalar_type() == at::kBFloat16, "paged_decode: float32 or bfloat16 queries only");
    run_any_cache<at::BFloat16>(qc, kv, table, ctx_lens, block_size, window, scale, k_scale, v_scale, out);
  }
  return out;
}

// paged_decode for the decode stack, from the fused QKV output [rows, (num_heads + 2 *
// num_kv_heads) * head_dim] (bf16): each sequence's task rotates its query and key (cos, sin:
// [rows, head_dim]), stores its key and value in its slot, then attends. The same bits as
// rotary, kv_write (or kv_write_fp8) and paged_decode in turn, without their two parallel
// regions, their tensors, or a trip of each row to the other core and back. Returns [rows,
// num_heads * head_dim].
at::Tensor paged_decode_qkv(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin, at::Tensor& kv,
                            const at::Tensor& slots, const at::Tensor& table, const at::Tensor& ctx_lens,
                            int64_t block_size, int64_t num_heads, int64_t window, double scale,
                            double k_scale, double v_scale) {
  const int64_t rows = qkv.size(0), num_kv_heads = kv.size(2), head_dim = kv.size(3);
  TORCH_CHECK(qkv.scalar_type() == at::kBFloat16 && qkv.dim() == 2 && qkv.stride(1) == 1 &&
                  qkv.size(1) == (num_heads + 2 * num_kv_heads) * head_dim,
              "paged_decode_qkv: qkv must be bf16 rows of [q heads | k heads | v heads]");
  TORCH_CHECK(kv.is_contiguous() && table.is_contiguous() && ctx_lens.is_contiguous(),
              "paged_decode_qkv: kv, table and ctx_lens must be contiguous");
  for (const at::Tensor* t : {&cos, &sin})
    TORCH_CHECK(t->is_contiguous() && t->scalar_type() == at::kBFloat16 && t->numel() == rows * head_dim,
                "paged_decode_qkv: cos and sin must be contiguous bf16 [rows, head_dim]");
  TORCH_CHECK(slots.is_contiguous() && slots.scalar_type() == at::kLong && slots.size(0) == rows,
              "paged_decode_qkv: one int64 slot per row");
  TORCH_CHECK(num_heads % num_kv_heads == 0, "paged_decode_qkv: heads not a multiple of kv heads");
  const int64_t* sp = slots.data_ptr<int64_t>();
  for (int64_t i = 0; i < rows; ++i)
    TORCH_CHECK(sp[i] >= 0 && sp[i] < kv.size(1), "paged_decode_qkv: slot out of range");
  const at::Tensor q = qkv.narrow(1, 0, num_heads * head_dim).view({rows, num_heads, head_dim});
  at::Tensor out = at::empty({rows, num_heads, head_dim}, qkv.options());
  const Fresh fresh{qkv.data_ptr<at::BFloat16>(), qkv.stride(0), cos.data_ptr<at::BFloat16>(),
                    sin.data_ptr<at::BFloat16>(), sp};
  run_any_cache<at::BFloat16>(q, kv, table, ctx_lens, block_size, window, scale, k_scale, v_scale, out, &fresh);
  return out.view({rows, num_heads * head_dim});
}
