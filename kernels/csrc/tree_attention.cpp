// Tree attention of one packed run of trie tokens, CPU (torch.ops.igsearch.tree_attention).
//
// Queries of the run attend causally inside their own node and to every token of an ancestor node,
// whether that token is in the run (k, v) or outside it (past_k, past_v: cached, or forwarded by an
// earlier run). Work is split into blocks of `block_m` queries; each block gathers only the keys it
// may see (the union over its nodes' ancestors: a few paths of a tree, not the whole run), so the
// cost is about T x (path depth + block) instead of T x T. Per block and kv head, the G = Hq / Hkv
// query heads are stacked into one [G * bm, D] matrix: scores and outputs are two GEMMs, the
// masked softmax is ATen's vectorised kernel. Blocks run in parallel (at::parallel_for, OpenMP).
//
// fp32 inputs: fp32 GEMMs (MKL). bf16 inputs: the rows are gathered as bf16 (the keys transposed into a
// contiguous [D, nk] matrix: oneDNN's bf16 GEMM is 2-3x slower on a transposed view), both GEMMs run in
// bf16 through oneDNN (AMX or AVX-512-BF16 where the CPU has them, fp32 accumulation), and the scale,
// mask and softmax in fp32 on the widened scores; the probabilities are rounded to bf16 for the second
// GEMM, as flash attention does on a GPU. ATen's CPU GEMMs return bf16, so the scores carry one bf16
// rounding (2^-9 relative) before the softmax.
#include <ATen/ATen.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

