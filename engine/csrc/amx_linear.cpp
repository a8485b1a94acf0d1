// Linear layers on AMX for batches of up to a few hundred rows: bf16 activations times bf16 or
// int4 weights, fp32 sums; and int8 weights times activations quantized to two bytes.
//
// A decode step at a few dozen sequences is bound by reading the weights. bf16 weights are
// read straight from memory in tile order (oneDNN's packed matmul reached 13 GB/s here). int4
// ones take fewer bytes: torch's int4 kernel does not use AMX and falls far behind bf16 from a
// few rows on, so here each 32-channel panel is turned into bf16 once (codes take their group's
// scale and zero point) in a buffer that stays in cache, and every row block is multiplied by it
// on the tiles. int8 weights need no conversion: the rows are quantized instead (row_quant.h)
// and AMX-INT8 multiplies their high and low bytes by the weights as they lie; one scale per
// output channel is applied after the sum, x @ (q * s) == (x @ q) * s.
#include <ATen/ATen.h>
#include <omp.h>
#include <c10/util/Optional.h>

#if defined(__x86_64__)
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "amx_tiles.h"
#include "bf16_vec.h"
#include "row_quant.h"

namespace {

using bf16 = at::BFloat16;

using dyno_amx::kKBlock;
using dyno_amx::kPanel;  // output channels a thread takes at a time
using dyno_amx::kRows;
using dyno_amx::kWeightBlock;
// Input blocks of a panel fetched ahead of the one worked on: 4 beat 2 and 8 here (measured
// when int8 panels were converted too, 1 KiB a block).
constexpr int64_t kPrefetchBlocks = 4;
// Input blocks of the next panel converted while a panel's tiles drain (see row_block).
constexpr int64_t kAheadBlocks = 4;

inline void prefetch(const void* p, int64_t bytes) {
  for (int64_t a = 0; a < bytes; a += 64) _mm_prefetch(static_cast<const char*>(p) + a, _MM_HINT_T0);
}

// A panel's source: load(kb, slot) gives input block kb in bf16 tile order, converting it into
// `slot` (its place in a per-thread buffer) if need be; kept(kb, slot) gives it again later.
// bf16 weights are read where they lie.
struct Bf16Panel {
  const bf16* src;
  const bf16* load(int64_t kb, bf16*) const {
    prefetch(src + (kb + kPrefetchBlocks) * kWeightBlock, kWeightBlock * 2);
    return src + kb * kWeightBlock;
  }
  const bf16* kept(int64_t kb, bf16*) const { return src + kb * kWeightBlock; }
};

__attribute__((target("avx512f,avx512bw")))
inline __m512 bf16x16_to_float(const bf16* p) {
  const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}

// An int4 panel: per input block (one quantization group) and half, 16 tile rows of 16 bytes,
// byte j holding row positions j (low nibble) and j + 16 (high), then 16 bf16 scales and 16
// zero points. Weight = (code - 8) * scale + zero, as dequantize_int4 has it.
struct Int4Panel {
  const uint8_t* codes;
  const bf16* scales_zeros;
  const bf16* kept(int64_t, bf16* slot) const { return slot; }
  __attribute__((target("avx512f,avx512bw,avx512bf16")))
  const bf16* load(int64_t kb, bf16* slot) const {
    constexpr int64_t kHalfBytes = kRows * 16, kHalfParams = 32;
    prefetch(codes + (kb + kPrefetchBlocks) * 2 * kHalfBytes, 2 * kHalfBytes);
    prefetch(scales_zeros + (kb + kPrefetchBlocks) * 2 * kHalfParams, 2 * kHalfParams * 2);
    // a row is 16 channels x an input pair: lanes 0-15 are channels 0-7, lanes 16-31 channels 8-15
    const __m512i first = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
    const __m512i second = _mm512_add_epi32(first, _mm512_set1_epi32(8));
    const __m512i low_nibble = _mm512_set1_epi32(15);
    for (int64_t half = 0; half < 2; ++half) {
      const bf16* params = scales_zeros + (kb * 2 + half) * kHalfParams;
      const __m512 scale = bf16x16_to_float(params), zero = bf16x16_to_float(params + 16);
      const __m512 offset = _mm512_fnmadd_ps(_mm512_set1_ps(8.f), scale, zero);  // zero - 8 * scale
      const __m512 s_lo = _mm512_permutexvar_ps(first, scale), s_hi = _mm512_permutexvar_ps(second, scale);
      const __m512 o_lo = _mm512_permutexvar_ps(first, offset), o_hi = _mm512_permutexvar_ps(second, offset);
      const uint8_t* rows = codes + (kb * 2 + half) * kHalfBytes;
      bf16* out = slot + half * kWeightBlock / 2;
      for (int64_t row = 0; row < kRows; ++row) {
        const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(rows + row * 16)));
        const __m512 lo = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_and_si512(v, low_nibble)), s_lo, o_lo);
        const __m512 hi = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(v, 4)), s_hi, o_hi);
        _mm512_storeu_si512(out + row * kPanel, reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(hi, lo)));
      }
    }
    return slot;
  }
};

