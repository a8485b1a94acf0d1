// AMX set-up shared by dyno's tile kernels: the process's permission and one tile shape.
#pragma once

#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>

namespace dyno_amx {

constexpr int64_t kRows = 16;  // rows of every tile; each row is 64 bytes

// A bf16 weight in amx_layout.tile_order's order, as the linear kernels read it: panels of 32
// output channels (two tiles wide), each in blocks of 32 inputs (16 bf16 pairs a tile row),
// a block's two 16-channel halves one tile each.
constexpr int64_t kPanel = 32;
constexpr int64_t kKBlock = 32;
constexpr int64_t kWeightBlock = 2 * kRows * kPanel;  // elements of one input block of a panel

// Linux hands out the AMX register state only on request (ARCH_REQ_XCOMP_PERM, XTILEDATA).
inline bool permitted() {
  static const bool ok = syscall(SYS_arch_prctl, 0x1023, 18) == 0;
  return ok;
}

struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// All eight tiles 16 rows of 64 bytes: 16 x 32 bf16 operands, 16 x 16 fp32 sums. Per thread.
// GCC does not see ldtilecfg read its operand: inlined, the config's stores were moved past it
// (a garbage config faults), hence the barrier.
__attribute__((target("amx-tile"), noinline)) inline void configure() {
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) {
    cfg.colsb[t] = 64;
    cfg.rows[t] = kRows;
  }
  asm volatile("" : : "r"(&cfg) : "memory");
  _tile_loadconfig(&cfg);
}

__attribute__((target("amx-tile"))) inline void release() { _tile_release(); }

}  // namespace dyno_amx
