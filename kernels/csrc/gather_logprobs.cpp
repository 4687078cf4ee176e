// CPU implementation of igsearch::gather_logprobs and its backward (schemas in ops.cpp).
//
// logits z = (hidden @ weight^T + bias) / temperature are never materialised as [M, V]: the vocabulary
// is walked in tiles of `tile` rows of `weight` and the rows of `hidden` in blocks of kRowBlock; each
// (row block, vocab tile) logits tile comes from one GEMM (at::mm / addmm: MKL or OpenBLAS in fp32, oneDNN in bf16)
// into a preallocated buffer, and the row-wise work on it is vectorised (at::vec) and parallelised
// over rows (at::parallel_for).
//
// Forward: online log-sum-exp per row (running max and sum of exponentials, merged tile by tile)
// and the target's logit, picked from the tile that holds it: logp = z[target] - lse.
// Backward: the tile is recomputed, dz = g * (onehot(target) - exp(z - lse)) / temperature, and the
// same dz tile feeds grad_hidden += dz @ W_tile, grad_weight[tile] += dz^T @ hidden and
// grad_bias[tile] += sum_rows dz: 2MVd flops in the forward, 6MVd in the backward (eager: 2 + 4, but
// with [M, V] logits, their log-softmax and its gradient held in memory).
//
// Memory (bytes, fp32 work; B = min(M, kRowBlock), T = tile):
//   logits tile       B * T * 4        (M=256, T=1024: 1 MiB; eager's [M, V] fp32 at V=152k: 148 MiB)
//   fp16 inputs       + M * d * 4 (hidden in fp32) + T * d * 4 (weight tile in fp32)
//   bf16 inputs       + B * T * 2 (the tile as the GEMM returns it)
//   backward          + M * d * 4 (grad_hidden accumulator) + T * d * 4 (grad_weight tile, bf16/fp16)
// plus the gradients themselves.
//
// Inputs: fp32, bf16 or fp16 (hidden and weight of one dtype; gradients returned in the input dtypes).
// fp32 and fp16 compute in fp32 (fp16 is converted: CPUs without AMX-FP16 have no fast fp16 GEMM).
// bf16 stays bf16 into the GEMMs, which ATen hands to oneDNN (AMX or AVX-512-BF16 where the CPU has
// them; fp32 accumulation): each logits tile comes back rounded to bf16 (ATen's CPU GEMMs have no
// bf16 -> fp32 output) and is widened to fp32 for the log-sum-exp, and the target's logit is read from
// the same rounded tile, so logp = z[target] - lse <= 0 still holds. The rounding adds at most
// 2^-9 |z| per logit, the size of the bf16 rounding of hidden itself. In the backward the fp32 dz tile is
// rounded to bf16 for its two GEMMs; grad_hidden and a weight tile's gradient accumulate in fp32.
// fp64 is refused: the torch path (kernels/gather_logprobs.py) handles it.

// at::vec picks its SIMD implementation from these macros, set by ATen's own per-capability builds;
// here the build flags (-march=native) decide. Defined before any ATen header.
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__) && defined(__AVX512VL__) && \
    !defined(CPU_CAPABILITY_AVX512) && !defined(CPU_CAPABILITY_AVX2)
#define CPU_CAPABILITY_AVX512
#elif defined(__AVX2__) && defined(__FMA__) && !defined(CPU_CAPABILITY_AVX512) && !defined(CPU_CAPABILITY_AVX2)
#define CPU_CAPABILITY_AVX2
#endif

// GCC 12 flags _mm512_undefined_ps() inside the AVX-512 intrinsics as maybe-uninitialized (a false positive).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <ATen/ATen.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <optional>
#include <tuple>