// C tiles 0-3 = rows [0,16) x cols [0,16), [0,16) x [16,32), [16,32) x [0,16), [16,32) x [16,32)
// of a 32 x 32 block; tiles 4, 5 hold activations, 6, 7 the panel's two halves. On a panel's
// first row block each input block from `converted` on is converted just before its tiles load,
// so the vector work runs beside the tile unit's; the rest (and later row blocks) take the
// converted panel from `buffer`. ahead() runs between the last tile op and the stores, which
// wait for the tile unit to finish: vector work for the next panel fits there.
template <bool kTwoTiles, typename Panel, typename Ahead>
__attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512bf16")))
void row_block(const bf16* x, int64_t k, const Panel& source, int64_t converted, bf16* buffer, float* c,
               Ahead ahead) {
  _tile_zero(0); _tile_zero(1);
  if (kTwoTiles) { _tile_zero(2); _tile_zero(3); }
  for (int64_t kb = 0; kb < k / kKBlock; ++kb) {
    bf16* slot = buffer + kb * kWeightBlock;
    const bf16* b = kb >= converted ? source.load(kb, slot) : source.kept(kb, slot);
    _tile_loadd(4, x + kb * kKBlock, k * 2);
    _tile_loadd(6, b, 64);
    _tile_loadd(7, b + kWeightBlock / 2, 64);
    _tile_dpbf16ps(0, 4, 6); _tile_dpbf16ps(1, 4, 7);
    if (kTwoTiles) {
      _tile_loadd(5, x + kRows * k + kb * kKBlock, k * 2);
      _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7);
    }
  }
  ahead();
  _tile_stored(0, c, kPanel * 4); _tile_stored(1, c + 16, kPanel * 4);
  if (kTwoTiles) {
    _tile_stored(2, c + kRows * kPanel, kPanel * 4);
    _tile_stored(3, c + kRows * kPanel + 16, kPanel * 4);
  }
}

void store_rows(const float* c, int64_t rows, const bf16* bias, bf16* out, int64_t n) {
  for (int64_t m = 0; m < rows; ++m) {
    for (int64_t j = 0; j < kPanel; ++j) {
      float v = c[m * kPanel + j];
      if (bias != nullptr) v += static_cast<float>(bias[j]);
      out[m * n + j] = static_cast<bf16>(v);
    }
  }
}

// A gate/up panel's rows (channels interleaved by sixteens, amx_layout.interleave_gate_up) as
// 16 outputs each of bf16(bf16(silu(gate)) * up), the gate and up sums rounded to bf16 first as
// the plain product and silu_and_mul would round them.
__attribute__((target("avx512f,avx512bw,avx512bf16")))
void store_silu_rows(const float* c, int64_t rows, const bf16* bias, bf16* out, int64_t n) {
  using namespace dyno_vec;
  const __m512 b_gate = bias != nullptr ? bf16x16_to_float(bias) : _mm512_setzero_ps();
  const __m512 b_up = bias != nullptr ? bf16x16_to_float(bias + 16) : _mm512_setzero_ps();
  for (int64_t m = 0; m < rows; ++m) {
    const __m512 gate = round(_mm512_add_ps(_mm512_loadu_ps(c + m * kPanel), b_gate));
    const __m512 up = round(_mm512_add_ps(_mm512_loadu_ps(c + m * kPanel + 16), b_up));
    store(out + m * n, silu_mul(gate, up));
  }
}

