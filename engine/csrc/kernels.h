// The kernels' C++ entry points, each defined in its own source file: bound for Python in
// bindings.cpp, and called directly by decode_stack.cpp.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Optional.h>

#include <tuple>

at::Tensor paged_decode(const at::Tensor& q, const at::Tensor& kv, const at::Tensor& table,
                        const at::Tensor& ctx_lens, int64_t block_size, int64_t window,
                        double scale, double k_scale, double v_scale);
at::Tensor paged_decode_qkv(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin, at::Tensor& kv,
                            const at::Tensor& slots, const at::Tensor& table, const at::Tensor& ctx_lens,
                            int64_t block_size, int64_t num_heads, int64_t window, double scale,
                            double k_scale, double v_scale);
std::tuple<at::Tensor, at::Tensor> add_rms_norm(const at::Tensor& x, const c10::optional<at::Tensor>& residual,
                                                const at::Tensor& weight, double eps);
std::tuple<at::Tensor, at::Tensor> rotary(const at::Tensor& q, const at::Tensor& k,
                                          const at::Tensor& cos, const at::Tensor& sin);
at::Tensor silu_and_mul(const at::Tensor& x);
bool amx_available();
at::Tensor amx_int8_linear(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scale,
                           const c10::optional<at::Tensor>& bias);
at::Tensor amx_int4_linear(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scales_zeros,
                           const c10::optional<at::Tensor>& bias, bool silu_mul);
at::Tensor amx_bf16_linear(const at::Tensor& x, const at::Tensor& packed, int64_t n,
                           const c10::optional<at::Tensor>& bias);
at::Tensor amx_gemm(const at::Tensor& x, const at::Tensor& packed, int64_t n,
                    const c10::optional<at::Tensor>& bias, bool silu_mul);
at::Tensor prefill_attention(const at::Tensor& q, const at::Tensor& kv, const at::Tensor& query_starts,
                             const at::Tensor& slots, const at::Tensor& context_starts, int64_t window,
                             double scale, double k_scale, double v_scale);
at::Tensor argmax_rows(const at::Tensor& logits);
bool gemv_available();
at::Tensor int4_gemv(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& params,
                     const c10::optional<at::Tensor>& bias);
bool vnni_available();
at::Tensor vnni_int4_linear(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& params,
                            const c10::optional<at::Tensor>& bias, bool silu_mul);
at::Tensor vnni_int8_linear(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scale,
                            const c10::optional<at::Tensor>& bias);
void kv_write(at::Tensor& kv, const at::Tensor& k, const at::Tensor& v, const at::Tensor& slots);
void kv_write_fp8(at::Tensor& kv, const at::Tensor& k, const at::Tensor& v, const at::Tensor& slots,
                  double k_scale, double v_scale);