namespace {

using Vec = at::vec::Vectorized<float>;

// Vocabulary rows per tile when the caller passes tile <= 0. Measured on one Zen 4 core (fp32, M = 16..2048,
// d = 256..896, V = 32k..152k): 512-1024 are best or within noise everywhere, 4096-8192 up to 10% slower
// at d = 896 (the weight tile, tile * d * 4 B = 3.5 MiB at 1024, then no longer stays in cache between
// the row blocks and the backward's two GEMMs).
constexpr int64_t kDefaultTile = 1024;
// Rows of hidden per logits tile: bounds the buffer for large M (1024 x 4096 x 4 B = 16 MiB).
constexpr int64_t kRowBlock = 1024;
// Rows per at::parallel_for task in the row-wise passes.
constexpr int64_t kRowGrain = 8;

// ------------------------------------------------------------------------------------ checks

struct Problem {
  at::Tensor hidden;   // [M, d] fp32 (converted from fp16), or bf16 when `bf16`
  at::Tensor weight;   // [V, d] as given (fp32, bf16 or fp16)
  bool bf16 = false;   // hidden and weight are bf16: the GEMMs run in bf16
  at::Tensor bias;     // [V] fp32, or undefined
  at::Tensor targets;  // [M] int64, contiguous
  float inv_temp;
  int64_t ignore_index;
  int64_t tile;
  int64_t m() const { return hidden.size(0); }
  int64_t v() const { return weight.size(0); }
  int64_t d() const { return hidden.size(1); }
  at::TensorOptions f32() const { return hidden.options().dtype(at::kFloat); }
};

bool supported_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kBFloat16 || t == at::kHalf;
}

/// Checks the arguments shared by forward and backward and converts them to the working layout.
Problem make_problem(const at::Tensor& hidden, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                     const at::Tensor& targets, double temperature, int64_t ignore_index, int64_t tile) {
  TORCH_CHECK(hidden.dim() == 2, "gather_logprobs: hidden must be [M, d], got ", hidden.sizes());
  TORCH_CHECK(weight.dim() == 2, "gather_logprobs: weight must be [V, d], got ", weight.sizes());
  TORCH_CHECK(weight.size(1) == hidden.size(1), "gather_logprobs: weight [V, d] must have d = ", hidden.size(1),
              " (hidden's last dimension), got ", weight.sizes());
  TORCH_CHECK(weight.size(0) > 0, "gather_logprobs: weight has no rows (V = 0)");
  TORCH_CHECK(supported_dtype(hidden.scalar_type()),
              "gather_logprobs (native CPU): hidden must be float32, bfloat16 or float16, got ", hidden.scalar_type(),
              " (float64 runs on the torch path)");
  TORCH_CHECK(weight.scalar_type() == hidden.scalar_type(), "gather_logprobs: weight dtype ", weight.scalar_type(),
              " differs from hidden dtype ", hidden.scalar_type());
  TORCH_CHECK(targets.dim() == 1 && targets.size(0) == hidden.size(0), "gather_logprobs: targets must be [M = ",
              hidden.size(0), "], got ", targets.sizes());
  TORCH_CHECK(at::isIntegralType(targets.scalar_type(), /*includeBool=*/false),
              "gather_logprobs: targets must be an integer tensor, got ", targets.scalar_type());
  TORCH_CHECK(temperature > 0, "gather_logprobs: temperature must be > 0, got ", temperature);
  TORCH_CHECK(tile >= 0, "gather_logprobs: tile must be >= 0 (0: default), got ", tile);
  for (const at::Tensor* t : {&hidden, &weight, &targets}) {
    TORCH_CHECK(t->device().is_cpu(), "gather_logprobs (native CPU): all tensors must be on the CPU");
  }
  Problem p;
  p.bf16 = hidden.scalar_type() == at::kBFloat16;
  p.hidden = p.bf16 ? hidden.contiguous() : hidden.to(at::kFloat).contiguous();
  p.weight = weight;
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == weight.size(0), "gather_logprobs: bias must be [V = ",
                weight.size(0), "], got ", bias->sizes());
    TORCH_CHECK(at::isFloatingType(bias->scalar_type()) && bias->scalar_type() != at::kDouble,
                "gather_logprobs: bias must be float32, bfloat16 or float16, got ", bias->scalar_type());
    TORCH_CHECK(bias->device().is_cpu(), "gather_logprobs (native CPU): bias must be on the CPU");
    p.bias = bias->to(at::kFloat).contiguous();
  }
  p.targets = targets.to(at::kLong).contiguous();
  p.inv_temp = static_cast<float>(1.0 / temperature);
  p.ignore_index = ignore_index;
  p.tile = std::min(tile > 0 ? tile : kDefaultTile, weight.size(0));

  const int64_t* tgt = p.targets.data_ptr<int64_t>();
  const int64_t vocab = weight.size(0);
  for (int64_t i = 0; i < p.m(); ++i) {
    TORCH_CHECK(tgt[i] == ignore_index || (tgt[i] >= 0 && tgt[i] < vocab), "gather_logprobs: targets[", i,
                "] = ", tgt[i], " is outside [0, V = ", vocab, ") and is not ignore_index (", ignore_index, ")");
  }
  return p;
}

