// Prompt-sized linears on AMX: bf16 activations times a bf16 weight in tile order
// (amx_layout.tile_order), for batches of hundreds to thousands of rows.
//
// amx_linear.cpp's kernel suits a few dozen rows: each thread streams its weight panels once
// and every panel goes over all the rows, so at prompt sizes the activations are read again
// from L3 for each panel. Here the rows go in blocks small enough to stay in each core's L2
// while the threads take turns of panels over them, and a finished 32 x 32 block is converted
// to bf16 while the next one's tile products run. With the gate and up projections interleaved
// by 16 channels (amx_layout.interleave_gate_up), a block holds both halves of 16 outputs of
// SiLU-and-mul, which is then applied on the way out: the [rows, 2 * inner] intermediate is
// never written.
#include <ATen/ATen.h>
#include <c10/util/Optional.h>
#include <omp.h>

#if defined(__x86_64__)
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "amx_tiles.h"
#include "bf16_vec.h"

namespace {

using bf16 = at::BFloat16;

using dyno_amx::kKBlock;
using dyno_amx::kPanel;  // output channels of a block
using dyno_amx::kRows;
using dyno_amx::kWeightBlock;
constexpr int64_t kBlockRows = 2 * kRows;
// Rows per L2 block, by their bytes: leaves room in the 2 MiB L2 for the panels streaming past.
constexpr int64_t kL2RowBytes = 512 * 1024;
constexpr int64_t kSplitRowsFrom = 512;

// A finished block's sums (tiles 0-3 stored as [32 rows][32 channels] fp32) on their way out.
struct Finished {
  const float* c = nullptr;
  int64_t rows = 0;
  bf16* out = nullptr;  // the block's first output
  const float* bias = nullptr;  // 32 fp32, or null
};

__attribute__((target("avx512f,avx512bw,avx512bf16")))
inline __m512 bias_at(const float* bias, int64_t j) {
  return bias == nullptr ? _mm512_setzero_ps() : _mm512_loadu_ps(bias + j);
}

// Row i of a finished block as 32 bf16 outputs (n: the output's row stride).
__attribute__((target("avx512f,avx512bw,avx512bf16")))
inline void store_row(const Finished& f, int64_t i, int64_t n) {
  const __m512 lo = _mm512_add_ps(_mm512_load_ps(f.c + i * kPanel), bias_at(f.bias, 0));
  const __m512 hi = _mm512_add_ps(_mm512_load_ps(f.c + i * kPanel + 16), bias_at(f.bias, 16));
  _mm512_storeu_si512(f.out + i * n, reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(hi, lo)));
}

// Row i of a finished gate/up block as 16 outputs of bf16(bf16(silu(gate)) * up), the gate and
// up sums each rounded to bf16 first, as the separate matmul and silu_and_mul would have them.
__attribute__((target("avx512f,avx512bw,avx512bf16")))
inline void store_silu_row(const Finished& f, int64_t i, int64_t n) {
  using namespace dyno_vec;
  const __m512 gate = round(_mm512_add_ps(_mm512_load_ps(f.c + i * kPanel), bias_at(f.bias, 0)));
  const __m512 up = round(_mm512_add_ps(_mm512_load_ps(f.c + i * kPanel + 16), bias_at(f.bias, 16)));
  store(f.out + i * n, silu_mul(gate, up));
}

template <bool kSilu>
inline void drain(const Finished& f, int64_t from, int64_t to, int64_t n) {
  for (int64_t i = from; i < std::min(to, f.rows); ++i) {
    if (kSilu) {
      store_silu_row(f, i, n);
    } else {
      store_row(f, i, n);
    }
  }
}

// One 32 x 32 block: rows x (stride: row pitch in elements) times a panel w, into tiles 0-3;
// the previous block (`done`) goes out a few rows per input block meanwhile, so the vector
// units work beside the tile unit. Then the sums land in c. The lines this block's outputs go
// to (dest, row pitch n) are fetched for writing now: left to the stores, each waited on its
// read from memory, and a 2048 x 3072 output took 1.08 instead of 1.38 TFLOPS on one core.
template <bool kSilu>
__attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512bf16")))
void block(const bf16* x, int64_t stride, const bf16* w, int64_t k, const Finished& done, int64_t n,
           bf16* dest, float* c) {
  _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
  const int64_t steps = k / kKBlock, per_step = (kBlockRows + steps - 1) / steps;
  for (int64_t kb = 0; kb < steps; ++kb) {
    for (int64_t i = kb * per_step; i < std::min(kBlockRows, (kb + 1) * per_step); ++i) {
      _mm_prefetch(reinterpret_cast<const char*>(dest + i * n), _MM_HINT_ET0);  // never faults
    }
    const bf16* b = w + kb * kWeightBlock;
    _tile_loadd(4, x + kb * kKBlock, stride * 2);
    _tile_loadd(6, b, 64);
    _tile_loadd(7, b + kWeightBlock / 2, 64);
    _tile_dpbf16ps(0, 4, 6); _tile_dpbf16ps(1, 4, 7);
    _tile_loadd(5, x + kRows * stride + kb * kKBlock, stride * 2);
    _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7);
    drain<kSilu>(done, kb * per_step, (kb + 1) * per_step, n);
  }
  _tile_stored(0, c, kPanel * 4); _tile_stored(1, c + 16, kPanel * 4);
  _tile_stored(2, c + kRows * kPanel, kPanel * 4); _tile_stored(3, c + kRows * kPanel + 16, kPanel * 4);
}

