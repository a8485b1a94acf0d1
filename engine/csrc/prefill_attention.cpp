// Prompt attention on AMX (or, without it, AVX-512 BF16): bf16, head_dim 64, causal, keys and
// values read from the paged cache. A step's prompts (or prompt chunks) go in one call.
//
// torch's SDPA on this CPU spends ~80 us on a 128-token prompt per layer and head group, far
// from the tiles' rate. Here each (prompt, kv head) task lays its context's keys and values out
// as tile operands once, then for each block of 16 query tokens of each of its query heads:
// scores on the tiles, the masked softmax's weights exp(score - max) in fp32, rounded to bf16
// for the tiles (SDPA rounds the normalized probabilities; dividing the weighted values by the
// sum instead saves a pass), and the weighted values on the tiles.
//
// 16 prompts of 128 tokens, a layer: 0.98 -> 0.76 ms from the softmax working only on the
// vectors a row sees, in one pass, and the keys and values laid out by register transposes and
// interleaves instead of scattered 2- and 4-byte stores. What remains is about equal parts
// softmax and tile work.
#include <ATen/ATen.h>

#if defined(__AVX512BF16__)  // every CPU with AMX has it
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "amx_tiles.h"
#include "bf16_vec.h"
#include "fp8.h"

namespace {

using bf16 = at::BFloat16;

constexpr int64_t kDim = 64;             // head_dim: two tile rows of bf16 pairs
constexpr int64_t kBlock = dyno_amx::kRows;  // query tokens, and key positions, per tile
constexpr int64_t kPair = 32;            // positions per probabilities tile row

struct Span {
  int64_t q_start, q_len;      // rows of q / out
  int64_t ctx_start, ctx_len;  // entries of slots: the context's cache slots, prompt included
};

// One (prompt, kv head) task's buffers, reused across tasks by a thread.
struct Work {
  std::vector<bf16> keys, values, query, probs;
  std::vector<float> scores, sums;
  float inv[kBlock];  // each query row's 1 / sum of its weights
  void size(int64_t ctx_pad) {
    keys.resize(ctx_pad * kDim);  // lay_out writes every position
    values.resize(ctx_pad * kDim);
    query.resize(kBlock * kDim);
    probs.resize(kBlock * ctx_pad);
    scores.resize(kBlock * ctx_pad);
    sums.resize(kBlock * kDim);
  }
};

// 16 rows of 16 32-bit lanes transposed in registers: out[j] lane i = in[i] lane j.
inline void transpose16(const __m512i* in, __m512i* out) {
  __m512i t[16], u[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(in[i], in[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(in[i], in[i + 1]);
  }
  for (int g = 0; g < 16; g += 4) {  // u[g + c]: rows g .. g + 3 at columns 4L + c of lane L
    u[g] = _mm512_unpacklo_epi64(t[g], t[g + 2]);
    u[g + 1] = _mm512_unpackhi_epi64(t[g], t[g + 2]);
    u[g + 2] = _mm512_unpacklo_epi64(t[g + 1], t[g + 3]);
    u[g + 3] = _mm512_unpackhi_epi64(t[g + 1], t[g + 3]);
  }
  for (int c = 0; c < 4; ++c) {
    const __m512i v0 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0x88), v1 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0xdd);
    const __m512i v2 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0x88), v3 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0xdd);
    out[c] = _mm512_shuffle_i32x4(v0, v2, 0x88);
    out[8 + c] = _mm512_shuffle_i32x4(v0, v2, 0xdd);
    out[4 + c] = _mm512_shuffle_i32x4(v1, v3, 0x88);
    out[12 + c] = _mm512_shuffle_i32x4(v1, v3, 0xdd);
  }
}

