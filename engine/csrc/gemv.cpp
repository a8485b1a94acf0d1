// Quantized linears for a few rows (a decode step of one to four sequences): the weights stay
// integers and the rows are quantized instead, summed with VNNI integer dot products.
//
// Such a step reads every weight once and does one multiply-add with it, so it should take the
// weights' bytes over memory bandwidth. Turning the weights into floats first costs more than
// the read: the AMX kernels' conversion and torch's int4 kernel read 28 MB of int8 weights in
// 2.1-2.7 ms from a cold cache, where a plain sum reads them in 1.6. Here each row of x becomes
// 16-bit integers with one scale per row (x ~= x_q * scale; every value that is not tiny keeps
// more bits than bf16 gives it), and each group of weights costs one or two instructions.
//
// int8 weights come in amx_layout.tile_order's layout (pairs of inputs per channel: VPDPWSSD).
// int4 weights in pack_int4_gemv's: per 16 channels and quantization group of 32 inputs, four
// 64-byte rows whose byte 4c + j holds input 4i + j of channel c (low nibble) and input
// 4i + 16 + j (high), i the row; then the 16 scales and 16 zero points (bf16). Codes are
// unsigned, so VPDPBUSD takes them as they are, times x_q split into two signed bytes
// (x_q = 128 * high + low, 15 bits); the zero points need each group's sum of x_q.
#include <ATen/ATen.h>
#include <c10/util/Optional.h>

#include <cstdint>

#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512BF16__)
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

namespace {

using bf16 = at::BFloat16;

constexpr int64_t kMaxRows = 4;  // rows summed per pass over the weights
// Software prefetch distances, bytes: every cache line of the weights is asked for this far
// ahead (the int8 head of the default model from a cold cache: 1.53 ms at 512, 1.6-1.9 at
// 1-4 KiB, 1.6 with the hardware prefetcher alone; all int4 linears: 3.7 ms at 2 KiB, 3.8-4.1
// at 512 and 1 KiB, 4.4 alone).
constexpr int64_t kAhead8 = 512, kAhead4 = 2048;
constexpr int64_t kGroup = 32;  // int4 inputs per scale; int8 inputs per tile-order block

// One row of x as integers with |x_q| <= limit and x ~= x_q * scale; a row holding inf or NaN
// gets scale NaN, so its outputs are NaN (as a float matmul's would be, or inf).
float quantize_row(const bf16* x, int64_t k, int limit, int16_t* q) {
  uint16_t top_bits = 0;  // |x| of a bf16 orders as its bits without the sign
  for (int64_t i = 0; i < k; ++i) top_bits = std::max<uint16_t>(top_bits, x[i].x & 0x7FFF);
  if ((top_bits & 0x7F80) == 0x7F80) {  // inf or NaN (-ffast-math would drop std::isfinite)
    std::fill(q, q + k, int16_t(0));
    return std::numeric_limits<float>::quiet_NaN();
  }
  const float top = static_cast<float>(c10::BFloat16(top_bits, c10::BFloat16::from_bits()));
  const float scale = top > 0.f ? top / static_cast<float>(limit) : 1.f;
  for (int64_t i = 0; i < k; ++i) {
    const long v = std::lrintf(static_cast<float>(x[i]) / scale);
    q[i] = static_cast<int16_t>(std::clamp<long>(v, -limit, limit));
  }
  return scale;
}

struct Rows {
  int64_t m, k;
  std::vector<int16_t> q;  // [m][k]
  std::vector<float> scale;
};

Rows quantize(const at::Tensor& x, int limit) {
  const int64_t m = x.size(0), k = x.size(1);
  Rows rows{m, k, std::vector<int16_t>(m * k), std::vector<float>(m)};
  for (int64_t i = 0; i < m; ++i)
    rows.scale[i] = quantize_row(x.data_ptr<bf16>() + i * x.stride(0), k, limit, rows.q.data() + i * k);
  return rows;
}

// out[i, j] = bf16(sums[i, j] * row_scale[i] * (channel_scale[j] or 1) + bias[j]).
at::Tensor finish(const std::vector<float>& sums, const Rows& rows, int64_t n, const float* channel_scale,
                  const c10::optional<at::Tensor>& bias, const at::Tensor& like) {
  at::Tensor out = at::empty({rows.m, n}, like.options());
  at::Tensor b = bias.has_value() ? bias->to(at::kFloat).contiguous() : at::Tensor();
  const float* bd = b.defined() ? b.data_ptr<float>() : nullptr;
  bf16* od = out.data_ptr<bf16>();
  for (int64_t i = 0; i < rows.m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      float v = sums[i * n + j] * rows.scale[i];
      if (channel_scale != nullptr) v *= channel_scale[j];
      od[i * n + j] = static_cast<bf16>(bd != nullptr ? v + bd[j] : v);
    }
  }
  return out;
}