// Rows padded to whole tiles; each thread takes whole panels of 32 output channels, converts
// each panel once (on its first row block) and keeps it in cache for the rest. kSilu: the
// panels are a gate/up pair's, and each gives 16 outputs of SiLU-and-mul.
template <typename Panel, bool kSilu = false, typename PanelAt>
at::Tensor multiply(const at::Tensor& x, int64_t n, PanelAt panel_at, const c10::optional<at::Tensor>& bias) {
  const int64_t m = x.size(0), k = x.size(1);
  const int64_t m_pad = (m + kRows - 1) / kRows * kRows;
  at::Tensor xp = x.contiguous();
  if (m_pad != m) {
    xp = at::zeros({m_pad, k}, x.options());
    xp.narrow(0, 0, m).copy_(x);
  }
  const int64_t out_n = kSilu ? n / 2 : n, out_cols = kSilu ? kPanel / 2 : kPanel;
  at::Tensor out = at::empty({m, out_n}, x.options());
  at::Tensor bias_c = bias.has_value() ? bias->to(at::kBFloat16).contiguous() : at::Tensor();
  const bf16* xd = xp.data_ptr<bf16>();
  const bf16* bd = bias_c.defined() ? bias_c.data_ptr<bf16>() : nullptr;
  bf16* od = out.data_ptr<bf16>();
#pragma omp parallel
  {
    dyno_amx::configure();
    // Two panels' buffers, left uninitialized (every block is written before it is read: a
    // vector's fill of them, one element at a time, took ~20% of a 32-row call).
    const std::unique_ptr<bf16[]> buffers(new bf16[2 * k * kPanel]);
    alignas(64) float c[2 * kRows * kPanel];
    // The static split over the threads, by hand: each thread's next panel is known.
    const int64_t panels = n / kPanel, threads = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t end = panels * (t + 1) / threads;
    const int64_t ahead_blocks = std::min<int64_t>(kAheadBlocks, k / kKBlock);
    int64_t converted = 0;  // blocks of this panel converted while the last one drained
    for (int64_t p = panels * t / threads; p < end; ++p) {
      const Panel source = panel_at(p);
      bf16* buffer = buffers.get() + (p % 2) * k * kPanel;
      bf16* next_buffer = buffers.get() + (1 - p % 2) * k * kPanel;
      const int64_t col = p * kPanel;
      int64_t converted_next = 0;
      for (int64_t r = 0; r < m_pad; r += 2 * kRows) {
        const int64_t rows = std::min<int64_t>(2 * kRows, m_pad - r);
        auto ahead = [&] {
          if (r + rows < m_pad || p + 1 >= end) return;
          const Panel next = panel_at(p + 1);
          for (int64_t kb = 0; kb < ahead_blocks; ++kb) next.load(kb, next_buffer + kb * kWeightBlock);
          converted_next = ahead_blocks;
        };
        const int64_t ready = r == 0 ? converted : k / kKBlock;  // blocks already in buffer
        if (rows == 2 * kRows) {
          row_block<true>(xd + r * k, k, source, ready, buffer, c, ahead);
        } else {
          row_block<false>(xd + r * k, k, source, ready, buffer, c, ahead);
        }
        bf16* dest = od + r * out_n + p * out_cols;
        if (kSilu) {
          store_silu_rows(c, std::min(rows, m - r), bd ? bd + col : nullptr, dest, out_n);
        } else {
          store_rows(c, std::min(rows, m - r), bd ? bd + col : nullptr, dest, out_n);
        }
      }
      converted = converted_next;
    }
    dyno_amx::release();
  }
  return out;
}