namespace {

// bf16 path: key counts are padded to a multiple of this (see tree_attention_impl)
constexpr int64_t kKeyPad = 64;

struct Layout {
  const int64_t* node;       // [T] run node ids (non-decreasing)
  const int64_t* past_node;  // [P] or nullptr
  const bool* anc;           // [N, N] ancestry, row-major
  int64_t T, P, N;
};

// The keys a block of queries [a, b) may see: past rows (in past order) then run rows j < b, each
// visible from at least one query of the block. Also the additive mask [b - a, n_keys]: 0 where the
// query may attend to the key, -inf elsewhere.
void block_keys(const Layout& L, int64_t a, int64_t b, std::vector<int64_t>& past_keys,
                std::vector<int64_t>& run_keys, std::vector<float>& mask) {
  std::vector<char> vis(L.N, 0);
  for (int64_t i = a; i < b; ++i) {
    if (i > a && L.node[i] == L.node[i - 1]) continue;
    const bool* row = L.anc + L.node[i] * L.N;
    for (int64_t n = 0; n < L.N; ++n) vis[n] |= row[n];
  }
  past_keys.clear();
  run_keys.clear();
  for (int64_t j = 0; j < L.P; ++j)
    if (vis[L.past_node[j]]) past_keys.push_back(j);
  for (int64_t j = 0; j < b; ++j)
    if (vis[L.node[j]]) run_keys.push_back(j);
  const int64_t np = past_keys.size(), nk = np + run_keys.size();
  const float neg_inf = -std::numeric_limits<float>::infinity();
  mask.assign((b - a) * nk, neg_inf);
  for (int64_t i = a; i < b; ++i) {
    const bool* row = L.anc + L.node[i] * L.N;
    float* m = mask.data() + (i - a) * nk;
    for (int64_t c = 0; c < np; ++c)
      if (row[L.past_node[past_keys[c]]]) m[c] = 0.f;
    for (int64_t c = np; c < nk; ++c) {
      const int64_t j = run_keys[c - np];
      // same node: causal; an ancestor node: seen in full (ancestors precede their descendants)
      if (row[L.node[j]] && j <= i) m[c] = 0.f;
    }
  }
}

// dst[r, :D] = float(src[rows[r] * st + off, :D]) * mul
template <typename scalar_t>
void gather_rows(const scalar_t* src, int64_t st, int64_t off, const int64_t* rows, int64_t n, int64_t D,
                 float mul, float* dst) {
  for (int64_t r = 0; r < n; ++r) {
    const scalar_t* s = src + rows[r] * st + off;
    float* d = dst + r * D;
    for (int64_t x = 0; x < D; ++x) d[x] = static_cast<float>(s[x]) * mul;
  }
}

template <typename scalar_t>
void tree_attention_impl(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         const c10::optional<at::Tensor>& past_k, const c10::optional<at::Tensor>& past_v,
                         const Layout& L, double scale, int64_t block_m, at::Tensor& out) {
  const int64_t T = q.size(0), Hq = q.size(1), D = q.size(2), Hkv = k.size(1), G = Hq / Hkv;
  const scalar_t* qp = q.data_ptr<scalar_t>();
  const scalar_t* kp = k.data_ptr<scalar_t>();
  const scalar_t* vp = v.data_ptr<scalar_t>();
  const scalar_t* pkp = L.P ? past_k->data_ptr<scalar_t>() : nullptr;
  const scalar_t* pvp = L.P ? past_v->data_ptr<scalar_t>() : nullptr;
  const int64_t qs0 = q.stride(0), qs1 = q.stride(1), ks0 = k.stride(0), ks1 = k.stride(1);
  const int64_t vs0 = v.stride(0), vs1 = v.stride(1);
  const int64_t pks0 = L.P ? past_k->stride(0) : 0, pks1 = L.P ? past_k->stride(1) : 0;
  const int64_t pvs0 = L.P ? past_v->stride(0) : 0, pvs1 = L.P ? past_v->stride(1) : 0;
  scalar_t* op = out.data_ptr<scalar_t>();
  const int64_t n_blocks = (T + block_m - 1) / block_m;
  const auto f32 = at::TensorOptions().dtype(at::kFloat);

  constexpr bool kBf16 = std::is_same_v<scalar_t, at::BFloat16>;
  const auto lowp = at::TensorOptions().dtype(at::kBFloat16);

  at::parallel_for(0, n_blocks, 1, [&](int64_t lo, int64_t hi) {
    std::vector<int64_t> past_keys, run_keys, q_rows;
    std::vector<float> mask;
    for (int64_t blk = lo; blk < hi; ++blk) {
      const int64_t a = blk * block_m, b = std::min(T, a + block_m), bm = b - a;
      block_keys(L, a, b, past_keys, run_keys, mask);
      const int64_t np = past_keys.size(), nk = np + run_keys.size();
      // bf16: the key count is padded to a multiple of kKeyPad (zero keys, masked out) so that oneDNN meets a
      // few GEMM shapes and reuses its compiled kernels (a new shape costs it a kernel build, 3-4x the GEMM)
      const int64_t nkp = kBf16 ? (nk + kKeyPad - 1) / kKeyPad * kKeyPad : nk;
      at::Tensor mask_t = at::from_blob(mask.data(), {1, bm, nk}, f32);
      if (nkp != nk) {
        at::Tensor padded = at::full({1, bm, nkp}, -std::numeric_limits<float>::infinity(), f32);
        padded.narrow(2, 0, nk).copy_(mask_t);
        mask_t = padded;
      }
      q_rows.resize(bm);
      for (int64_t i = 0; i < bm; ++i) q_rows[i] = a + i;
      // fp32: gathered as fp32 [rows, D]; bf16: q and v as bf16 [rows, D], k as bf16 [D, nkp]
      at::Tensor qb = at::empty({G * bm, D}, kBf16 ? lowp : f32);
      at::Tensor kb = kBf16 ? at::zeros({D, nkp}, lowp) : at::empty({nk, D}, f32);
      at::Tensor vb = kBf16 ? at::zeros({nkp, D}, lowp) : at::empty({nk, D}, f32);
      for (int64_t h = 0; h < Hkv; ++h) {
        at::Tensor s;
        if constexpr (kBf16) {
          at::BFloat16* qd = qb.data_ptr<at::BFloat16>();
          for (int64_t g = 0; g < G; ++g)
            for (int64_t i = 0; i < bm; ++i)
              std::memcpy(qd + (g * bm + i) * D, qp + (a + i) * qs0 + (h * G + g) * qs1, D * sizeof(scalar_t));
          at::BFloat16* kd = kb.data_ptr<at::BFloat16>();
          at::BFloat16* vd = vb.data_ptr<at::BFloat16>();
          auto put = [&](const scalar_t* ksrc, const scalar_t* vsrc, int64_t c) {
            for (int64_t x = 0; x < D; ++x) kd[x * nkp + c] = ksrc[x];
            std::memcpy(vd + c * D, vsrc, D * sizeof(scalar_t));
          };
          for (int64_t c = 0; c < np; ++c) put(pkp + past_keys[c] * pks0 + h * pks1, pvp + past_keys[c] * pvs0 + h * pvs1, c);
          for (int64_t c = np; c < nk; ++c)
            put(kp + run_keys[c - np] * ks0 + h * ks1, vp + run_keys[c - np] * vs0 + h * vs1, c);
          s = at::mm(qb, kb).to(at::kFloat).mul_(scale);  // [G * bm, nkp]
        } else {
          for (int64_t g = 0; g < G; ++g)  // rows g * bm + i: query head h * G + g of token a + i
            gather_rows<scalar_t>(qp, qs0, (h * G + g) * qs1, q_rows.data(), bm, D, static_cast<float>(scale),
                                  qb.data_ptr<float>() + g * bm * D);
          if (np) {
            gather_rows<scalar_t>(pkp, pks0, h * pks1, past_keys.data(), np, D, 1.f, kb.data_ptr<float>());
            gather_rows<scalar_t>(pvp, pvs0, h * pvs1, past_keys.data(), np, D, 1.f, vb.data_ptr<float>());
          }
          gather_rows<scalar_t>(kp, ks0, h * ks1, run_keys.data(), nk - np, D, 1.f, kb.data_ptr<float>() + np * D);
          gather_rows<scalar_t>(vp, vs0, h * vs1, run_keys.data(), nk - np, D, 1.f, vb.data_ptr<float>() + np * D);
          s = at::mm(qb, kb.t());                           // [G * bm, nk]
        }
        s.view({G, bm, nkp}).add_(mask_t);                  // every row keeps its own token: no empty row
        at::Tensor probs = at::softmax(s, -1);
        at::Tensor o = at::mm(kBf16 ? probs.to(at::kBFloat16) : probs, vb);  // [G * bm, D]
        const scalar_t* orow = o.data_ptr<scalar_t>();
        for (int64_t g = 0; g < G; ++g)
          for (int64_t i = 0; i < bm; ++i)
            std::memcpy(op + (a + i) * Hq * D + (h * G + g) * D, orow + (g * bm + i) * D, D * sizeof(scalar_t));
      }
    }
  });
}

void check_kv(const at::Tensor& t, const char* name, int64_t Hkv, int64_t D, at::ScalarType dtype) {
  TORCH_CHECK(t.dim() == 3 && t.size(1) == Hkv && t.size(2) == D, "tree_attention: ", name,
              " must be [*, Hkv=", Hkv, ", D=", D, "], got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == dtype, "tree_attention: ", name, " must have q's dtype ", dtype, ", got ",
              t.scalar_type());
  TORCH_CHECK(t.stride(2) == 1, "tree_attention: ", name, " must be contiguous in its last dimension");
}

at::Tensor tree_attention_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              const at::Tensor& node, const at::Tensor& ancestry,
                              const c10::optional<at::Tensor>& past_k, const c10::optional<at::Tensor>& past_v,
                              const c10::optional<at::Tensor>& past_node, double scale, int64_t block_m) {
  // The GEMMs below run in the inputs' dtype: a caller's torch.autocast must not recast them (it would hand
  // bf16 results to code that reads fp32 buffers).
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  TORCH_CHECK(q.dim() == 3, "tree_attention: q must be [T, Hq, D], got ", q.sizes());
  const int64_t T = q.size(0), Hq = q.size(1), D = q.size(2), Hkv = k.dim() == 3 ? k.size(1) : 0;
  TORCH_CHECK(q.scalar_type() == at::kFloat || q.scalar_type() == at::kBFloat16,
              "tree_attention: native op takes fp32 or bf16, got ", q.scalar_type());
  TORCH_CHECK(q.stride(2) == 1, "tree_attention: q must be contiguous in its last dimension");
  check_kv(k, "k", Hkv, D, q.scalar_type());
  check_kv(v, "v", Hkv, D, q.scalar_type());
  TORCH_CHECK(k.size(0) == T && v.size(0) == T, "tree_attention: k and v must have T=", T, " rows");
  TORCH_CHECK(Hkv > 0 && Hq % Hkv == 0, "tree_attention: Hq=", Hq, " is not a multiple of Hkv=", Hkv);
  TORCH_CHECK(block_m > 0, "tree_attention: block_m must be > 0");
  TORCH_CHECK(node.dim() == 1 && node.size(0) == T && node.scalar_type() == at::kLong,
              "tree_attention: node must be int64 [T=", T, "]");
  TORCH_CHECK(ancestry.dim() == 2 && ancestry.size(0) == ancestry.size(1) && ancestry.scalar_type() == at::kBool,
              "tree_attention: ancestry must be bool [N, N]");
  const bool has_past = past_k.has_value() && past_k->size(0) > 0;
  TORCH_CHECK(past_k.has_value() == past_v.has_value() && past_k.has_value() == past_node.has_value(),
              "tree_attention: past_k, past_v and past_node go together");
  at::Tensor node_c = node.contiguous(), anc_c = ancestry.contiguous(), past_node_c;
  const int64_t N = anc_c.size(0);
  int64_t P = 0;
  if (has_past) {
    check_kv(*past_k, "past_k", Hkv, D, q.scalar_type());
    check_kv(*past_v, "past_v", Hkv, D, q.scalar_type());
    P = past_k->size(0);
    TORCH_CHECK(past_v->size(0) == P && past_node->dim() == 1 && past_node->size(0) == P &&
                    past_node->scalar_type() == at::kLong,
                "tree_attention: past_v must be [P=", P, ", Hkv, D] and past_node int64 [P]");
    past_node_c = past_node->contiguous();
  }
  if (T) {
    TORCH_CHECK(node_c.min().item<int64_t>() >= 0 && node_c.max().item<int64_t>() < N,
                "tree_attention: node ids must lie in [0, N=", N, ")");
  }
  if (P) {
    TORCH_CHECK(past_node_c.min().item<int64_t>() >= 0 && past_node_c.max().item<int64_t>() < N,
                "tree_attention: past_node ids must lie in [0, N=", N, ")");
  }
  at::Tensor out = at::empty({T, Hq, D}, q.options());
  if (T == 0) return out;
  Layout L{node_c.data_ptr<int64_t>(), P ? past_node_c.data_ptr<int64_t>() : nullptr, anc_c.data_ptr<bool>(), T, P, N};
  if (q.scalar_type() == at::kFloat)
    tree_attention_impl<float>(q, k, v, past_k, past_v, L, scale, block_m, out);
  else
    tree_attention_impl<at::BFloat16>(q, k, v, past_k, past_v, L, scale, block_m, out);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(igsearch, CPU, m) { m.impl("tree_attention", &tree_attention_cpu); }