// int8: one 32-channel panel, all rows. Int32 sums are moved to fp32 every 8 blocks (256
// inputs), before 128 pair products of up to 127 * 32767 * 2 could overflow them.
template <int M>
void int8_panel(const int8_t* panel, const int32_t* pairs, int64_t k, float* sums, int64_t n) {
  __m512i acc[M][2];
  __m512 total[M][2];
  for (int r = 0; r < M; ++r)
    for (int h = 0; h < 2; ++h) acc[r][h] = _mm512_setzero_si512(), total[r][h] = _mm512_setzero_ps();
  const int64_t blocks = k / kGroup;
  for (int64_t kb = 0; kb < blocks; ++kb) {
    for (int h = 0; h < 2; ++h) {
      const int8_t* rows = panel + (kb * 2 + h) * 16 * 32;
      for (int line = 0; line < 8; ++line)
        _mm_prefetch(reinterpret_cast<const char*>(rows) + kAhead8 + 64 * line, _MM_HINT_T0);
      for (int j = 0; j < 16; ++j) {
        const __m512i w = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows + j * 32)));
        for (int r = 0; r < M; ++r)
          acc[r][h] = _mm512_dpwssd_epi32(acc[r][h], w, _mm512_set1_epi32(pairs[r * k / 2 + kb * 16 + j]));
      }
    }
    if ((kb + 1) % 8 == 0 || kb + 1 == blocks) {
      for (int r = 0; r < M; ++r)
        for (int h = 0; h < 2; ++h) {
          total[r][h] = _mm512_add_ps(total[r][h], _mm512_cvtepi32_ps(acc[r][h]));
          acc[r][h] = _mm512_setzero_si512();
        }
    }
  }
  for (int r = 0; r < M; ++r)
    for (int h = 0; h < 2; ++h) _mm512_storeu_ps(sums + r * n + h * 16, total[r][h]);
}

// int4: one block of 16 channels, all rows. high/low: x_q's two bytes per input, per row;
// group_sums: per row and group, the sum of x_q.
template <int M>
void int4_block(const uint8_t* codes, const bf16* params, int64_t groups, const int8_t* high,
                const int8_t* low, const float* group_sums, int64_t k, float* sums, int64_t n) {
  const __m512i nibble = _mm512_set1_epi8(0x0F);
  __m512 total[M];
  for (int r = 0; r < M; ++r) total[r] = _mm512_setzero_ps();
  for (int64_t g = 0; g < groups; ++g, codes += 256, params += 32) {
    for (int line = 0; line < 4; ++line)
      _mm_prefetch(reinterpret_cast<const char*>(codes) + kAhead4 + 64 * line, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(params) + 512, _MM_HINT_T0);
    __m512i hi[M], lo[M];
    for (int r = 0; r < M; ++r) hi[r] = _mm512_setzero_si512(), lo[r] = _mm512_setzero_si512();
    for (int i = 0; i < 4; ++i) {
      const __m512i v = _mm512_loadu_si512(codes + i * 64);
      const __m512i first = _mm512_and_si512(v, nibble);
      const __m512i second = _mm512_and_si512(_mm512_srli_epi16(v, 4), nibble);
      for (int r = 0; r < M; ++r) {
        const int32_t* h = reinterpret_cast<const int32_t*>(high + r * k + g * kGroup);
        const int32_t* l = reinterpret_cast<const int32_t*>(low + r * k + g * kGroup);
        hi[r] = _mm512_dpbusd_epi32(hi[r], first, _mm512_set1_epi32(h[i]));
        lo[r] = _mm512_dpbusd_epi32(lo[r], first, _mm512_set1_epi32(l[i]));
        hi[r] = _mm512_dpbusd_epi32(hi[r], second, _mm512_set1_epi32(h[i + 4]));
        lo[r] = _mm512_dpbusd_epi32(lo[r], second, _mm512_set1_epi32(l[i + 4]));
      }
    }
    auto widen = [](const bf16* p) {
      return _mm512_castsi512_ps(_mm512_slli_epi32(
          _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
    };
    const __m512 scale = widen(params), zero = widen(params + 16);
    const __m512 offset = _mm512_fnmadd_ps(_mm512_set1_ps(8.f), scale, zero);  // weight = code * scale + offset
    for (int r = 0; r < M; ++r) {
      const __m512i dot = _mm512_add_epi32(_mm512_slli_epi32(hi[r], 7), lo[r]);
      total[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, total[r]);
      total[r] = _mm512_fmadd_ps(_mm512_set1_ps(group_sums[r * groups + g]), offset, total[r]);
    }
  }
  for (int r = 0; r < M; ++r) _mm512_storeu_ps(sums + r * n, total[r]);
}

template <typename Fn>
void by_rows(int64_t m, Fn fn) {
  switch (m) {
    case 1: fn(std::integral_constant<int, 1>()); break;
    case 2: fn(std::integral_constant<int, 2>()); break;
    case 3: fn(std::integral_constant<int, 3>()); break;
    default: fn(std::integral_constant<int, 4>()); break;
  }
}

void check(const at::Tensor& x, int64_t n, const char* name) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kBFloat16, name, ": x must be bf16 [M, K]");
  TORCH_CHECK(x.stride(1) == 1, name, ": x's rows must be contiguous");
  TORCH_CHECK(x.size(1) % kGroup == 0 && n % 32 == 0, name, ": K and N must be multiples of 32");
}

}  // namespace

