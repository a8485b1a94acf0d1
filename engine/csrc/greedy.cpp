// Greedy sampling's argmax over each row of bf16 logits, read in place. torch takes the row
// maximum of an fp32 copy (0.16 ms to convert and 0.37 ms to reduce at 32 rows of a 49k
// vocabulary); one pass here. The same token as torch's max(-1).indices: the first index of
// the largest value, or of the first NaN in a row that holds one.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdint>

#include "bf16_vec.h"

namespace {

using bf16 = at::BFloat16;

// From the bits: -ffast-math lets the compiler assume std::isnan is always false.
inline bool is_nan(bf16 x) { return (x.x & 0x7fff) > 0x7f80; }

int64_t argmax_scalar(const bf16* row, int64_t n) {
  int64_t best = 0;
  float top = static_cast<float>(row[0]);
  for (int64_t i = 0; i < n; ++i) {
    if (is_nan(row[i])) return i;
    const float v = static_cast<float>(row[i]);
    if (v > top) top = v, best = i;
  }
  return best;
}

#if defined(__AVX512BF16__)
// Each lane keeps its first largest value and that value's index; the lanes are merged at the
// end, the smallest index winning a tie. A NaN anywhere hands the row to the scalar loop.
int64_t argmax_row(const bf16* row, int64_t n) {
  using namespace dyno_vec;
  const int64_t vec = n / kLanes * kLanes;
  if (vec == 0) return argmax_scalar(row, n);
  __m512 top = load(row);
  __m512i at = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  __m512i idx = at;
  const __m512i step = _mm512_set1_epi32(kLanes);
  __mmask16 nan = _mm512_cmp_ps_mask(top, top, _CMP_UNORD_Q);
  for (int64_t d = kLanes; d < vec; d += kLanes) {
    idx = _mm512_add_epi32(idx, step);
    const __m512 v = load(row + d);
    nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    const __mmask16 up = _mm512_cmp_ps_mask(v, top, _CMP_GT_OQ);
    top = _mm512_mask_blend_ps(up, top, v);
    at = _mm512_mask_blend_epi32(up, at, idx);
  }
  if (nan) return argmax_scalar(row, n);
  const float best = _mm512_reduce_max_ps(top);
  const __mmask16 is_best = _mm512_cmp_ps_mask(top, _mm512_set1_ps(best), _CMP_EQ_OQ);
  int64_t found = _mm512_mask_reduce_min_epi32(is_best, at);
  for (int64_t d = vec; d < n; ++d) {  // the tail comes after every vector index: strictly greater wins
    if (is_nan(row[d])) return argmax_scalar(row, n);
    const float v = static_cast<float>(row[d]);
    if (v > static_cast<float>(row[found])) found = d;
  }
  return found;
}
#else
int64_t argmax_row(const bf16* row, int64_t n) { return argmax_scalar(row, n); }
#endif

}  // namespace

// logits: [rows, vocab] bf16 with contiguous rows -> [rows] int64.
at::Tensor argmax_rows(const at::Tensor& logits) {
  TORCH_CHECK(logits.dim() == 2 && logits.scalar_type() == at::kBFloat16 && logits.stride(1) == 1 &&
                  logits.size(1) > 0,
              "argmax_rows: logits must be [rows, vocab] bf16 with contiguous rows");
  const int64_t rows = logits.size(0), n = logits.size(1), stride = logits.stride(0);
  at::Tensor out = at::empty({rows}, logits.options().dtype(at::kLong));
  const bf16* lp = logits.data_ptr<bf16>();
  int64_t* op = out.data_ptr<int64_t>();
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) op[i] = argmax_row(lp + i * stride, n);
  });
  return out;
}