// int8: 16 quantized rows times one 32-channel panel (amx_layout.pack_int8's order: per 64
// inputs, each half's 16 rows of 16 channels x 4 inputs). C tiles 0, 1: the high bytes' sums
// with channels [0,16), [16,32); 2, 3: the low bytes'. c: [2][16 rows][32] int32.
__attribute__((target("amx-tile,amx-int8")))
void int8_row_block(const int8_t* high, const int8_t* low, int64_t stride, const int8_t* panel,
                    int64_t k_pad, int32_t* c) {
  constexpr int64_t kTileBytes = kRows * 64, kInt8Block = 2 * kTileBytes;  // 64 inputs of a panel
  _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
  for (int64_t kb = 0; kb < k_pad / 64; ++kb) {
    const int8_t* w = panel + kb * kInt8Block;
    prefetch(w + kPrefetchBlocks * kInt8Block, kInt8Block);
    _tile_loadd(4, high + kb * 64, stride);
    _tile_loadd(5, low + kb * 64, stride);
    _tile_loadd(6, w, 64);
    _tile_loadd(7, w + kTileBytes, 64);
    _tile_dpbssd(0, 4, 6); _tile_dpbssd(1, 4, 7);
    _tile_dpbssd(2, 5, 6); _tile_dpbssd(3, 5, 7);
  }
  _tile_stored(0, c, kPanel * 4); _tile_stored(1, c + 16, kPanel * 4);
  _tile_stored(2, c + kRows * kPanel, kPanel * 4); _tile_stored(3, c + kRows * kPanel + 16, kPanel * 4);
}

// Rows of c as out = (128 * high + low) * row scale * channel scale + bias.
__attribute__((target("avx512f,avx512bw,avx512bf16")))
void store_int8_rows(const int32_t* c, int64_t rows, const float* row_scale, const float* scale,
                     const bf16* bias, bf16* out, int64_t n) {
  for (int64_t m = 0; m < rows; ++m) {
    for (int64_t j = 0; j < kPanel; j += 16) {
      const __m512 high = _mm512_cvtepi32_ps(_mm512_loadu_si512(c + m * kPanel + j));
      const __m512 low = _mm512_cvtepi32_ps(_mm512_loadu_si512(c + (kRows + m) * kPanel + j));
      __m512 v = _mm512_fmadd_ps(high, _mm512_set1_ps(128.f), low);
      v = _mm512_mul_ps(_mm512_mul_ps(v, _mm512_set1_ps(row_scale[m])), _mm512_loadu_ps(scale + j));
      if (bias != nullptr) v = _mm512_add_ps(v, bf16x16_to_float(bias + j));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + m * n + j),
                          reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(v)));
    }
  }
}

at::Tensor multiply_int8(const at::Tensor& x, int64_t n, const int8_t* packed, const float* scale,
                         const c10::optional<at::Tensor>& bias) {
  const int64_t m = x.size(0), k_pad = (x.size(1) + 63) / 64 * 64;
  const int64_t m_pad = (m + kRows - 1) / kRows * kRows;
  const dyno_rows::Rows rows = dyno_rows::quantize(x.stride(1) == 1 ? x : x.contiguous(), m_pad, k_pad);
  at::Tensor out = at::empty({m, n}, x.options());
  at::Tensor bias_c = bias.has_value() ? bias->to(at::kBFloat16).contiguous() : at::Tensor();
  const bf16* bd = bias_c.defined() ? bias_c.data_ptr<bf16>() : nullptr;
  bf16* od = out.data_ptr<bf16>();
#pragma omp parallel
  {
    dyno_amx::configure();
    alignas(64) int32_t c[2 * kRows * kPanel];
#pragma omp for schedule(static)
    for (int64_t p = 0; p < n / kPanel; ++p) {
      for (int64_t r = 0; r < m_pad; r += kRows) {
        int8_row_block(rows.high.data() + r * k_pad, rows.low.data() + r * k_pad, k_pad,
                       packed + p * kPanel * k_pad, k_pad, c);
        store_int8_rows(c, std::min(kRows, m - r), rows.scale.data() + r, scale + p * kPanel,
                        bd ? bd + p * kPanel : nullptr, od + r * n + p * kPanel, n);
      }
    }
    dyno_amx::release();
  }
  return out;
}

