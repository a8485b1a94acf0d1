// int4 linears for a few rows (a decode step of one to four sequences): the weights stay
// integers and the rows are quantized instead, summed with VNNI integer dot products.
//
// Such a step reads every weight once and does one multiply-add with it, so it should take the
// weights' bytes over memory bandwidth. Turning the weights into floats first costs more than
// the read: from a cold cache torch's int4 kernel takes 5.3-5.5 ms for all linears of the
// default model (60 MB: 11 GB/s, where a plain sum reads 18) and the AMX kernel, which converts
// each code on its own, 6-7 ms. Here each row of x becomes integers (row_quant.h: 15 bits and a
// scale per row, as two signed bytes), and VPDPBUSD multiplies four codes by four of them in
// one instruction: 3.7 ms.
//
// Weights in amx_layout.pack_int4_gemv's order: per 16 channels and quantization group of 32
// inputs, four 64-byte rows whose byte 4c + j holds input 4i + j of channel c (low nibble) and
// input 16 + 4i + j (high), i the row; then the 16 scales and 16 zero points (bf16). Codes are
// unsigned, as VPDPBUSD wants its first operand; the zero points need each group's sum of x_q.
#include <ATen/ATen.h>
#include <c10/util/Optional.h>

#include <cstdint>

#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512BF16__)
#include <immintrin.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "bf16_vec.h"
#include "row_quant.h"

namespace {

using bf16 = at::BFloat16;

constexpr int64_t kMaxRows = 4;  // rows summed per pass over the weights
// Every cache line of the weights is asked for this many bytes ahead: all int4 linears of the
// default model from a cold cache took 3.7 ms at 2 KiB, 3.8-4.1 at 0.5 and 1 KiB, and 4.4 with
// the hardware prefetcher alone.
constexpr int64_t kAhead = 2048;
constexpr int64_t kGroup = 32;  // inputs per scale and zero point

// out[i, j] = bf16(sums[i, j] * row_scale[i] + bias[j]).
at::Tensor finish(const std::vector<float>& sums, const dyno_rows::Rows& rows, int64_t n,
                  const c10::optional<at::Tensor>& bias, const at::Tensor& like) {
  at::Tensor out = at::empty({rows.m, n}, like.options());
  at::Tensor b = bias.has_value() ? bias->to(at::kFloat).contiguous() : at::Tensor();
  const float* bd = b.defined() ? b.data_ptr<float>() : nullptr;
  bf16* od = out.data_ptr<bf16>();
  for (int64_t i = 0; i < rows.m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      const float v = sums[i * n + j] * rows.scale[i];
      od[i * n + j] = static_cast<bf16>(bd != nullptr ? v + bd[j] : v);
    }
  }
  return out;
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
      _mm_prefetch(reinterpret_cast<const char*>(codes) + kAhead + 64 * line, _MM_HINT_T0);
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
    const __m512 scale = dyno_vec::load(params), zero = dyno_vec::load(params + 16);
    const __m512 offset = _mm512_fnmadd_ps(_mm512_set1_ps(8.f), scale, zero);  // weight = code * scale + offset
    for (int r = 0; r < M; ++r) {
      const __m512i dot = _mm512_add_epi32(_mm512_slli_epi32(hi[r], 7), lo[r]);
      total[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, total[r]);
      total[r] = _mm512_fmadd_ps(_mm512_set1_ps(group_sums[r * groups + g]), offset, total[r]);
    }
  }
  for (int r = 0; r < M; ++r) _mm512_storeu_ps(sums + r * n, total[r]);
}

void check(const at::Tensor& x, int64_t n, const char* name) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kBFloat16, name, ": x must be bf16 [M, K]");
  TORCH_CHECK(x.stride(1) == 1, name, ": x's rows must be contiguous");
  TORCH_CHECK(x.size(1) % kGroup == 0 && n % 32 == 0, name, ": K and N must be multiples of 32");
}

}  // namespace

bool gemv_available() { return true; }

// out[M, N] = x[M, K] @ dequantized^T + bias (made for M up to 4), from pack_int4_gemv's codes
// ([N/16][K/32][4][64] bytes) and params ([N/16][K/32][2][16] bf16 scales, zero points).
at::Tensor int4_gemv(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& params,
                     const c10::optional<at::Tensor>& bias) {
  const int64_t k = x.size(-1), n = params.numel() * kGroup / 2 / k, groups = k / kGroup;
  check(x, n, "int4_gemv");
  TORCH_CHECK(codes.scalar_type() == at::kByte && codes.numel() * 2 == n * k && codes.is_contiguous() &&
                  params.scalar_type() == at::kBFloat16 && params.is_contiguous(),
              "int4_gemv: codes must hold N*K/2 uint8 and params 2*N*K/32 bf16");
  const dyno_rows::Rows rows = dyno_rows::quantize(x, x.size(0), k);
  std::vector<float> group_sums(rows.m * groups, 0.f);
  for (int64_t i = 0; i < rows.m * k; ++i)  // exact: |sum| < 2^24
    group_sums[i / kGroup] += static_cast<float>(128 * rows.high[i] + rows.low[i]);
  std::vector<float> sums(rows.m * n);
  const uint8_t* cd = codes.data_ptr<uint8_t>();
  const bf16* pd = params.data_ptr<bf16>();
  for (int64_t r = 0; r < rows.m; r += kMaxRows) {
    dyno_rows::by_rows<kMaxRows>(std::min(kMaxRows, rows.m - r), [&](auto m) {
#pragma omp parallel for schedule(static)
      for (int64_t b = 0; b < n / 16; ++b)
        int4_block<decltype(m)::value>(cd + b * groups * 256, pd + b * groups * 32, groups,
                                       rows.high.data() + r * k, rows.low.data() + r * k,
                                       group_sums.data() + r * groups, k, sums.data() + r * n + b * 16, n);
    });
  }
  return finish(sums, rows, n, bias, x);
}
#else  // without AVX-512 VNNI the callers keep to torch's kernels
bool gemv_available() { return false; }

at::Tensor int4_gemv(const at::Tensor&, const at::Tensor&, const at::Tensor&, const c10::optional<at::Tensor>&) {
  TORCH_CHECK(false, "int4_gemv: built for a CPU without AVX-512 VNNI");
  return {};
}
#endif