// ------------------------------------------------------------------------------------ row kernels

float row_max(const float* x, int64_t n) {
  constexpr int64_t kw = Vec::size();
  Vec acc(-std::numeric_limits<float>::infinity());
  int64_t i = 0;
  for (; i + kw <= n; i += kw) acc = at::vec::maximum(acc, Vec::loadu(x + i));
  float out = at::vec::vec_reduce_all<float>([](Vec a, Vec b) { return at::vec::maximum(a, b); }, acc);
  for (; i < n; ++i) out = std::max(out, x[i]);
  return out;
}

/// sum_i exp(x[i] * scale - shift)
float row_sum_exp(const float* x, int64_t n, float scale, float shift) {
  constexpr int64_t kw = Vec::size();
  const Vec vs(scale), vshift(-shift);
  Vec acc(0.f);
  int64_t i = 0;
  for (; i + kw <= n; i += kw) acc += at::vec::fmadd(Vec::loadu(x + i), vs, vshift).exp();
  float out = at::vec::vec_reduce_all<float>([](Vec a, Vec b) { return a + b; }, acc);
  for (; i < n; ++i) out += std::exp(x[i] * scale - shift);
  return out;
}

/// x[i] <- -g * exp(x[i] * scale - shift), in place (g = 0: zeros, no exponentials).
void row_neg_scaled_softmax(float* x, int64_t n, float scale, float shift, float g) {
  if (g == 0.f) {
    std::fill(x, x + n, 0.f);
    return;
  }
  constexpr int64_t kw = Vec::size();
  const Vec vs(scale), vshift(-shift), vg(-g);
  int64_t i = 0;
  for (; i + kw <= n; i += kw) (at::vec::fmadd(Vec::loadu(x + i), vs, vshift).exp() * vg).store(x + i);
  for (; i < n; ++i) x[i] = -g * std::exp(x[i] * scale - shift);
}

// ------------------------------------------------------------------------------------ tiling

/// One vocab tile [v0, v0 + n) of the weight in the GEMMs' dtype: a view for fp32 and bf16 weights, else
/// converted to fp32 into `buf`.
at::Tensor weight_tile(const Problem& p, int64_t v0, int64_t n, at::Tensor& buf) {
  at::Tensor w = p.weight.narrow(0, v0, n);
  if (w.scalar_type() == at::kFloat || p.bf16) return w;
  at::Tensor out = buf.narrow(0, 0, n);
  out.copy_(w);
  return out;
}

/// Raw logits tile hidden[r0:r0+b] @ w_tile^T + bias[v0:v0+n] -> out [b, n] fp32 (temperature not applied);
/// bf16 inputs multiply into `out16` [b, n] first (see the header).
void logits_tile(const Problem& p, const at::Tensor& w_tile, int64_t r0, int64_t b, int64_t v0, at::Tensor& out,
                 at::Tensor& out16) {
  at::Tensor h = p.hidden.narrow(0, r0, b);
  if (p.bf16) {
    at::mm_out(out16, h, w_tile.t());
    out.copy_(out16);
    if (p.bias.defined()) out.add_(p.bias.narrow(0, v0, w_tile.size(0)));
  } else if (p.bias.defined()) {
    at::addmm_out(out, p.bias.narrow(0, v0, w_tile.size(0)), h, w_tile.t());
  } else {
    at::mm_out(out, h, w_tile.t());
  }
}

/// Calls fn(v0, n, w_tile, r0, b, z, z16) for every (vocab tile, row block); z [b, n] fp32 holds the raw
/// logits (z16 [b, n]: a bf16 buffer of the same shape for bf16 problems, else undefined).
/// `after_tile(v0, n, w_tile)` runs once per vocab tile after its row blocks.
template <class RowBlockFn, class TileFn>
void for_each_tile(const Problem& p, RowBlockFn fn, TileFn after_tile) {
  const int64_t rows = std::min(p.m(), kRowBlock);
  at::Tensor zbuf = at::empty({rows * p.tile}, p.f32());
  at::Tensor z16buf = p.bf16 ? at::empty({rows * p.tile}, p.hidden.options()) : at::Tensor();
  at::Tensor wbuf;
  if (p.weight.scalar_type() != at::kFloat && !p.bf16) wbuf = at::empty({p.tile, p.d()}, p.f32());
  for (int64_t v0 = 0; v0 < p.v(); v0 += p.tile) {
    const int64_t n = std::min(p.tile, p.v() - v0);
    at::Tensor w_tile = weight_tile(p, v0, n, wbuf);
    for (int64_t r0 = 0; r0 < p.m(); r0 += rows) {
      const int64_t b = std::min(rows, p.m() - r0);
      at::Tensor z = zbuf.narrow(0, 0, b * n).view({b, n});
      at::Tensor z16 = p.bf16 ? z16buf.narrow(0, 0, b * n).view({b, n}) : at::Tensor();
      logits_tile(p, w_tile, r0, b, v0, z, z16);
      fn(v0, n, w_tile, r0, b, z, z16);
    }
    after_tile(v0, n, w_tile);
  }
}

