// int4 and int8 linears for any number of rows on CPUs with AVX-512 VNNI but no AMX (AMD Zen
// 4/5, older Xeons), where every other path multiplies in bf16.
//
// There, at 32 rows or more, a linear is bound by arithmetic, not by reading its weights: torch's
// bf16 matmul (oneDNN, VDPBF16PS) reaches ~530-950 GFLOPS on two Zen 5 cores, while VPDPBUSD,
// which multiplies 64 byte pairs where VDPBF16PS multiplies 32 bf16 pairs, issues at 1.5x the
// rate: its peak is ~3x bf16's. So the rows become signed bytes with a scale per group of 32
// inputs (row_quant.h quantize_groups8, as llama.cpp's Q8_0), the weights stay unsigned bytes
// (int4 codes, or int8 + 128), and each group's integer sums are scaled once they are done.
// 1.1-1.4 TOPS here: 1.3-2x oneDNN's bf16 matmul of the same layers.
//
// int4 weights in amx_layout.pack_int4_gemv's order, shared with gemv.cpp's few-row kernel: per
// 16 channels and group of 32 inputs, four 64-byte rows whose byte 4c + j holds input 4i + j of
// channel c (low nibble) and input 16 + 4i + j (high), i the row; then the group's 16 scales
// and 16 zero points (bf16). weight = (code - 8) * scale + zero, so
//   out[r, c] = sum_g x_scale[r, g] * (scale[g, c] * sum_k (code - 8) * x_q + zero[g, c] * sum_k x_q).
// int8 weights (one scale per channel) in pack_int8_vnni's order, as weight + 128: each group's
// integer sums start at -128 * sum_k x_q, so they end as sum_k q * x_q, and
//   out[r, c] = scale[c] * sum_g x_scale[r, g] * sum_k q * x_q.
#include <ATen/ATen.h>
#include <c10/util/Optional.h>

#include <cstdint>

#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512BF16__)
#include <immintrin.h>

#include <algorithm>
#include <iterator>
#include <memory>
#include <type_traits>
#include <vector>

#include "bf16_vec.h"
#include "row_quant.h"

