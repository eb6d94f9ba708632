// Fused CPU forward of the multiresolution hash encoding (models/hashgrid.py documents the maths).
//
// One pass per (point, level): cell, corner indices, gather, the three nested lerps and, optionally,
// d out / d x, where the pure-PyTorch path runs ~40 tensor ops over (L, 8, n) arrays. Same layout,
// hashing and rounding steps as that path: p = float(0.5 + double(x) * double(scale)), floor, lerps
// in the order x, y, z, derivative scaled by float(scale). Built on first use by
// models/hashgrid_cpu.py (torch.utils.cpp_extension); the pure path stays the reference.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <thread>
#include <vector>

namespace {

struct Level {
  double scale;
  float jac_scale;
  int64_t stride[3];  // dense: 1, res, res^2; hashed: primes & mask
  int64_t offset, size;
  bool hashed;
};

template <int F>
void encode_range(int64_t begin, int64_t end, const float* x, const float* table, const std::vector<Level>& levels,
                  int64_t mask, int64_t N, int64_t chunk, float* out, float* jac, int32_t* idx_out, float* frac_out) {
  const int64_t L = static_cast<int64_t>(levels.size());
  constexpr int64_t B = 64;  // points whose corners are located (and prefetched) before any is read
  int64_t idx[B][8];
  float w[B][3];
  // level-major: one level's part of the table stays in cache while the points run through it
  for (int64_t l = 0; l < L; ++l) {
    const Level& lv = levels[l];
    for (int64_t b0 = begin; b0 < end; b0 += B) {
      const int64_t nb = std::min(B, end - b0);
      for (int64_t m = 0; m < nb; ++m) {  // pass 1: cells, corner indices, prefetch
        const int64_t n = b0 + m;
        int64_t t0[3], t1[3];
        for (int d = 0; d < 3; ++d) {
          const float p = static_cast<float>(0.5 + static_cast<double>(x[n * 3 + d]) * lv.scale);
          const float g = std::floor(p);
          w[m][d] = p - g;
          t0[d] = static_cast<int64_t>(g) * lv.stride[d];
          t1[d] = t0[d] + lv.stride[d];
          if (lv.hashed) {
            t0[d] &= mask;
            t1[d] &= mask;
          }
        }
        for (int c = 0; c < 8; ++c) {  // corner c = cx + 2 cy + 4 cz
          const int64_t tx = (c & 1) ? t1[0] : t0[0];
          const int64_t ty = (c & 2) ? t1[1] : t0[1];
          const int64_t tz = (c & 4) ? t1[2] : t0[2];
          int64_t i;
          if (lv.hashed) {
            i = (tz ^ (ty ^ tx)) + lv.offset;
          } else {
            i = tz + (ty + (tx + lv.offset));
            if (i >= lv.size + lv.offset) i -= lv.size;  // the +0.5 shift can step one cell past the end
          }
          idx[m][c] = i;
          __builtin_prefetch(table + i * F);
        }
        if (idx_out != nullptr) {
          // back-to-back per-chunk blocks (L, 8, nc) / (L, 3, nc), as the pure path saves them
          const int64_t i0 = (n / chunk) * chunk, nc = std::min(chunk, N - i0), r = n - i0;
          for (int c = 0; c < 8; ++c) idx_out[i0 * L * 8 + (l * 8 + c) * nc + r] = static_cast<int32_t>(idx[m][c]);
          for (int d = 0; d < 3; ++d) frac_out[i0 * L * 3 + (l * 3 + d) * nc + r] = w[m][d];
        }
      }
      for (int64_t m = 0; m < nb; ++m) {  // pass 2: gather, lerp along x, then y, then z
        const int64_t n = b0 + m;
        for (int k = 0; k < F; ++k) {
          float dx[4], a[4];
          for (int q = 0; q < 4; ++q) {
            const float f0 = table[idx[m][2 * q] * F + k], f1 = table[idx[m][2 * q + 1] * F + k];
            dx[q] = f1 - f0;
            a[q] = f0 + dx[q] * w[m][0];
          }
          const float dy0 = a[1] - a[0], dy1 = a[3] - a[2];
          const float b0v = a[0] + dy0 * w[m][1], b1v = a[2] + dy1 * w[m][1];
          const float dz = b1v - b0v;
          out[(n * L + l) * F + k] = b0v + dz * w[m][2];
          if (jac != nullptr) {
            const float dxy0 = dx[0] + (dx[1] - dx[0]) * w[m][1];
            const float dxy1 = dx[2] + (dx[3] - dx[2]) * w[m][1];
            float* j = jac + n * 3 * L * F + l * F + k;  // (N, 3, L, F)
            j[0] = (dxy0 + (dxy1 - dxy0) * w[m][2]) * lv.jac_scale;
            j[L * F] = (dy0 + (dy1 - dy0) * w[m][2]) * lv.jac_scale;
            j[2 * L * F] = dz * lv.jac_scale;
          }
        }
      }
    }
  }
}

}  // namespace