// ------------------------------------------------------------------------------------ ops

/// Forward: (logp [M] fp32, lse [M] fp32); logp = 0 where targets == ignore_index.
std::tuple<at::Tensor, at::Tensor> gather_logprobs_cpu(const at::Tensor& hidden, const at::Tensor& weight,
                                                       const std::optional<at::Tensor>& bias,
                                                       const at::Tensor& targets, double temperature,
                                                       int64_t ignore_index, int64_t tile) {
  // The GEMMs below run in the inputs' dtype: a caller's torch.autocast must not recast them (it would hand
  // bf16 results to code that reads fp32 buffers).
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  Problem p = make_problem(hidden, weight, bias, targets, temperature, ignore_index, tile);
  const int64_t m = p.m();
  at::Tensor logp = at::zeros({m}, p.f32());
  at::Tensor lse = at::empty({m}, p.f32());
  if (m == 0) return {logp, lse};

  // Running max of the raw logits (times 1/T: the max commutes with a positive scale), the sum of
  // exponentials relative to it (double: summed over V / tile tiles), and the target's logit.
  std::vector<float> run_max(m, -std::numeric_limits<float>::infinity());
  std::vector<double> run_sum(m, 0.0);
  std::vector<float> z_target(m, 0.f);
  const int64_t* tgt = p.targets.data_ptr<int64_t>();
  const float s = p.inv_temp;

  for_each_tile(
      p,
      [&](int64_t v0, int64_t n, const at::Tensor&, int64_t r0, int64_t b, at::Tensor& z, at::Tensor&) {
        const float* zp = z.data_ptr<float>();
        at::parallel_for(0, b, kRowGrain, [&](int64_t lo, int64_t hi) {
          for (int64_t i = lo; i < hi; ++i) {
            const int64_t row = r0 + i;
            const float* x = zp + i * n;
            const float tile_max = row_max(x, n) * s;
            const float new_max = std::max(run_max[row], tile_max);
            const double tile_sum = row_sum_exp(x, n, s, new_max);
            run_sum[row] = run_sum[row] * std::exp(static_cast<double>(run_max[row] - new_max)) + tile_sum;
            run_max[row] = new_max;
            const int64_t t = tgt[row] - v0;
            if (tgt[row] != p.ignore_index && t >= 0 && t < n) z_target[row] = x[t] * s;
          }
        });
      },
      [](int64_t, int64_t, const at::Tensor&) {});

  float* lp = logp.data_ptr<float>();
  float* ls = lse.data_ptr<float>();
  for (int64_t row = 0; row < m; ++row) {
    ls[row] = static_cast<float>(run_max[row] + std::log(run_sum[row]));
    if (tgt[row] != p.ignore_index) lp[row] = z_target[row] - ls[row];
  }
  return {logp, lse};
}