bool gemv_available() { return true; }

// out[M, N] = x[M, K] @ (packed * scale)^T + bias, packed in amx_layout.tile_order; made for M
// up to 4 (more rows take a pass over the weights per 4).
at::Tensor int8_gemv(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scale,
                     const c10::optional<at::Tensor>& bias) {
  const int64_t n = scale.numel(), k = x.size(-1);
  check(x, n, "int8_gemv");
  TORCH_CHECK(packed.scalar_type() == at::kChar && packed.numel() == n * k && packed.is_contiguous() &&
                  scale.scalar_type() == at::kFloat && scale.is_contiguous(),
              "int8_gemv: packed must hold N*K int8 and scale N fp32");
  const Rows rows = quantize(x, 32767);
  std::vector<float> sums(rows.m * n);
  const auto* pairs = reinterpret_cast<const int32_t*>(rows.q.data());
  const int8_t* wd = packed.data_ptr<int8_t>();
  for (int64_t r = 0; r < rows.m; r += kMaxRows) {  // more rows read the weights again
    by_rows(std::min(kMaxRows, rows.m - r), [&](auto m) {
#pragma omp parallel for schedule(static)
      for (int64_t p = 0; p < n / 32; ++p)
        int8_panel<decltype(m)::value>(wd + p * 32 * k, pairs + r * k / 2, k, sums.data() + r * n + p * 32, n);
    });
  }
  return finish(sums, rows, n, scale.data_ptr<float>(), bias, x);
}

// out[M, N] = x[M, K] @ dequantized^T + bias (made for M up to 4), from pack_int4_gemv's codes
// ([N/16][K/32][4][64] bytes) and params ([N/16][K/32][2][16] bf16 scales, zero points).
at::Tensor int4_gemv(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& params,
                     const c10::optional<at::Tensor>& bias) {
  const int64_t k = x.size(-1), n = params.numel() * kGroup / 2 / k, groups = k / kGroup;
  check(x, n, "int4_gemv");
  TORCH_CHECK(codes.scalar_type() == at::kByte && codes.numel() * 2 == n * k && codes.is_contiguous() &&
                  params.scalar_type() == at::kBFloat16 && params.is_contiguous(),
              "int4_gemv: codes must hold N*K/2 uint8 and params 2*N*K/32 bf16");
  const Rows rows = quantize(x, 16383);
  std::vector<int8_t> high(rows.m * k), low(rows.m * k);
  std::vector<float> group_sums(rows.m * groups, 0.f);
  for (int64_t i = 0; i < rows.m * k; ++i) {
    const int v = rows.q[i];
    high[i] = static_cast<int8_t>(v >> 7);  // floor: low is 0..127
    low[i] = static_cast<int8_t>(v & 127);
    group_sums[i / kGroup] += static_cast<float>(v);  // exact: |sum| < 2^24
  }
  std::vector<float> sums(rows.m * n);
  const uint8_t* cd = codes.data_ptr<uint8_t>();
  const bf16* pd = params.data_ptr<bf16>();
  for (int64_t r = 0; r < rows.m; r += kMaxRows) {
    by_rows(std::min(kMaxRows, rows.m - r), [&](auto m) {
#pragma omp parallel for schedule(static)
      for (int64_t b = 0; b < n / 16; ++b)
        int4_block<decltype(m)::value>(cd + b * groups * 256, pd + b * groups * 32, groups,
                                       high.data() + r * k, low.data() + r * k,
                                       group_sums.data() + r * groups, k, sums.data() + r * n + b * 16, n);
    });
  }
  return finish(sums, rows, n, nullptr, bias, x);
}
#else  // without AVX-512 VNNI the callers keep to torch's kernels
bool gemv_available() { return false; }

at::Tensor int8_gemv(const at::Tensor&, const at::Tensor&, const at::Tensor&, const c10::optional<at::Tensor>&) {
  TORCH_CHECK(false, "int8_gemv: built for a CPU without AVX-512 VNNI");
  return {};
}
at::Tensor int4_gemv(const at::Tensor&, const at::Tensor&, const at::Tensor&, const c10::optional<at::Tensor>&) {
  TORCH_CHECK(false, "int4_gemv: built for a CPU without AVX-512 VNNI");
  return {};
}
#endif