// Keys as the B operand of query x key^T: per 16 positions, two tiles (dims 0-31, 32-63) whose
// row j holds the pair of dims 2j, 2j + 1 of each position (a transpose of 32-bit pairs).
// Values as the B operand of probabilities x values: per 32 positions, four tiles (dims 16c ..
// 16c + 15) whose row j holds each dim of positions 2j, 2j + 1 (an interleave of two rows).
// Positions from ctx to ctx_pad are zero.
template <typename Cache>
void lay_out(const Cache& cache, const int64_t* slots, int64_t ctx, int64_t ctx_pad, int64_t kv,
             bf16* keys, bf16* values) {
  alignas(64) bf16 k[kBlock][kDim], v[kBlock][kDim];
  __m512i idx[2];  // the interleave of dims 0-15 (16-31) of two rows, as 16-bit lanes
  {
    alignas(64) uint16_t lanes[2][32];
    for (int m = 0; m < 16; ++m) {
      lanes[0][2 * m] = m, lanes[0][2 * m + 1] = 32 + m;
      lanes[1][2 * m] = 16 + m, lanes[1][2 * m + 1] = 48 + m;
    }
    idx[0] = _mm512_load_si512(lanes[0]);
    idx[1] = _mm512_load_si512(lanes[1]);
  }
  for (int64_t p0 = 0; p0 < ctx_pad; p0 += kBlock) {
    for (int64_t i = 0; i < kBlock; ++i) {
      if (p0 + i < ctx) {
        cache.read(slots[p0 + i], kv, k[i], v[i]);
      } else {
        std::fill_n(k[i], kDim, bf16(0.f));
        std::fill_n(v[i], kDim, bf16(0.f));
      }
    }
    __m512i rows[kBlock], cols[kBlock];
    for (int half = 0; half < 2; ++half) {
      for (int i = 0; i < kBlock; ++i) rows[i] = _mm512_load_si512(k[i] + half * 32);
      transpose16(rows, cols);
      bf16* tile = keys + ((p0 / kBlock) * 2 + half) * kBlock * 32;
      for (int j = 0; j < kBlock; ++j) _mm512_storeu_si512(tile + j * 32, cols[j]);
    }
    const int64_t vb = p0 / kPair, j0 = (p0 % kPair) / 2;
    for (int64_t t = 0; t < kBlock / 2; ++t) {
      for (int half = 0; half < 2; ++half) {
        const __m512i a = _mm512_load_si512(v[2 * t] + half * 32), b = _mm512_load_si512(v[2 * t + 1] + half * 32);
        for (int c = 0; c < 2; ++c) {
          bf16* row = values + ((vb * 4 + half * 2 + c) * kBlock + j0 + t) * 32;
          _mm512_storeu_si512(row, _mm512_permutex2var_epi16(a, idx[c], b));
        }
      }
    }
  }
}

// One slot's keys and values of one kv head, as bf16: from a bf16 cache as they are, from an
// fp8 one times its scales.
struct Bf16Cache {
  const bf16* pool;
  int64_t stride, v_offset;  // elements per slot; where the values start
  void read(int64_t slot, int64_t kv, bf16* k, bf16* v) const {
    const bf16* row = pool + slot * stride + kv * kDim;
    std::copy_n(row, kDim, k);
    std::copy_n(row + v_offset, kDim, v);
  }
};

template <dyno_fp8::Fp8 F>
struct Fp8Cache {
  const uint8_t* pool;
  int64_t stride, v_offset;
  float k_scale, v_scale;  // kFp8Unit included
  void read(int64_t slot, int64_t kv, bf16* k, bf16* v) const {
    const uint8_t* row = pool + slot * stride + kv * kDim;
    for (int64_t d = 0; d < kDim; d += dyno_vec::kLanes) {
      dyno_vec::store(k + d, _mm512_mul_ps(dyno_fp8::fp8x16_to_float<F>(row + d), _mm512_set1_ps(k_scale)));
      dyno_vec::store(v + d, _mm512_mul_ps(dyno_fp8::fp8x16_to_float<F>(row + v_offset + d),
                                           _mm512_set1_ps(v_scale)));
    }
  }
};