// Which rows and panels a thread takes. From kSplitRowsFrom rows on, the threads split the rows
// (each reads the whole weight, from L3 after the first), the way the element-wise kernels
// around a linear split theirs: each core then reads its own outputs from its own L2. Split by
// panels instead, every row crossed cores twice a linear, and the norm, rotary and attention
// beside the linears took ~20% longer in a 2048-token step. Fewer rows split the panels, so the
// weight is read once.
struct Share {
  int64_t row_begin, row_end, panel_begin, panel_end;
};

Share share_of(int64_t m, int64_t panels, int64_t t, int64_t threads) {
  if (m < kSplitRowsFrom) return {0, m, panels * t / threads, panels * (t + 1) / threads};
  const int64_t blocks = (m + kBlockRows - 1) / kBlockRows;
  return {std::min(m, blocks * t / threads * kBlockRows), std::min(m, blocks * (t + 1) / threads * kBlockRows),
          0, panels};
}

template <bool kSilu>
void multiply(const bf16* x, int64_t m, int64_t k, const bf16* w, int64_t n, const float* bias, bf16* out) {
  const int64_t panels = n / kPanel, out_n = kSilu ? n / 2 : n, out_cols = kSilu ? kPanel / 2 : kPanel;
  const int64_t l2_rows = std::max<int64_t>(kBlockRows, kL2RowBytes / (2 * k) / kBlockRows * kBlockRows);
  const int64_t full = m / kBlockRows * kBlockRows;
#pragma omp parallel
  {
    dyno_amx::configure();
    alignas(64) float c[2][kBlockRows * kPanel];
    const Share s = share_of(m, panels, omp_get_thread_num(), omp_get_num_threads());
    // the last rows, padded with zeros to a whole block: tiles read 32 rows
    bf16* tail = nullptr;
    if (full < s.row_end) {
      tail = static_cast<bf16*>(std::aligned_alloc(64, kBlockRows * k * 2));
      std::memset(tail, 0, kBlockRows * k * 2);
      std::memcpy(tail, x + full * k, (m - full) * k * 2);
    }
    Finished done;
    int64_t turn = 0;
    for (int64_t r0 = s.row_begin; r0 < s.row_end; r0 += l2_rows) {
      for (int64_t p = s.panel_begin; p < s.panel_end; ++p) {
        for (int64_t r = r0; r < std::min(s.row_end, r0 + l2_rows); r += kBlockRows) {
          float* cc = c[turn++ % 2];
          bf16* dest = out + r * out_n + p * out_cols;
          block<kSilu>(r >= full ? tail : x + r * k, k, w + p * k * kPanel, k, done, out_n, dest, cc);
          done = Finished{cc, std::min(kBlockRows, m - r), dest, bias == nullptr ? nullptr : bias + p * kPanel};
        }
      }
    }
    drain<kSilu>(done, 0, kBlockRows, out_n);
    std::free(tail);
    dyno_amx::release();
  }
}

}  // namespace

// out[M, N] = x[M, K] @ weight^T + bias, weight bf16 [N, K] in amx_layout.tile_order's order.
// With silu_mul, the weight is a gate/up pair in amx_layout.interleave_gate_up's order and out
// is [M, N / 2] = bf16(silu(gate)) * up.
at::Tensor amx_gemm(const at::Tensor& x, const at::Tensor& packed, int64_t n,
                    const c10::optional<at::Tensor>& bias, bool silu_mul) {
  TORCH_CHECK(dyno_amx::permitted(), "amx_gemm: this CPU or kernel offers no AMX");
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kBFloat16, "amx_gemm: x must be bf16 [M, K]");
  const int64_t m = x.size(0), k = x.size(1);
  TORCH_CHECK(k % kKBlock == 0 && n % kPanel == 0, "amx_gemm: K and N must be multiples of 32");
  TORCH_CHECK(packed.scalar_type() == at::kBFloat16 && packed.numel() == n * k && packed.is_contiguous(),
              "amx_gemm: packed must hold N*K bf16");
  const at::Tensor xc = x.contiguous();
  const at::Tensor b = bias.has_value() ? bias->to(at::kFloat).contiguous() : at::Tensor();
  at::Tensor out = at::empty({m, silu_mul ? n / 2 : n}, x.options());
  if (m == 0) return out;
  const float* bp = b.defined() ? b.data_ptr<float>() : nullptr;
  if (silu_mul) {
    multiply<true>(xc.data_ptr<bf16>(), m, k, packed.data_ptr<bf16>(), n, bp, out.data_ptr<bf16>());
  } else {
    multiply<false>(xc.data_ptr<bf16>(), m, k, packed.data_ptr<bf16>(), n, bp, out.data_ptr<bf16>());
  }
  return out;
}
#else
at::Tensor amx_gemm(const at::Tensor&, const at::Tensor&, int64_t, const c10::optional<at::Tensor>&, bool) {
  TORCH_CHECK(false, "dyno's AMX kernels: not an x86 CPU");
  return {};
}
#endif
