// Weight-only int8 linear layers on AMX: bf16 activations times int8 weights, fp32 sums.
//
// A decode step at a few dozen sequences is bound by reading the weights: int8 halves their
// bytes against bf16. torch's int8 kernel does not use AMX and falls far behind bf16 from a
// few rows on, so this one turns each 32-channel panel of weights into bf16 once (int8 values
// are exact in bf16) in a buffer that stays in cache, multiplies every row block by it on the
// tiles, and scales each output channel after the sum: x @ (q * s) == (x @ q) * s.
#include <ATen/ATen.h>
#include <c10/util/Optional.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace {

using bf16 = at::BFloat16;

constexpr int64_t kPanel = 32;   // output channels a thread takes at a time: two tiles wide
constexpr int64_t kKBlock = 32;  // input channels per tile row (16 bf16 pairs)
constexpr int64_t kRows = 16;    // rows per tile
// Input blocks (1 KiB of int8 each) fetched ahead of the conversion: 4 beat 2 and 8 here.
constexpr int64_t kPrefetchBlocks = 4;

struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

bool amx_permitted() {
  // Linux hands out the AMX register state only on request (ARCH_REQ_XCOMP_PERM, XTILEDATA).
  static const bool ok = syscall(SYS_arch_prctl, 0x1023, 18) == 0;
  return ok;
}

__attribute__((target("avx512f,avx512bw,avx512bf16")))
void int8_to_bf16(const int8_t* src, bf16* dst, int64_t count) {
  for (int64_t i = 0; i < count; i += 32) {
    const __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
    const __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i + 16))));
    _mm512_storeu_si512(dst + i, reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(hi, lo)));
  }
}

// C tiles 0-3 = rows [0,16) x cols [0,16), [0,16) x [16,32), [16,32) x [0,16), [16,32) x [16,32)
// of a 32 x 32 block; tiles 4, 5 hold activations, 6, 7 the panel's two halves. With `src`, each
// input block of the panel is turned into bf16 just before its tiles load, so the conversion's
// vector work runs beside the tile unit's; without it, the panel is already in bf16.
template <bool kTwoTiles>
__attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512bf16")))
void row_block(const bf16* x, int64_t k, const int8_t* src, bf16* panel, float* c) {
  constexpr int64_t kBlock = 2 * kRows * kPanel;  // one input block of the panel, both halves
  _tile_zero(0); _tile_zero(1);
  if (kTwoTiles) { _tile_zero(2); _tile_zero(3); }
  for (int64_t kb = 0; kb < k / kKBlock; ++kb) {
    bf16* b = panel + kb * kBlock;
    if (src != nullptr) {
      const char* ahead = reinterpret_cast<const char*>(src + (kb + kPrefetchBlocks) * kBlock);
      for (int64_t a = 0; a < kBlock; a += 64) _mm_prefetch(ahead + a, _MM_HINT_T0);
      int8_to_bf16(src + kb * kBlock, b, kBlock);
    }
    _tile_loadd(4, x + kb * kKBlock, k * 2);
    _tile_loadd(6, b, 64);
    _tile_loadd(7, b + kBlock / 2, 64);
    _tile_dpbf16ps(0, 4, 6); _tile_dpbf16ps(1, 4, 7);
    if (kTwoTiles) {
      _tile_loadd(5, x + kRows * k + kb * kKBlock, k * 2);
      _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7);
    }
  }
  _tile_stored(0, c, kPanel * 4); _tile_stored(1, c + 16, kPanel * 4);
  if (kTwoTiles) {
    _tile_stored(2, c + kRows * kPanel, kPanel * 4);
    _tile_stored(3, c + kRows * kPanel + 16, kPanel * 4);
  }
}

__attribute__((target("amx-tile")))
void configure_tiles() {
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) {
    cfg.colsb[t] = 64;
    cfg.rows[t] = kRows;
  }
  _tile_loadconfig(&cfg);
}

__attribute__((target("amx-tile")))
void release_tiles() { _tile_release(); }

void store_rows(const float* c, int64_t rows, const float* scale, const bf16* bias, bf16* out,
                int64_t n) {
  for (int64_t m = 0; m < rows; ++m) {
    for (int64_t j = 0; j < kPanel; ++j) {
      float v = c[m * kPanel + j] * scale[j];
      if (bias != nullptr) v += static_cast<float>(bias[j]);
      out[m * n + j] = static_cast<bf16>(v);
    }
  }
}

}  // namespace

bool amx_available() { return amx_permitted(); }

// out[M, N] = x[M, K] @ (packed * scale)^T + bias. packed: int8 from pack_int8_for_amx's layout
// ([N/32][K/32][2][16][16][2]: panel, input block, half, input pair, channel, pair member).
at::Tensor amx_int8_linear(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scale,
                           const c10::optional<at::Tensor>& bias) {
  TORCH_CHECK(amx_permitted(), "amx_int8_linear: this CPU or kernel offers no AMX");
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kBFloat16, "amx_int8_linear: x must be bf16 [M, K]");
  TORCH_CHECK(packed.scalar_type() == at::kChar && scale.scalar_type() == at::kFloat,
              "amx_int8_linear: int8 weights and fp32 scales");
  const int64_t m = x.size(0), k = x.size(1), n = scale.numel();
  TORCH_CHECK(k % kKBlock == 0 && n % kPanel == 0 && packed.numel() == n * k,
              "amx_int8_linear: K and N must be multiples of 32 and packed must hold N*K");
  const int64_t m_pad = (m + kRows - 1) / kRows * kRows;
  at::Tensor xp = x.contiguous();
  if (m_pad != m) {
    xp = at::zeros({m_pad, k}, x.options());
    xp.narrow(0, 0, m).copy_(x);
  }
  at::Tensor out = at::empty({m, n}, x.options());
  at::Tensor bias_c = bias.has_value() ? bias->to(at::kBFloat16).contiguous() : at::Tensor();
  const bf16* xd = xp.data_ptr<bf16>();
  const int8_t* wd = packed.data_ptr<int8_t>();
  const float* sd = scale.data_ptr<float>();
  const bf16* bd = bias_c.defined() ? bias_c.data_ptr<bf16>() : nullptr;
  bf16* od = out.data_ptr<bf16>();
  const int64_t panels = n / kPanel;
#pragma omp parallel
  {
    configure_tiles();
    std::vector<bf16> panel(k * kPanel);
    alignas(64) float c[2 * kRows * kPanel];
#pragma omp for schedule(static)
    for (int64_t p = 0; p < panels; ++p) {
      const int64_t col = p * kPanel;
      for (int64_t r = 0; r < m_pad; r += 2 * kRows) {
        const int64_t rows = std::min<int64_t>(2 * kRows, m_pad - r);
        const int8_t* src = r == 0 ? wd + p * k * kPanel : nullptr;  // converted once, kept
        if (rows == 2 * kRows) {
          row_block<true>(xd + r * k, k, src, panel.data(), c);
        } else {
          row_block<false>(xd + r * k, k, src, panel.data(), c);
        }
        store_rows(c, std::min(rows, m - r), sd + col, bd ? bd + col : nullptr, od + r * n + col, n);
      }
    }
    release_tiles();
  }
  return out;
}
