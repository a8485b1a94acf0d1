// The decoder layer's element-wise work in bf16, one pass each: RMSNorm with its residual add,
// rotary embedding, SiLU-and-mul. Each op rounds to bf16 where transformers' torch code does
// (after the add, after the normalization, after each product), so results match it except
// where fp32 sums are taken in another order. Launching these as a dozen small torch ops per
// layer cost more than the arithmetic (about 3 ms of a 17 ms one-sequence step).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstdint>
#include <tuple>
#include <vector>

#include "bf16_vec.h"
#include "rotary.h"

namespace {

using bf16 = at::BFloat16;

inline float f(bf16 x) { return static_cast<float>(x); }
inline bf16 r(float x) { return static_cast<bf16>(x); }  // round to nearest even

constexpr int64_t kRowsPerTask = 8;

void check_bf16(const at::Tensor& t, const char* what) {
  TORCH_CHECK(t.scalar_type() == at::kBFloat16, what, ": bfloat16 only");
}

#if defined(__AVX512BF16__)
using namespace dyno_vec;
#endif

// One row of add_rms_norm: total = x + residual (when given), out = weight * bf16(norm(total)).
void norm_row(const bf16* x, const bf16* res, const bf16* w, bf16* total, bf16* out, int64_t dim,
              float eps) {
  int64_t d0 = 0;  // lanes the vector loop covered
  float sum = 0.f;
#if defined(__AVX512BF16__)
  const int64_t vec = dim / kLanes * kLanes;
  __m512 acc = _mm512_setzero_ps();
  for (; d0 < vec; d0 += kLanes) {
    __m512 t = load(x + d0);
    if (res != nullptr) {
      t = round(_mm512_add_ps(t, load(res + d0)));
      store(total + d0, t);
    }
    acc = _mm512_fmadd_ps(t, t, acc);
  }
  sum = _mm512_reduce_add_ps(acc);
#endif
  for (int64_t d = d0; d < dim; ++d) {
    const float t = res != nullptr ? f(r(f(x[d]) + f(res[d]))) : f(x[d]);
    if (res != nullptr) total[d] = r(t);
    sum += t * t;
  }
  const float inv = 1.f / std::sqrt(sum / static_cast<float>(dim) + eps);
  int64_t d = 0;
#if defined(__AVX512BF16__)
  for (const __m512 vinv = _mm512_set1_ps(inv); d < vec; d += kLanes) {
    store(out + d, _mm512_mul_ps(load(w + d), round(_mm512_mul_ps(load(total + d), vinv))));
  }
#endif
  for (; d < dim; ++d) out[d] = r(f(w[d]) * f(r(f(total[d]) * inv)));
}

// One row of silu_and_mul: out = bf16(bf16(silu(gate)) * up).
void silu_row(const bf16* g, const bf16* u, bf16* out, int64_t inner) {
  int64_t d = 0;
#if defined(__AVX512BF16__)
  for (; d + kLanes <= inner; d += kLanes) {
    store(out + d, silu_mul(load(g + d), load(u + d)));
  }
#endif
  for (; d < inner; ++d) {
    const float gv = f(g[d]);
    out[d] = r(f(r(gv / (1.f + std::exp(-gv)))) * f(u[d]));
  }
}

}  // namespace

// (weight * bf16(rmsnorm(total)), total) with total = x + residual (or x when residual is
// undefined). x, residual: [rows, dim]; weight: [dim].
std::tuple<at::Tensor, at::Tensor> add_rms_norm(const at::Tensor& x, const c10::optional<at::Tensor>& residual,
                                                const at::Tensor& weight, double eps) {
  check_bf16(x, "add_rms_norm");
  const int64_t dim = x.size(-1), rows = x.numel() / dim;
  at::Tensor xc = x.contiguous(), wc = weight.contiguous();
  at::Tensor total = residual.has_value() ? at::empty_like(xc) : xc;
  at::Tensor rc;  // held here: a contiguous copy of a strided residual must outlive the loop
  if (residual.has_value()) {
    check_bf16(*residual, "add_rms_norm");
    TORCH_CHECK(residual->sizes() == x.sizes(), "add_rms_norm: x and residual shapes differ");
    rc = residual->contiguous();
  }
  const bf16* rp = rc.defined() ? rc.data_ptr<bf16>() : nullptr;
  at::Tensor out = at::empty_like(xc);
  const bf16 *xp = xc.data_ptr<bf16>(), *wp = wc.data_ptr<bf16>();
  bf16 *tp = total.data_ptr<bf16>(), *op = out.data_ptr<bf16>();
  at::parallel_for(0, rows, kRowsPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      norm_row(xp + i * dim, rp ? rp + i * dim : nullptr, wp, tp + i * dim, op + i * dim, dim,
               static_cast<float>(eps));
    }
  });
  return {out, total};
}

// q * cos + rotate_half(q) * sin, the same for k. q: [rows, heads, head_dim] with each row's
// heads contiguous (a view of the fused QKV output is fine); cos, sin: [rows, 1, head_dim].
static at::Tensor rotate(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t rows = x.size(0), heads = x.size(1), hd = x.size(2);
  TORCH_CHECK(x.stride(2) == 1 && x.stride(1) == hd, "rotary: each row's heads must be contiguous");
  at::Tensor out = at::empty({rows, heads, hd}, x.options());
  const int64_t stride = x.stride(0);
  const bf16 *xp = x.data_ptr<bf16>(), *cp = cos.data_ptr<bf16>(), *sp = sin.data_ptr<bf16>();
  bf16* op = out.data_ptr<bf16>();
  at::parallel_for(0, rows, kRowsPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const bf16 *c = cp + i * hd, *s = sp + i * hd;
      for (int64_t h = 0; h < heads; ++h) {
        dyno_rotary::rotate_head(xp + i * stride + h * hd, c, s, op + (i * heads + h) * hd, hd);
      }
    }
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> rotary(const at::Tensor& q, const at::Tensor& k,
                                          const at::Tensor& cos, const at::Tensor& sin) {
  check_bf16(q, "rotary");
  TORCH_CHECK(cos.is_contiguous() && sin.is_contiguous(), "rotary: cos and sin must be contiguous");
  return {rotate(q, cos, sin), rotate(k, cos, sin)};
}

// bf16(silu(gate)) * up, with x = [gate | up] on the last dim: [rows, 2 * inner] -> [rows, inner].
at::Tensor silu_and_mul(const at::Tensor& x) {
  check_bf16(x, "silu_and_mul");
  const int64_t inner = x.size(-1) / 2, rows = x.numel() / x.size(-1);
  at::Tensor xc = x.contiguous();
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = inner;
  at::Tensor out = at::empty(shape, x.options());
  const bf16* xp = xc.data_ptr<bf16>();
  bf16* op = out.data_ptr<bf16>();
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      silu_row(xp + i * 2 * inner, xp + i * 2 * inner + inner, op + i * inner, inner);
    }
  });
  return out;
}