/// Backward: (grad_hidden [M, d], grad_weight [V, d], grad_bias [V]), each only where output_mask says.
std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>, std::optional<at::Tensor>>
gather_logprobs_backward_cpu(const at::Tensor& grad, const at::Tensor& hidden, const at::Tensor& weight,
                             const std::optional<at::Tensor>& bias, const at::Tensor& targets, const at::Tensor& lse,
                             double temperature, int64_t ignore_index, int64_t tile,
                             std::array<bool, 3> output_mask) {
  // The GEMMs below run in the inputs' dtype: a caller's torch.autocast must not recast them (it would hand
  // bf16 results to code that reads fp32 buffers).
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  Problem p = make_problem(hidden, weight, bias, targets, temperature, ignore_index, tile);
  const int64_t m = p.m();
  TORCH_CHECK(grad.dim() == 1 && grad.size(0) == m, "gather_logprobs_backward: grad must be [M = ", m, "], got ",
              grad.sizes());
  TORCH_CHECK(lse.dim() == 1 && lse.size(0) == m, "gather_logprobs_backward: lse must be [M = ", m, "], got ",
              lse.sizes());
  const bool need_h = output_mask[0], need_w = output_mask[1], need_b = output_mask[2] && p.bias.defined();

  // g / T per row, 0 for ignored rows (no gradient through their logp = 0).
  at::Tensor g = grad.to(at::kFloat).contiguous().clone();
  at::Tensor lse32 = lse.to(at::kFloat).contiguous();
  const int64_t* tgt = p.targets.data_ptr<int64_t>();
  float* gp = g.data_ptr<float>();
  for (int64_t row = 0; row < m; ++row) gp[row] = tgt[row] == ignore_index ? 0.f : gp[row] * p.inv_temp;
  const float* lsp = lse32.data_ptr<float>();

  const auto f32 = p.f32();
  at::Tensor gh = need_h ? at::zeros({m, p.d()}, f32) : at::Tensor();
  at::Tensor gw = need_w ? at::empty(weight.sizes(), weight.options().memory_format(at::MemoryFormat::Contiguous))
                         : at::Tensor();
  // bf16: every GEMM's bf16 result is added into fp32 (gw_buf for a weight tile, over the row blocks)
  const bool gw_fp32 = need_w && gw.scalar_type() == at::kFloat && !p.bf16;
  at::Tensor gw_buf = need_w && !gw_fp32 ? at::empty({p.tile, p.d()}, f32) : at::Tensor();
  at::Tensor gb = need_b ? at::zeros({p.v()}, f32) : at::Tensor();
  const bool any = need_h || need_w || need_b;

  if (m > 0 && any) {
    const float s = p.inv_temp;
    for_each_tile(
        p,
        [&](int64_t v0, int64_t n, const at::Tensor& w_tile, int64_t r0, int64_t b, at::Tensor& z, at::Tensor& z16) {
          float* zp = z.data_ptr<float>();
          at::parallel_for(0, b, kRowGrain, [&](int64_t lo, int64_t hi) {
            for (int64_t i = lo; i < hi; ++i) {
              const int64_t row = r0 + i;
              row_neg_scaled_softmax(zp + i * n, n, s, lsp[row], gp[row]);
              const int64_t t = tgt[row] - v0;
              if (tgt[row] != ignore_index && t >= 0 && t < n) zp[i * n + t] += gp[row];
            }
          });
          at::Tensor h = p.hidden.narrow(0, r0, b);
          if (p.bf16) {
            z16.copy_(z);
            if (need_h) gh.narrow(0, r0, b).add_(at::mm(z16, w_tile));
            if (need_w) {
              at::Tensor part = at::mm(z16.t(), h);
              if (r0 == 0) {
                gw_buf.narrow(0, 0, n).copy_(part);
              } else {
                gw_buf.narrow(0, 0, n).add_(part);
              }
            }
          } else {
            if (need_h) gh.narrow(0, r0, b).addmm_(z, w_tile);
            if (need_w) {
              at::Tensor dst = gw_fp32 ? gw.narrow(0, v0, n) : gw_buf.narrow(0, 0, n);
              if (r0 == 0) {
                at::mm_out(dst, z.t(), h);
              } else {
                dst.addmm_(z.t(), h);
              }
            }
          }
          if (need_b) gb.narrow(0, v0, n).add_(z.sum(0));
        },
        [&](int64_t v0, int64_t n, const at::Tensor&) {
          if (need_w && !gw_fp32) gw.narrow(0, v0, n).copy_(gw_buf.narrow(0, 0, n));
        });
  } else if (need_w) {
    gw.zero_();
  }

  std::optional<at::Tensor> out_h, out_w, out_b;
  if (need_h) out_h = gh.to(hidden.scalar_type());
  if (need_w) out_w = gw;
  if (need_b) out_b = gb.to(bias->scalar_type());
  return {out_h, out_w, out_b};
}

}  // namespace

TORCH_LIBRARY_IMPL(igsearch, CPU, m) {
  m.impl("gather_logprobs", &gather_logprobs_cpu);
  m.impl("gather_logprobs_backward", &gather_logprobs_backward_cpu);
}
