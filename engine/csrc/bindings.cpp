// The Python module of dyno's CPU kernels: each kernel lives in its own source file.
#include <torch/extension.h>

#include "decode_stack.h"
#include "kernels.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("paged_decode", &paged_decode, "paged decode attention (CPU)");
  m.def("paged_decode_qkv", &paged_decode_qkv,
        "rotary, cache write and paged decode attention from the fused QKV output, one pass a sequence (CPU)");
  m.def("kv_write", &kv_write, "write a step's keys and values into their cache slots (CPU)");
  m.def("kv_write_fp8", &kv_write_fp8, "kv_write into an fp8 cache, values over their scales (CPU)");
  m.def("add_rms_norm", &add_rms_norm, "bf16 RMSNorm with its residual add (CPU)");
  m.def("rotary", &rotary, "bf16 rotary embedding of q and k (CPU)");
  m.def("amx_available", &amx_available, "whether this CPU and kernel let the process use AMX");
  m.def("amx_int8_linear", &amx_int8_linear, "bf16 x int8 weight-only linear on AMX (CPU)");
  m.def("amx_int4_linear", &amx_int4_linear, "bf16 x int4 (groups of 32) weight-only linear on AMX (CPU)");
  m.def("amx_bf16_linear", &amx_bf16_linear, "bf16 linear on AMX, weights in tile order (CPU)");
  m.def("amx_gemm", &amx_gemm, "bf16 linear for prompt-sized batches on AMX, optionally with SiLU-and-mul fused (CPU)");
  m.def("prefill_attention", &prefill_attention, "causal prompt attention on AMX, bf16 or fp8 cache, head_dim 64 (CPU)");
  m.def("silu_and_mul", &silu_and_mul, "bf16 SiLU(gate) * up (CPU)");
  m.def("gemv_available", &gemv_available, "whether int4_gemv was built (AVX-512 VNNI)");
  m.def("vnni_available", &vnni_available, "whether vnni_int4_linear was built (AVX-512 VNNI)");
  m.def("vnni_int4_linear", &vnni_int4_linear, "bf16 x int4 (groups of 32) linear for any rows, rows as int8, VNNI sums, optionally with SiLU-and-mul fused (CPU)");
  m.def("vnni_int8_linear", &vnni_int8_linear, "bf16 x int8 (per channel) linear for any rows, rows as int8, VNNI sums (CPU)");
  m.def("int4_gemv", &int4_gemv, "bf16 x int4 (groups of 32) linear for 1-4 rows, VNNI sums (CPU)");
  pybind11::class_<dyno_stack::Linear>(m, "StackLinear")
      .def(pybind11::init([](int64_t kind, at::Tensor weight, at::Tensor params, at::Tensor gemv_codes,
                             at::Tensor gemv_params, int64_t out_features, int64_t gemv_up_to_rows,
                             c10::optional<at::Tensor> bias, bool silu_fused) {
        return dyno_stack::Linear{kind, weight, params, gemv_codes, gemv_params, out_features,
                                  gemv_up_to_rows, bias, silu_fused};
      }));
  pybind11::class_<dyno_stack::Layer>(m, "StackLayer")
      .def(pybind11::init([](at::Tensor input_norm, at::Tensor post_norm, double eps, dyno_stack::Linear qkv,
                             dyno_stack::Linear o, dyno_stack::Linear gate_up, dyno_stack::Linear down,
                             int64_t num_heads, int64_t num_kv_heads, int64_t head_dim, int64_t window,
                             double scale) {
        return dyno_stack::Layer{input_norm, post_norm, eps, qkv, o, gate_up, down,
                                 num_heads, num_kv_heads, head_dim, window, scale};
      }));
  pybind11::class_<dyno_stack::Stack>(m, "DecodeStack")
      .def(pybind11::init([](std::vector<dyno_stack::Layer> layers) { return dyno_stack::Stack{std::move(layers)}; }))
      .def("forward", &dyno_stack::Stack::forward,
           "a decode step through every decoder layer, the same kernels as the Python layers (CPU)");
  m.def("argmax_rows", &argmax_rows, "greedy tokens: each bf16 row's first largest logit (CPU)");
}