// Rows of the score block (16 queries x `width` positions) turned into bf16 weights
// exp(scale * (score - row max)), and each row's 1 / sum in inv (the caller divides the
// weighted values by it): query r (absolute position first + r) sees positions [lo, hi] of its
// row; the rest weigh 0. Only the vectors that hold [lo, hi] are worked on.
void softmax_block(const float* scores, int64_t width, int64_t rows, int64_t first, int64_t window,
                   float scale, bf16* probs, float* inv) {
  using namespace dyno_vec;
  const __m512 k = _mm512_set1_ps(scale);
  const __m256i zeros = _mm256_setzero_si256();
  for (int64_t r = 0; r < kBlock; ++r) {
    const float* s = scores + r * width;
    bf16* p = probs + r * width;
    const int64_t hi = r < rows ? std::min(first + r, width - 1) : -1;
    const int64_t lo = window > 0 ? std::max<int64_t>(0, first + r - window + 1) : 0;
    const int64_t v_lo = hi >= lo ? lo / kLanes * kLanes : width, v_hi = hi >= lo ? hi / kLanes * kLanes : -kLanes;
    auto seen = [&](int64_t i) {  // lanes of vector i inside [lo, hi]
      __mmask16 m = 0xFFFF;
      if (i == v_lo) m &= static_cast<__mmask16>(0xFFFFu << (lo - i));
      if (i == v_hi) m &= static_cast<__mmask16>(0xFFFFu >> (kLanes - 1 - (hi - i)));
      return m;
    };
    for (int64_t i = 0; i < v_lo; i += kLanes) _mm256_storeu_si256(reinterpret_cast<__m256i*>(p + i), zeros);
    __m512 m = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
    for (int64_t i = v_lo; i <= v_hi; i += kLanes) m = _mm512_mask_max_ps(m, seen(i), m, _mm512_loadu_ps(s + i));
    const __m512 shift = _mm512_mul_ps(_mm512_set1_ps(_mm512_reduce_max_ps(m)), k);
    __m512 sum = _mm512_setzero_ps();
    for (int64_t i = v_lo; i <= v_hi; i += kLanes) {
      const __m512 x = _mm512_maskz_mov_ps(seen(i), exp(_mm512_fmsub_ps(_mm512_loadu_ps(s + i), k, shift)));
      const __m256i rounded = to_bf16(x);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(p + i), rounded);
      sum = _mm512_add_ps(sum, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(rounded), 16)));
    }
    for (int64_t i = std::max(v_hi + kLanes, v_lo); i < width; i += kLanes)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(p + i), zeros);
    inv[r] = hi >= lo ? 1.f / _mm512_reduce_add_ps(sum) : 0.f;
  }
}

// One block of 16 query tokens of one head: `query` holds them (zero rows past `rows`), their
// context is positions [0, width) of the laid-out keys and values (width a multiple of 32).
__attribute__((target("amx-tile,amx-bf16")))
void attend_block(Work& w, int64_t width, int64_t rows, int64_t first, int64_t window, float scale) {
  _tile_loadd(4, w.query.data(), kDim * 2);
  _tile_loadd(5, w.query.data() + 32, kDim * 2);
  float* scores = w.scores.data();
  for (int64_t b = 0; b < width / kBlock; ++b) {
    _tile_zero(0);
    _tile_loadd(6, w.keys.data() + (b * 2) * kBlock * 32, 64);
    _tile_loadd(7, w.keys.data() + (b * 2 + 1) * kBlock * 32, 64);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(0, 5, 7);
    _tile_stored(0, scores + b * kBlock, width * 4);
  }
  softmax_block(scores, width, rows, first, window, scale, w.probs.data(), w.inv);
  _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
  for (int64_t b = 0; b < width / kPair; ++b) {
    _tile_loadd(4, w.probs.data() + b * kPair, width * 2);
    const bf16* v = w.values.data() + b * 4 * kBlock * 32;
    _tile_loadd(6, v, 64); _tile_dpbf16ps(0, 4, 6);
    _tile_loadd(7, v + kBlock * 32, 64); _tile_dpbf16ps(1, 4, 7);
    _tile_loadd(6, v + 2 * kBlock * 32, 64); _tile_dpbf16ps(2, 4, 6);
    _tile_loadd(7, v + 3 * kBlock * 32, 64); _tile_dpbf16ps(3, 4, 7);
  }
  float* sums = w.sums.data();
  for (int c = 0; c < 4; ++c) {
    switch (c) {  // tile numbers must be constants
      case 0: _tile_stored(0, sums, kDim * 4); break;
      case 1: _tile_stored(1, sums + 16, kDim * 4); break;
      case 2: _tile_stored(2, sums + 32, kDim * 4); break;
      default: _tile_stored(3, sums + 48, kDim * 4); break;
    }
  }
}

