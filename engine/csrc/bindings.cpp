// The Python module of dyno's CPU kernels: each kernel lives in its own source file.
#include <torch/extension.h>

#include <tuple>

at::Tensor paged_decode(const at::Tensor& q, const at::Tensor& kv, const at::Tensor& table,
                        const at::Tensor& ctx_lens, int64_t block_size, int64_t window,
                        double scale, double k_scale, double v_scale);
std::tuple<at::Tensor, at::Tensor> add_rms_norm(const at::Tensor& x, const c10::optional<at::Tensor>& residual,
                                                const at::Tensor& weight, double eps);
std::tuple<at::Tensor, at::Tensor> rotary(const at::Tensor& q, const at::Tensor& k,
                                          const at::Tensor& cos, const at::Tensor& sin);
at::Tensor silu_and_mul(const at::Tensor& x);
bool amx_available();
at::Tensor amx_int8_linear(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scale,
                           const c10::optional<at::Tensor>& bias);
at::Tensor amx_int4_linear(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scales_zeros,
                           const c10::optional<at::Tensor>& bias);
at::Tensor amx_bf16_linear(const at::Tensor& x, const at::Tensor& packed, int64_t n,
                           const c10::optional<at::Tensor>& bias);
at::Tensor prefill_attention(const at::Tensor& q, const at::Tensor& kv, const at::Tensor& query_starts,
                             const at::Tensor& slots, const at::Tensor& context_starts, int64_t window,
                             double scale, double k_scale, double v_scale);
at::Tensor argmax_rows(const at::Tensor& logits);
bool gemv_available();
at::Tensor int4_gemv(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& params,
                     const c10::optional<at::Tensor>& bias);
void kv_write(at::Tensor& kv, const at::Tensor& k, const at::Tensor& v, const at::Tensor& slots);
void kv_write_fp8(at::Tensor& kv, const at::Tensor& k, const at::Tensor& v, const at::Tensor& slots,
                  double k_scale, double v_scale);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("paged_decode", &paged_decode, "paged decode attention (CPU)");
  m.def("kv_write", &kv_write, "write a step's keys and values into their cache slots (CPU)");
  m.def("kv_write_fp8", &kv_write_fp8, "kv_write into an fp8 cache, values over their scales (CPU)");
  m.def("add_rms_norm", &add_rms_norm, "bf16 RMSNorm with its residual add (CPU)");
  m.def("rotary", &rotary, "bf16 rotary embedding of q and k (CPU)");
  m.def("amx_available", &amx_available, "whether this CPU and kernel let the process use AMX");
  m.def("amx_int8_linear", &amx_int8_linear, "bf16 x int8 weight-only linear on AMX (CPU)");
  m.def("amx_int4_linear", &amx_int4_linear, "bf16 x int4 (groups of 32) weight-only linear on AMX (CPU)");
  m.def("amx_bf16_linear", &amx_bf16_linear, "bf16 linear on AMX, weights in tile order (CPU)");
  m.def("prefill_attention", &prefill_attention, "causal prompt attention on AMX, bf16 or fp8 cache, head_dim 64 (CPU)");
  m.def("silu_and_mul", &silu_and_mul, "bf16 SiLU(gate) * up (CPU)");
  m.def("gemv_available", &gemv_available, "whether int4_gemv was built (AVX-512 VNNI)");
  m.def("int4_gemv", &int4_gemv, "bf16 x int4 (groups of 32) linear for 1-4 rows, VNNI sums (CPU)");
  m.def("argmax_rows", &argmax_rows, "greedy tokens: each bf16 row's first largest logit (CPU)");
}