namespace {

using bf16 = at::BFloat16;

constexpr int64_t kGroup = 32;    // inputs per scale and zero point
// Rows a register block holds: 12 integer and 12 float totals. 4 rows reached 1.3 TOPS, 8
// spilled (1.2); 6 reach 1.4.
constexpr int64_t kRows = 6;
constexpr int64_t kBlocks = 2;    // 16-channel blocks a register block holds
// Rows per pass over the weights: their bytes stay in L2 while every channel block reads them.
constexpr int64_t kChunkBytes = 512 * 1024;

// The rows as signed bytes, filled in by multiply. Every byte and float is written before it is
// read: left uninitialized (zeroing 2048 rows' bytes had taken ~1% of a prompt step).
struct Rows8 {
  // new T[n], not make_unique: default-initialized, so not zeroed (C++17, as torch builds before
  // 2.13 compile these files)
  explicit Rows8(int64_t m, int64_t k)
      : q(new int8_t[m * k]), scale(new float[m * k / kGroup]), weighted_sums(new float[m * k / kGroup]),
        starts(new int32_t[m * k / kGroup]) {}
  std::unique_ptr<int8_t[]> q;              // [m][k]
  std::unique_ptr<float[]> scale;           // [m][k / kGroup]
  std::unique_ptr<float[]> weighted_sums;   // [m][k / kGroup]: scale * sum of x_q
  std::unique_ptr<int32_t[]> starts;        // [m][k / kGroup]: -Codes::kBias * the sum of x_q
};

// Each group's integer sums start at -bias * sum x_q (block below), stored so: a broadcast from
// memory there, where multiplying and broadcasting from a register had cost 5% of the kernel.
template <typename Codes>
void quantize_row(const at::Tensor& x, int64_t r, Rows8& rows) {
  const int64_t k = x.size(1), groups = k / kGroup;
  dyno_rows::quantize_groups8(x.data_ptr<bf16>() + r * x.stride(0), k, rows.q.get() + r * k,
                              rows.scale.get() + r * groups, rows.weighted_sums.get() + r * groups,
                              rows.starts.get() + r * groups, -Codes::kBias);
}

// The two weight formats, as the block below reads them: per 16 channels and group of 32
// inputs, operands(i) gives the 64-byte VPDPBUSD operands of inputs 4i .. 4i + 3 (first) and
// 16 + 4i .. 16 + 4i + 3 (second) of the 16 channels, as unsigned bytes.
struct Int4Codes {  // pack_int4_gemv: four rows of nibbles a group, then the group's params
  static constexpr int64_t kGroupBytes = 256;
  static constexpr int32_t kBias = 8;  // code - 8 is the weight over its scale, less its zero
  const __m512i nibble = _mm512_set1_epi8(0x0F);
  void operands(const uint8_t* group, int i, __m512i& first, __m512i& second) const {
    const __m512i v = _mm512_loadu_si512(group + i * 64);
    first = _mm512_and_si512(v, nibble);
    second = _mm512_and_si512(_mm512_srli_epi16(v, 4), nibble);
  }
};

struct Int8Codes {  // pack_int8_vnni: eight rows of weight + 128 a group, first and second by turns
  static constexpr int64_t kGroupBytes = 512;
  static constexpr int32_t kBias = 128;
  void operands(const uint8_t* group, int i, __m512i& first, __m512i& second) const {
    first = _mm512_loadu_si512(group + i * 128);
    second = _mm512_loadu_si512(group + i * 128 + 64);
  }
};

// R rows (R <= kRows) by two 16-channel blocks, all groups: the integer sums of one group go
// into the float totals before the next group starts. int4: total = sum_g x_scale * scale * dot
// + weighted sum * zero, bias added; int8: total = sum_g x_scale * dot, and the caller's finish
// multiplies by the channel's scale. kGroups: the group count when known at compile time (0: not),
// so that rows and groups are constant offsets from one address each.
template <typename Codes, int R, int64_t kGroups>
void block(const uint8_t* codes, const bf16* params, int64_t runtime_groups, const int8_t* q,
           const float* row_scale, const float* weighted_sums, const int32_t* starts, __m512 (&total)[R][kBlocks],
           const uint8_t* next_codes) {
  const Codes format;
  const int64_t groups = kGroups > 0 ? kGroups : runtime_groups, k = groups * kGroup;
  const int64_t block_bytes = groups * Codes::kGroupBytes, block_params = groups * 32;
  for (int r = 0; r < R; ++r)
    for (int b = 0; b < kBlocks; ++b) total[r][b] = _mm512_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    // The sums start at -Codes::kBias * sum x_q and so end as sum (code - bias) * x_q, exact.
    // int8: a float total less 128 * sum x after all groups had cancelled a term ~100x the
    // result in fp32; int4: the zero point then multiplies the group's sum of x as it is, where
    // forming offset = zero - 8 * scale had taken an FMA per group and 16 channels (3.5%).
    __m512i dot[R][kBlocks];
    for (int r = 0; r < R; ++r) {
      const __m512i start = _mm512_set1_epi32(starts[r * groups + g]);
      for (int b = 0; b < kBlocks; ++b) dot[r][b] = start;
    }
    // The next pair's group is fetched while this one's sums run: a decode step's weights come
    // from memory, and waiting for them had all int4 linears of the default model at 32 rows
    // take 9.4 ms instead of 7.6 (the lm_head 1.8 instead of 1.4).
    if (next_codes != nullptr) {
      for (int b = 0; b < kBlocks; ++b) {
        const char* next = reinterpret_cast<const char*>(next_codes + b * block_bytes + g * Codes::kGroupBytes);
        for (int64_t line = 0; line < Codes::kGroupBytes; line += 64) _mm_prefetch(next + line, _MM_HINT_T0);
        if constexpr (std::is_same_v<Codes, Int4Codes>)  // int8 has no per-group params
          _mm_prefetch(reinterpret_cast<const char*>(params + (kBlocks + b) * block_params + g * 32), _MM_HINT_T0);
      }
    }
    for (int i = 0; i < 4; ++i) {
      __m512i first[kBlocks], second[kBlocks];
      for (int b = 0; b < kBlocks; ++b) format.operands(codes + b * block_bytes + g * Codes::kGroupBytes, i, first[b], second[b]);
      for (int r = 0; r < R; ++r) {
        const int32_t* row = reinterpret_cast<const int32_t*>(q + r * k + g * kGroup);
        const __m512i a = _mm512_set1_epi32(row[i]), c = _mm512_set1_epi32(row[i + 4]);
        for (int b = 0; b < kBlocks; ++b) {
          dot[r][b] = _mm512_dpbusd_epi32(dot[r][b], first[b], a);
          dot[r][b] = _mm512_dpbusd_epi32(dot[r][b], second[b], c);
        }
      }
    }
    for (int b = 0; b < kBlocks; ++b) {
      if constexpr (std::is_same_v<Codes, Int8Codes>) {
        for (int r = 0; r < R; ++r)
          total[r][b] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[r][b]), _mm512_set1_ps(row_scale[r * groups + g]), total[r][b]);
      } else {
        const bf16* p = params + b * block_params + g * 32;
        const __m512 scale = dyno_vec::load(p), zero = dyno_vec::load(p + 16);
        for (int r = 0; r < R; ++r) {
          const __m512 dot_x = _mm512_mul_ps(_mm512_cvtepi32_ps(dot[r][b]), _mm512_set1_ps(row_scale[r * groups + g]));
          total[r][b] = _mm512_fmadd_ps(dot_x, scale, total[r][b]);
          total[r][b] = _mm512_fmadd_ps(_mm512_set1_ps(weighted_sums[r * groups + g]), zero, total[r][b]);
        }
      }
    }
  }
}