// attend_block with AVX-512 BF16 dot products instead of tiles, for CPUs without AMX (each
// VDPBF16PS takes a broadcast pair of one row and one 64-byte tile row, as a tile product would):
// the same laid-out keys, values and softmax. A 150-token prompt's 9 heads over an fp8 cache,
// one layer: 700 us through the gather and SDPA.
void attend_block_vec(Work& w, int64_t width, int64_t rows, int64_t first, int64_t window, float scale) {
  const int32_t* query = reinterpret_cast<const int32_t*>(w.query.data());  // bf16 pairs, 32 a row
  float* scores = w.scores.data();
  for (int64_t b = 0; b < width / kBlock; ++b) {
    __m512 acc[kBlock];
    for (int r = 0; r < kBlock; ++r) acc[r] = _mm512_setzero_ps();
    for (int half = 0; half < 2; ++half) {
      const bf16* tile = w.keys.data() + (b * 2 + half) * kBlock * 32;
      for (int j = 0; j < kBlock; ++j) {
        const __m512bh key = (__m512bh)_mm512_loadu_si512(tile + j * 32);
        for (int r = 0; r < kBlock; ++r)
          acc[r] = _mm512_dpbf16_ps(acc[r], (__m512bh)_mm512_set1_epi32(query[r * 32 + half * 16 + j]), key);
      }
    }
    for (int r = 0; r < kBlock; ++r) _mm512_storeu_ps(scores + r * width + b * kBlock, acc[r]);
  }
  softmax_block(scores, width, rows, first, window, scale, w.probs.data(), w.inv);
  constexpr int kRowsAtOnce = 4;  // 4 rows x 4 dim blocks of sums in registers
  for (int r0 = 0; r0 < kBlock; r0 += kRowsAtOnce) {
    __m512 acc[kRowsAtOnce][4];
    for (auto& row : acc)
      for (auto& a : row) a = _mm512_setzero_ps();
    for (int64_t b = 0; b < width / kPair; ++b) {
      const bf16* v = w.values.data() + b * 4 * kBlock * 32;
      for (int j = 0; j < kBlock; ++j) {
        __m512bh vals[4];
        for (int c = 0; c < 4; ++c) vals[c] = (__m512bh)_mm512_loadu_si512(v + (c * kBlock + j) * 32);
        for (int r = 0; r < kRowsAtOnce; ++r) {
          const int32_t pair = *reinterpret_cast<const int32_t*>(w.probs.data() + (r0 + r) * width + b * kPair + 2 * j);
          const __m512bh p = (__m512bh)_mm512_set1_epi32(pair);
          for (int c = 0; c < 4; ++c) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], p, vals[c]);
        }
      }
    }
    for (int r = 0; r < kRowsAtOnce; ++r)
      for (int c = 0; c < 4; ++c) _mm512_storeu_ps(w.sums.data() + (r0 + r) * kDim + c * 16, acc[r][c]);
  }
}

template <typename Cache>
void run_task(const bf16* q, const Cache& cache, const int64_t* slots, const Span& span, int64_t kv,
              int64_t num_heads, int64_t num_kv_heads, int64_t window, float scale, bf16* out,
              Work& w, bool tiles) {
  const int64_t group = num_heads / num_kv_heads;
  const int64_t ctx_pad = (span.ctx_len + kPair - 1) / kPair * kPair;
  const int64_t cached = span.ctx_len - span.q_len;  // positions before the first query
  w.size(ctx_pad);
  lay_out(cache, slots + span.ctx_start, span.ctx_len, ctx_pad, kv, w.keys.data(), w.values.data());
  for (int64_t h = kv * group; h < (kv + 1) * group; ++h) {
    for (int64_t i0 = 0; i0 < span.q_len; i0 += kBlock) {
      const int64_t rows = std::min(kBlock, span.q_len - i0);
      std::fill(w.query.begin(), w.query.end(), bf16(0.f));
      for (int64_t r = 0; r < rows; ++r) {
        std::copy_n(q + ((span.q_start + i0 + r) * num_heads + h) * kDim, kDim, w.query.data() + r * kDim);
      }
      const int64_t width = std::min(ctx_pad, (cached + i0 + kBlock + kPair - 1) / kPair * kPair);
      if (tiles) {
        attend_block(w, width, rows, cached + i0, window, scale);
      } else {
        attend_block_vec(w, width, rows, cached + i0, window, scale);
      }
      for (int64_t r = 0; r < rows; ++r) {
        bf16* o = out + ((span.q_start + i0 + r) * num_heads + h) * kDim;
        for (int64_t d = 0; d < kDim; d += dyno_vec::kLanes)
          dyno_vec::store(o + d, _mm512_mul_ps(_mm512_loadu_ps(w.sums.data() + r * kDim + d),
                                               _mm512_set1_ps(w.inv[r])));
      }
    }
  }
}