void check_input(const at::Tensor& x, int64_t n, const char* name) {
  TORCH_CHECK(dyno_amx::permitted(), name, ": this CPU or kernel offers no AMX");
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kBFloat16, name, ": x must be bf16 [M, K]");
  TORCH_CHECK(x.size(1) % kKBlock == 0 && n % kPanel == 0, name, ": K and N must be multiples of 32");
}

}  // namespace

bool amx_available() { return dyno_amx::permitted(); }

// out[M, N] = x[M, K] @ (packed * scale)^T + bias; packed: int8 in amx_layout.pack_int8's order
// ([N/32][K/64][2][16][16][4], K padded to a multiple of 64 with zeros).
at::Tensor amx_int8_linear(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scale,
                           const c10::optional<at::Tensor>& bias) {
  const int64_t n = scale.numel(), k_pad = (x.size(-1) + 63) / 64 * 64;
  check_input(x, n, "amx_int8_linear");
  TORCH_CHECK(packed.scalar_type() == at::kChar && scale.scalar_type() == at::kFloat &&
                  packed.numel() == n * k_pad && packed.is_contiguous() && scale.is_contiguous(),
              "amx_int8_linear: packed must hold N*K int8 (K padded to 64) and scale N fp32");
  return multiply_int8(x, n, packed.data_ptr<int8_t>(), scale.data_ptr<float>(), bias);
}

// out[M, N] = x[M, K] @ dequantized^T + bias, from amx_layout.pack_int4's codes ([N/32][K/32]
// [2][16][16] bytes) and scales_zeros ([N/32][K/32][2][2][16] bf16). With silu_mul, a gate/up
// pair interleaved by sixteens and out [M, N / 2] = bf16(silu(gate)) * up.
at::Tensor amx_int4_linear(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scales_zeros,
                           const c10::optional<at::Tensor>& bias, bool silu_mul) {
  const int64_t n = scales_zeros.numel() * kKBlock / 2 / x.size(-1), k = x.size(-1);
  check_input(x, n, "amx_int4_linear");
  TORCH_CHECK(codes.scalar_type() == at::kByte && scales_zeros.scalar_type() == at::kBFloat16 &&
                  codes.numel() * 2 == n * k && codes.is_contiguous() && scales_zeros.is_contiguous(),
              "amx_int4_linear: codes must hold N*K/2 uint8 and scales_zeros 2*N*K/32 bf16");
  const uint8_t* cd = codes.data_ptr<uint8_t>();
  const bf16* sz = scales_zeros.data_ptr<bf16>();
  const auto panel_at = [&](int64_t p) { return Int4Panel{cd + p * k * kPanel / 2, sz + p * (k / kKBlock) * 64}; };
  return silu_mul ? multiply<Int4Panel, true>(x, n, panel_at, bias) : multiply<Int4Panel>(x, n, panel_at, bias);
}

// out[M, N] = x[M, K] @ weight^T + bias, weight bf16 in amx_layout.tile_order's order.
at::Tensor amx_bf16_linear(const at::Tensor& x, const at::Tensor& packed, int64_t n,
                           const c10::optional<at::Tensor>& bias) {
  const int64_t k = x.size(-1);
  check_input(x, n, "amx_bf16_linear");
  TORCH_CHECK(packed.scalar_type() == at::kBFloat16 && packed.numel() == n * k && packed.is_contiguous(),
              "amx_bf16_linear: packed must hold N*K bf16");
  const bf16* wd = packed.data_ptr<bf16>();
  return multiply<Bf16Panel>(x, n, [&](int64_t p) { return Bf16Panel{wd + p * k * kPanel}; }, bias);
}
#else  // no AMX off x86: the callers see amx_available() false and keep to torch's kernels
bool amx_available() { return false; }

static at::Tensor no_amx() {
  TORCH_CHECK(false, "dyno's AMX kernels: not an x86 CPU");
  return {};
}

at::Tensor amx_int8_linear(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           const c10::optional<at::Tensor>&) { return no_amx(); }
at::Tensor amx_int4_linear(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           const c10::optional<at::Tensor>&, bool) { return no_amx(); }
at::Tensor amx_bf16_linear(const at::Tensor&, const at::Tensor&, int64_t,
                           const c10::optional<at::Tensor>&) { return no_amx(); }
#endif