// Every row block of every pair of channel blocks, rows in chunks that stay in L2: block's
// totals, then finish(totals, rows, first row, first channel) stores them.
template <typename Codes, typename Finish>
void multiply(const at::Tensor& x, Rows8& rows, int64_t n, const uint8_t* codes, const bf16* params, Finish finish) {
  const int64_t m = x.size(0), k = x.size(1), groups = k / kGroup, pairs = n / (16 * kBlocks);
  const int64_t chunk = std::max<int64_t>(kRows, kChunkBytes / k / kRows * kRows);
  // One parallel region for the rows' bytes and the products, each thread on the same pairs in
  // every chunk (static) and going on to the next chunk without waiting for the others. With a
  // parallel region for each and a barrier per chunk, the threads' waits in libgomp had been
  // 4.8% of a 2048-token prompt step's samples on Zen 5 (3.4% after); a decode step forks and
  // joins four times a layer.
#pragma omp parallel
  {
#pragma omp for schedule(static)
    for (int64_t r = 0; r < m; ++r) quantize_row<Codes>(x, r, rows);
    for (int64_t r0 = 0; r0 < m; r0 += chunk) {
      const int64_t r1 = std::min(m, r0 + chunk);
      // rows in blocks of as even a size as kRows allows: 32 rows as 6, 6, 5, 5, 5, 5 rather
      // than five sixes and a two, which cost nearly as much as a six
      const int64_t blocks = (r1 - r0 + kRows - 1) / kRows;
#pragma omp for schedule(static) nowait
      for (int64_t p = 0; p < pairs; ++p) {
        const int64_t c0 = p * 16 * kBlocks;
        const uint8_t* pair_codes = codes + c0 / 16 * groups * Codes::kGroupBytes;
        for (int64_t j = 0, r = r0; j < blocks; ++j) {
          const int64_t size = (r1 - r0) / blocks + (j < (r1 - r0) % blocks ? 1 : 0);
          dyno_rows::by_rows<kRows>(size, [&](auto rows_here) {
            constexpr int R = decltype(rows_here)::value;
            __m512 total[R][kBlocks];
            const bool fetch = j == 0 && p + 1 < pairs;
            auto run = [&](auto known_groups) {
              block<Codes, R, decltype(known_groups)::value>(
                  pair_codes, params != nullptr ? params + c0 * groups * 2 : nullptr, groups, rows.q.get() + r * k,
                  rows.scale.get() + r * groups, rows.weighted_sums.get() + r * groups, rows.starts.get() + r * groups,
                  total, fetch ? pair_codes + kBlocks * groups * Codes::kGroupBytes : nullptr);
            };
            // the default model's widths, 576 and 1536 inputs (2048 x 576 x 3072: 5.51 -> 5.29 ms
            // with the starts above, medians of four alternating runs on Zen 5)
            if (groups == 18) {
              run(std::integral_constant<int64_t, 18>());
            } else if (groups == 48) {
              run(std::integral_constant<int64_t, 48>());
            } else {
              run(std::integral_constant<int64_t, 0>());
            }
            finish(total, r, c0);
          });
          r += size;
        }
      }
    }
  }
}

void check_rows(const at::Tensor& x, const char* name) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kBFloat16 && x.stride(1) == 1, name,
              ": x must be bf16 [M, K] with contiguous rows");
  TORCH_CHECK(x.size(1) % kGroup == 0, name, ": K must be a multiple of 32");
}

const float* float_bias(const c10::optional<at::Tensor>& bias, at::Tensor& holder) {
  if (!bias.has_value()) return nullptr;
  holder = bias->to(at::kFloat).contiguous();
  return holder.data_ptr<float>();
}

}  // namespace

bool vnni_available() { return true; }