template <typename Cache>
void run(const at::Tensor& q, const Cache& cache, int64_t num_kv_heads, const std::vector<Span>& spans,
         const int64_t* slots, int64_t window, double scale, at::Tensor& out) {
  const bf16* qd = q.data_ptr<bf16>();
  bf16* od = out.data_ptr<bf16>();
  const int64_t tasks = static_cast<int64_t>(spans.size()) * num_kv_heads;
  const bool tiles = dyno_amx::permitted();
#pragma omp parallel
  {
    if (tiles) dyno_amx::configure();
    Work w;
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < tasks; ++task) {
      run_task(qd, cache, slots, spans[task / num_kv_heads], task % num_kv_heads, q.size(1),
               num_kv_heads, window, static_cast<float>(scale), od, w, tiles);
    }
    if (tiles) dyno_amx::release();
  }
}

}  // namespace

// q: [tokens, heads, 64] bf16, the prompts' rows back to back; kv: [2, slots, kv_heads, 64],
// bf16 or fp8 (stored as value / k_scale, value / v_scale); query_starts: [prompts + 1] rows of
// q; slots: each prompt's context (cached positions, then its own) as cache slots, back to
// back, with context_starts: [prompts + 1].
at::Tensor prefill_attention(const at::Tensor& q, const at::Tensor& kv, const at::Tensor& query_starts,
                             const at::Tensor& slots, const at::Tensor& context_starts, int64_t window,
                             double scale, double k_scale, double v_scale) {
  const auto cache_type = kv.scalar_type();
  TORCH_CHECK(q.scalar_type() == at::kBFloat16 && q.size(2) == kDim && kv.size(3) == kDim &&
                  q.size(1) % kv.size(2) == 0 &&
                  (cache_type == at::kBFloat16 || cache_type == at::kFloat8_e4m3fn ||
                   cache_type == at::kFloat8_e5m2),
              "prefill_attention: bf16 q, a bf16 or fp8 cache, head_dim 64, whole query groups");
  TORCH_CHECK(kv.is_contiguous() && slots.is_contiguous(), "prefill_attention: contiguous kv and slots");
  const at::Tensor qc = q.contiguous();
  at::Tensor out = at::empty_like(qc);
  const int64_t prompts = query_starts.numel() - 1, num_kv_heads = kv.size(2);
  const int64_t* qs = query_starts.data_ptr<int64_t>();
  const int64_t* cs = context_starts.data_ptr<int64_t>();
  std::vector<Span> spans(prompts);
  for (int64_t i = 0; i < prompts; ++i) {
    spans[i] = {qs[i], qs[i + 1] - qs[i], cs[i], cs[i + 1] - cs[i]};
    TORCH_CHECK(spans[i].ctx_len >= spans[i].q_len, "prefill_attention: a context shorter than its prompt");
  }
  const int64_t stride = num_kv_heads * kDim, v_offset = kv.size(1) * stride;
  const int64_t* sd = slots.data_ptr<int64_t>();
  using dyno_fp8::Fp8;
  using dyno_fp8::kFp8Unit;
  if (cache_type == at::kBFloat16) {
    run(qc, Bf16Cache{kv.data_ptr<bf16>(), stride, v_offset}, num_kv_heads, spans, sd, window, scale, out);
  } else {
    const auto* pool = static_cast<const uint8_t*>(kv.data_ptr());
    if (cache_type == at::kFloat8_e4m3fn) {
      const float unit = kFp8Unit<Fp8::kE4M3>;
      run(qc, Fp8Cache<Fp8::kE4M3>{pool, stride, v_offset, static_cast<float>(k_scale) * unit,
                                   static_cast<float>(v_scale) * unit},
          num_kv_heads, spans, sd, window, scale, out);
    } else {
      run(qc, Fp8Cache<Fp8::kE5M2>{pool, stride, v_offset, static_cast<float>(k_scale),
                                   static_cast<float>(v_scale)},
          num_kv_heads, spans, sd, window, scale, out);
    }
  }
  return out;
}
#else
at::Tensor prefill_attention(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                             const at::Tensor&, int64_t, double, double, double) {
  TORCH_CHECK(false, "prefill_attention: built for a CPU without AVX-512 BF16 (no AMX either)");
  return {};
}
#endif
