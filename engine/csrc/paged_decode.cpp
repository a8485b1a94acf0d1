// Paged decode attention for the CPU: one query token per sequence, keys and values read in
// place from the block pool (no gathered copy), fp32 accumulation, grouped-query heads.
//
// Each sequence is one task: it scores its context for every head, then takes the softmax and
// the weighted sum of values. Positions outside [ctx_len - window, ctx_len) are never read.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace {

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

// One sequence, all heads: each cached position's keys (then values) for every kv head are
// one contiguous row of the pool, read once, front to back.
template <typename T>
void decode_seq(const T* q, const T* k_pool, const T* v_pool, const int64_t* table, int64_t first,
                int64_t ctx_len, int64_t block_size, int64_t num_heads, int64_t num_kv_heads,
                int64_t head_dim, float scale, T* out, std::vector<float>& scores,
                std::vector<float>& qf, std::vector<float>& row, std::vector<float>& acc) {
  const int64_t n = ctx_len - first, group = num_heads / num_kv_heads;
  const int64_t kv_stride = num_kv_heads * head_dim;
  scores.resize(static_cast<size_t>(num_heads * n));
  load_row(q, qf.data(), num_heads * head_dim);
  for (int64_t t = first; t < ctx_len; ++t) {
    const int64_t slot = table[t / block_size] * block_size + t % block_size;
    load_row(k_pool + slot * kv_stride, row.data(), kv_stride);
    for (int64_t h = 0; h < num_heads; ++h) {
      const float* __restrict__ qh = qf.data() + h * head_dim;
      const float* __restrict__ r = row.data() + (h / group) * head_dim;
      float dot = 0.f;
#pragma omp simd reduction(+ : dot)
      for (int64_t d = 0; d < head_dim; ++d) dot += qh[d] * r[d];
      scores[h * n + (t - first)] = dot * scale;
    }
  }
  for (int64_t h = 0; h < num_heads; ++h) {
    float* s = scores.data() + h * n;
    const float m = *std::max_element(s, s + n);
    // Separate map and reduction loops: both vectorize (a fused one does not).
    for (int64_t i = 0; i < n; ++i) s[i] = std::exp(s[i] - m);
    float sum = 0.f;
    for (int64_t i = 0; i < n; ++i) sum += s[i];
    const float inv = 1.f / sum;
    for (int64_t i = 0; i < n; ++i) s[i] *= inv;
  }
  std::fill(acc.begin(), acc.end(), 0.f);
  for (int64_t t = first; t < ctx_len; ++t) {
    const int64_t slot = table[t / block_size] * block_size + t % block_size;
    load_row(v_pool + slot * kv_stride, row.data(), kv_stride);
    for (int64_t h = 0; h < num_heads; ++h) {
      const float p = scores[h * n + (t - first)];
      float* __restrict__ a = acc.data() + h * head_dim;
      const float* __restrict__ r = row.data() + (h / group) * head_dim;
#pragma omp simd
      for (int64_t d = 0; d < head_dim; ++d) a[d] += p * r[d];
    }
  }
  for (int64_t i = 0; i < num_heads * head_dim; ++i) out[i] = static_cast<T>(acc[i]);
}

template <typename T>
void run(const at::Tensor& q, const at::Tensor& kv, const at::Tensor& table,
         const at::Tensor& ctx_lens, int64_t block_size, int64_t window, double scale,
         at::Tensor& out) {
  const int64_t num_seqs = q.size(0), num_heads = q.size(1), head_dim = q.size(2);
  const int64_t num_kv_heads = kv.size(2), num_slots = kv.size(1);
  const int64_t max_blocks = table.size(1);
  const T* q_ptr = q.data_ptr<T>();
  const T* k_pool = kv.data_ptr<T>();
  const T* v_pool = k_pool + num_slots * num_kv_heads * head_dim;
  const int64_t* table_ptr = table.data_ptr<int64_t>();
  const int64_t* lens = ctx_lens.data_ptr<int64_t>();
  T* out_ptr = out.data_ptr<T>();
  at::parallel_for(0, num_seqs, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores, qf(num_heads * head_dim), row(num_kv_heads * head_dim),
        acc(num_heads * head_dim);
    for (int64_t s = begin; s < end; ++s) {
      const int64_t len = lens[s];
      const int64_t first = window > 0 ? std::max<int64_t>(0, len - window) : 0;
      const int64_t off = s * num_heads * head_dim;
      decode_seq<T>(q_ptr + off, k_pool, v_pool, table_ptr + s * max_blocks, first, len,
                    block_size, num_heads, num_kv_heads, head_dim, static_cast<float>(scale),
                    out_ptr + off, scores, qf, row, acc);
    }
  });
}

}  // namespace

// q: [num_seqs, num_heads, head_dim]; kv: [2, num_slots, num_kv_heads, head_dim], contiguous;
// table: [num_seqs, max_blocks] int64; ctx_lens: [num_seqs] int64. window <= 0: no window.
at::Tensor paged_decode(const at::Tensor& q, const at::Tensor& kv, const at::Tensor& table,
                        const at::Tensor& ctx_lens, int64_t block_size, int64_t window,
                        double scale) {
  TORCH_CHECK(kv.is_contiguous() && table.is_contiguous() && ctx_lens.is_contiguous(),
              "paged_decode: kv, table and ctx_lens must be contiguous");
  TORCH_CHECK(q.scalar_type() == kv.scalar_type(), "paged_decode: q and kv dtypes differ");
  TORCH_CHECK(q.size(1) % kv.size(2) == 0, "paged_decode: heads not a multiple of kv heads");
  at::Tensor qc = q.contiguous();
  at::Tensor out = at::empty_like(qc);
  if (q.scalar_type() == at::kFloat) {
    run<float>(qc, kv, table, ctx_lens, block_size, window, scale, out);
  } else {
    TORCH_CHECK(q.scalar_type() == at::kBFloat16, "paged_decode: float32 or bfloat16 only");
    run<at::BFloat16>(qc, kv, table, ctx_lens, block_size, window, scale, out);
  }
  return out;
}