// x (N, 3) float32 in [0, 1]; table (E, F) float32; per level: scales (float64), jac_scales (float32),
// strides (L, 3) int64, offsets, sizes (int64), hashed (bool). Returns out (N, L*F) and, when asked,
// jac (N, 3, L*F) and, flat, idx int32 (global entry indices) and frac in blocks of `chunk` points.
std::vector<torch::Tensor> encode_forward(torch::Tensor x, torch::Tensor table, torch::Tensor scales,
                                          torch::Tensor jac_scales, torch::Tensor strides, torch::Tensor offsets,
                                          torch::Tensor sizes, torch::Tensor hashed, int64_t mask, int64_t chunk,
                                          bool want_jac, bool want_corners) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == torch::kFloat32 && x.dim() == 2 && x.size(1) == 3,
              "hashgrid_cpu: x must be a CPU float32 (N, 3) tensor");
  TORCH_CHECK(table.scalar_type() == torch::kFloat32 && table.dim() == 2, "hashgrid_cpu: table must be float32 (E, F)");
  x = x.contiguous();
  table = table.contiguous();
  const int64_t N = x.size(0), F = table.size(1), L = scales.size(0);
  TORCH_CHECK(chunk > 0, "hashgrid_cpu: chunk must be positive");
  auto sc = scales.contiguous().to(torch::kFloat64);
  auto js = jac_scales.contiguous().to(torch::kFloat32);
  auto st = strides.contiguous().to(torch::kInt64);
  auto of = offsets.contiguous().to(torch::kInt64);
  auto sz = sizes.contiguous().to(torch::kInt64);
  auto hs = hashed.contiguous().to(torch::kBool);
  std::vector<Level> levels(L);
  for (int64_t l = 0; l < L; ++l) {
    levels[l].scale = sc.data_ptr<double>()[l];
    levels[l].jac_scale = js.data_ptr<float>()[l];
    for (int d = 0; d < 3; ++d) levels[l].stride[d] = st.data_ptr<int64_t>()[l * 3 + d];
    levels[l].offset = of.data_ptr<int64_t>()[l];
    levels[l].size = sz.data_ptr<int64_t>()[l];
    levels[l].hashed = hs.data_ptr<bool>()[l];
  }
  auto fopt = x.options();
  auto out = torch::empty({N, L * F}, fopt);
  auto jac = want_jac ? torch::empty({N, 3, L * F}, fopt) : torch::Tensor();
  auto idx = want_corners ? torch::empty({N * L * 8}, fopt.dtype(torch::kInt32)) : torch::Tensor();
  auto frac = want_corners ? torch::empty({N * L * 3}, fopt) : torch::Tensor();
  const float* xp = x.data_ptr<float>();
  const float* tp = table.data_ptr<float>();
  float* op = out.data_ptr<float>();
  float* jp = want_jac ? jac.data_ptr<float>() : nullptr;
  int32_t* ip = want_corners ? idx.data_ptr<int32_t>() : nullptr;
  float* fp = want_corners ? frac.data_ptr<float>() : nullptr;
  TORCH_CHECK(F == 1 || F == 2 || F == 4 || F == 8, "hashgrid_cpu: features per level must be 1, 2, 4 or 8");
  auto run = [&](int64_t begin, int64_t end) {
    switch (F) {
      case 1: encode_range<1>(begin, end, xp, tp, levels, mask, N, chunk, op, jp, ip, fp); break;
      case 2: encode_range<2>(begin, end, xp, tp, levels, mask, N, chunk, op, jp, ip, fp); break;
      case 4: encode_range<4>(begin, end, xp, tp, levels, mask, N, chunk, op, jp, ip, fp); break;
      default: encode_range<8>(begin, end, xp, tp, levels, mask, N, chunk, op, jp, ip, fp); break;
    }
  };
  // plain threads over disjoint point ranges (torch's OpenMP pool is not visible from an extension
  // built without -fopenmp, and linking a second OpenMP runtime would fight it)
  const int64_t work = N * L;
  const int64_t n_threads = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), work / 16384));
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < n_threads; ++t) pool.emplace_back(run, N * t / n_threads, N * (t + 1) / n_threads);
  run(0, N / n_threads);
  for (auto& th : pool) th.join();
  return {out, jac, idx, frac};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("encode_forward", &encode_forward, "fused hash-grid encoding forward (CPU)",
        py::call_guard<py::gil_scoped_release>());
}