// out[M, N] = x[M, K] @ dequantized^T + bias, from pack_int4_gemv's codes ([N/16][K/32][4][64]
// bytes) and params ([N/16][K/32][2][16] bf16 scales, zero points). With silu_mul, a gate/up
// weight interleaved by sixteens (amx_layout.interleave_gate_up), and out [M, N / 2] =
// bf16(silu(gate)) * up, the gate and up sums rounded to bf16 first as the plain product and
// silu_and_mul would round them.
at::Tensor vnni_int4_linear(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& params,
                            const c10::optional<at::Tensor>& bias, bool silu_mul) {
  check_rows(x, "vnni_int4_linear");
  const int64_t m = x.size(0), k = x.size(1);
  const int64_t n = params.numel() * kGroup / 2 / k;
  TORCH_CHECK(n % (16 * kBlocks) == 0 && codes.scalar_type() == at::kByte && codes.numel() * 2 == n * k &&
                  codes.is_contiguous() && params.scalar_type() == at::kBFloat16 && params.is_contiguous(),
              "vnni_int4_linear: codes must hold N*K/2 uint8 and params 2*N*K/32 bf16, N a multiple of 32");
  const int64_t out_n = silu_mul ? n / 2 : n;
  at::Tensor out = at::empty({m, out_n}, x.options());
  if (m == 0) return out;
  at::Tensor holder;
  const float* bd = float_bias(bias, holder);
  bf16* od = out.data_ptr<bf16>();
  Rows8 rows(m, k);
  multiply<Int4Codes>(x, rows, n, codes.data_ptr<uint8_t>(), params.data_ptr<bf16>(), [&](auto& total, int64_t r, int64_t c0) {
    for (int i = 0; i < static_cast<int>(std::size(total)); ++i) {
      __m512 v[kBlocks];
      for (int b = 0; b < kBlocks; ++b)
        v[b] = bd != nullptr ? _mm512_add_ps(total[i][b], _mm512_loadu_ps(bd + c0 + b * 16)) : total[i][b];
      if (silu_mul) {  // the pair's first block is 16 gates, its second their ups
        dyno_vec::store(od + (r + i) * out_n + c0 / 2, dyno_vec::silu_mul(dyno_vec::round(v[0]), dyno_vec::round(v[1])));
      } else {
        for (int b = 0; b < kBlocks; ++b) dyno_vec::store(od + (r + i) * out_n + c0 + b * 16, v[b]);
      }
    }
  });
  return out;
}

// out[M, N] = x[M, K] @ (q * scale)^T + bias, from pack_int8_vnni's codes ([N/16][K/32][8][64]
// bytes of q + 128) and scale ([N] fp32).
at::Tensor vnni_int8_linear(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scale,
                            const c10::optional<at::Tensor>& bias) {
  check_rows(x, "vnni_int8_linear");
  const int64_t m = x.size(0), k = x.size(1), n = scale.numel();
  TORCH_CHECK(n % (16 * kBlocks) == 0 && codes.scalar_type() == at::kByte && codes.numel() == n * k &&
                  codes.is_contiguous() && scale.scalar_type() == at::kFloat && scale.is_contiguous(),
              "vnni_int8_linear: codes must hold N*K uint8 and scale N fp32, N a multiple of 32");
  at::Tensor out = at::empty({m, n}, x.options());
  if (m == 0) return out;
  at::Tensor holder;
  const float* bd = float_bias(bias, holder);
  const float* sd = scale.data_ptr<float>();
  bf16* od = out.data_ptr<bf16>();
  Rows8 rows(m, k);
  multiply<Int8Codes>(x, rows, n, codes.data_ptr<uint8_t>(), nullptr, [&](auto& total, int64_t r, int64_t c0) {
    for (int i = 0; i < static_cast<int>(std::size(total)); ++i) {
      for (int b = 0; b < kBlocks; ++b) {
        __m512 v = _mm512_mul_ps(total[i][b], _mm512_loadu_ps(sd + c0 + b * 16));
        if (bd != nullptr) v = _mm512_add_ps(v, _mm512_loadu_ps(bd + c0 + b * 16));
        dyno_vec::store(od + (r + i) * n + c0 + b * 16, v);
      }
    }
  });
  return out;
}
#else  // without AVX-512 VNNI the callers keep to torch's kernels
bool vnni_available() { return false; }

at::Tensor vnni_int4_linear(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                            const c10::optional<at::Tensor>&, bool) {
  TORCH_CHECK(false, "vnni_int4_linear: built for a CPU without AVX-512 VNNI");
  return {};
}

at::Tensor vnni_int8_linear(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                            const c10::optional<at::Tensor>&) {
  TORCH_CHECK(false, "vnni_int8_linear: built for a CPU without AVX-512 VNNI");
  return {};
}
#endif
