// Tensor-core attention for short sequences (L <= 64), bf16/fp16: the Decision-Transformer case (3K = 60).
//
// One CTA per (batch, head) holds the whole problem in shared memory: Q, K, V (and dO) as 64-row tiles, the
// 64x64 score and probability tiles, and fp32 staging for outputs. Four warps own 16 query rows each (16 key rows
// in the dK/dV phase). Matrix products use WMMA 16x16x16 with fp32 accumulation; softmax, masking and dropout are
// SIMT on the fp32 score tile. Causality skips the key tiles above the diagonal. Same semantics and dropout
// stream as the SIMT kernels; launched from attention_tc.cu, emulated on the CPU by tests/ops_cuda_emu.
#pragma once

#if !defined(PYSEQRL_CUDA_EMULATION)
#include <mma.h>
#endif

#include <type_traits>

#include "kernels/attention.h"
#include "kernels/attention_tiles.cuh"

// bf16 WMMA needs sm_80; older device passes compile an empty body (the launcher never picks these kernels there).
#if defined(PYSEQRL_CUDA_EMULATION) || !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
#define PYSEQRL_TC_BODY 1
#else
#define PYSEQRL_TC_BODY 0
#endif

namespace pyseqrl {
namespace kernels {
namespace tc {

namespace wmma = nvcuda::wmma;

constexpr int kMaxLen = 64;  // queries and keys: one tile
constexpr int kWarps = 4;    // x 16 rows
constexpr int kThreads = kWarps * 32;
constexpr int kSP = kMaxLen + 4;  // fp32 pitch of 64-wide score tiles
constexpr int kPP = kMaxLen + 8;  // T pitch of 64-wide probability tiles
template <int D>
constexpr int tpitch() {
  return D + 8;  // T pitch of Q/K/V/dO tiles (16-byte multiple)
}
template <int D>
constexpr int fpitch() {
  return D + 4;  // fp32 pitch of output staging
}
constexpr int align32(int bytes) { return (bytes + 31) / 32 * 32; }

// Byte offsets of the shared-memory regions (every region 32-byte aligned, as WMMA pointers must be).
template <typename T, int D>
struct FwdLayout {
  static constexpr int tile = align32(kMaxLen * tpitch<D>() * static_cast<int>(sizeof(T)));
  static constexpr int q = 0, k = tile, v = 2 * tile;
  static constexpr int s = 3 * tile;                                         // fp32 [64][kSP]
  static constexpr int pr = s + align32(kMaxLen * kSP * 4);                  // T [64][kPP]
  static constexpr int o = pr + align32(kMaxLen * kPP * static_cast<int>(sizeof(T)));  // fp32 [64][fpitch]
  static constexpr int bytes = o + align32(kMaxLen * fpitch<D>() * 4);
};

template <typename T, int D>
struct BwdLayout {
  static constexpr int tile = align32(kMaxLen * tpitch<D>() * static_cast<int>(sizeof(T)));
  static constexpr int q = 0, k = tile, v = 2 * tile, g = 3 * tile;
  static constexpr int s = 4 * tile;                                          // fp32 [64][kSP]
  static constexpr int dp = s + align32(kMaxLen * kSP * 4);                   // fp32 [64][kSP]
  static constexpr int stage = s;  // fp32 [64][fpitch], reuses the score tiles once they are consumed
  static constexpr int pd = dp + align32(kMaxLen * kSP * 4);                  // T [64][kPP] dropped P
  static constexpr int ds = pd + align32(kMaxLen * kPP * static_cast<int>(sizeof(T)));  // T [64][kPP] dS
  static constexpr int stats = ds + align32(kMaxLen * kPP * static_cast<int>(sizeof(T)));  // lse[64], delta[64]
  static constexpr int bytes = stats + 2 * kMaxLen * 4;
  static_assert(kMaxLen * fpitch<D>() * 4 <= pd - s, "output staging must fit in the score tiles");
};

// dst[r][d] = src[r * stride_l + d] for r < L, zero for L <= r < 64 (kept in T); 16-byte loads when possible.
template <typename T, int D>
__device__ __forceinline__ void stage_tile(T* __restrict__ dst, const T* __restrict__ src, int64_t stride_l, int L) {
  constexpr int TP = tpitch<D>();
  constexpr int V = 16 / sizeof(T);
  static_assert(D % V == 0 && (TP * sizeof(T)) % 16 == 0, "rows must split into 16-byte vectors");
  if (attn::vector_loadable(src, stride_l)) {
    for (int idx = threadIdx.x; idx < kMaxLen * (D / V); idx += kThreads) {
      const int r = idx / (D / V), d = (idx % (D / V)) * V;
      const uint4 raw = r < L ? *reinterpret_cast<const uint4*>(src + static_cast<int64_t>(r) * stride_l + d)
                              : make_uint4(0u, 0u, 0u, 0u);  // all-zero bits are +0 in bf16/fp16
      *reinterpret_cast<uint4*>(dst + r * TP + d) = raw;
    }
    return;
  }
  for (int idx = threadIdx.x; idx < kMaxLen * D; idx += kThreads) {
    const int r = idx / D, d = idx % D;
    dst[r * TP + d] = r < L ? src[static_cast<int64_t>(r) * stride_l + d] : from_float<T>(0.0f);
  }
}

// out[16 x 16*ntiles] (fp32, pitch ldo) = A[16 x K] . B where A is row-major T (pitch lda) and B is given by
// `load_b(fragment&, kk, n)`; only the k-range [k_begin, k_end) contributes.
template <typename T, typename LoadA, typename LoadB>
__device__ __forceinline__ void warp_gemm_16xN(float* out, int ldo, int ntiles, int k_begin, int k_end,
                                               LoadA load_a, LoadB load_b) {
  for (int n = 0; n < ntiles; ++n) {
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    wmma::fill_fragment(acc, 0.0f);
    for (int kk = k_begin; kk < k_end; kk += 16) {
      load_a(kk);
      load_b(kk, n);
      wmma::mma_sync(acc, load_a.frag, load_b.frag, acc);
    }
    wmma::store_matrix_sync(out + n * 16, acc, ldo, wmma::mem_row_major);
  }
}

// Fragment loaders: A tiles (16 rows x 16 k) row- or column-major, B tiles (16 k x 16 n) row- or column-major.
template <typename T, typename Layout>
struct ALoader {
  const T* base;  // element (m, k) at base[m * ld + k] (row_major) or base[k * ld + m] (col_major)
  int ld;
  wmma::fragment<wmma::matrix_a, 16, 16, 16, T, Layout> frag;
  __device__ __forceinline__ void operator()(int kk) {
    if constexpr (std::is_same<Layout, wmma::row_major>::value) wmma::load_matrix_sync(frag, base + kk, ld);
    else wmma::load_matrix_sync(frag, base + kk * ld, ld);
  }
};

template <typename T, typename Layout>
struct BLoader {
  const T* base;  // element (k, n) at base[k * ld + n] (row_major) or base[n * ld + k] (col_major)
  int ld;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, T, Layout> frag;
  __device__ __forceinline__ void operator()(int kk, int n) {
    if constexpr (std::is_same<Layout, wmma::row_major>::value) wmma::load_matrix_sync(frag, base + kk * ld + n * 16, ld);
    else wmma::load_matrix_sync(frag, base + n * 16 * ld + kk, ld);
  }
};

template <typename T, int D>
__global__ void __launch_bounds__(kThreads) attention_fwd_tc_kernel(const AttentionForwardParams p, uint32_t threshold) {
#if PYSEQRL_TC_BODY
  using Lay = FwdLayout<T, D>;
  constexpr int TP = tpitch<D>(), FP = fpitch<D>();
  PYSEQRL_EXTERN_SMEM(smem4);
  char* base = reinterpret_cast<char*>(smem4);
  T* Qs = reinterpret_cast<T*>(base + Lay::q);
  T* Ks = reinterpret_cast<T*>(base + Lay::k);
  T* Vs = reinterpret_cast<T*>(base + Lay::v);
  float* Ss = reinterpret_cast<float*>(base + Lay::s);
  T* Ps = reinterpret_cast<T*>(base + Lay::pr);
  float* Os = reinterpret_cast<float*>(base + Lay::o);

  const AttentionShape& s = p.shape;
  const int L = s.L;
  const int bh = blockIdx.x, b = bh / s.H, h = bh % s.H;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int row0 = warp * 16;
  const T* q = static_cast<const T*>(p.q) + b * p.q_strides.b + h * p.q_strides.h;
  const T* k = static_cast<const T*>(p.k) + b * p.k_strides.b + h * p.k_strides.h;
  const T* v = static_cast<const T*>(p.v) + b * p.v_strides.b + h * p.v_strides.h;
  T* o = static_cast<T*>(p.o) + b * p.o_strides.b + h * p.o_strides.h;
  const uint8_t* mask = s.key_mask == nullptr ? nullptr : s.key_mask + b * s.mask_stride_b;
  const attn::DropoutState drop = attn::load_dropout(s, threshold);

  stage_tile<T, D>(Qs, q, p.q_strides.l, L);
  stage_tile<T, D>(Ks, k, p.k_strides.l, L);
  stage_tile<T, D>(Vs, v, p.v_strides.l, L);
  __syncthreads();

  // S_w = Q_w K^T, key tiles 0..warp only (the rest is above the causal diagonal)
  {
    ALoader<T, wmma::row_major> la{Qs + row0 * TP, TP, {}};
    BLoader<T, wmma::col_major> lb{Ks, TP, {}};  // B(k, n) = K[n][k]
    warp_gemm_16xN<T>(Ss + row0 * kSP, kSP, warp + 1, 0, D, la, lb);
  }
  __syncwarp();

  // softmax of the warp's 16 rows; lane owns keys lane and lane + 32
  const float c = s.scale * attn::kLog2e;
  for (int r = 0; r < 16; ++r) {
    const int i = row0 + r;
    float sv[2];
#pragma unroll
    for (int t = 0; t < 2; ++t) {
      const int j = lane + 32 * t;
      const bool ok = i < L && j <= i && attn::key_allowed(mask, j, L);
      sv[t] = ok ? Ss[i * kSP + j] * c : -INFINITY;
    }
    const float m = warp_max(fmaxf(sv[0], sv[1]));
    float e[2] = {0.0f, 0.0f}, sum = 0.0f;
    if (m != -INFINITY) {  // warp-uniform
      e[0] = exp2f(sv[0] - m);
      e[1] = exp2f(sv[1] - m);
      sum = warp_sum(e[0] + e[1]);
    }
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
#pragma unroll
    for (int t = 0; t < 2; ++t) {
      const int j = lane + 32 * t;
      float pv = e[t] * inv;
      if (drop.on) pv = dropout_keep(drop.seed, drop.offset, bh, i, j, L, drop.threshold) ? pv * drop.inv_keep : 0.0f;
      Ps[i * kPP + j] = from_float<T>(pv);
    }
    if (lane == 0 && i < L) p.lse[static_cast<int64_t>(bh) * L + i] = sum > 0.0f ? m + log2f(sum) : INFINITY;
  }
  __syncwarp();

  // O_w = P_w V over key tiles 0..warp
  {
    ALoader<T, wmma::row_major> la{Ps + row0 * kPP, kPP, {}};
    BLoader<T, wmma::row_major> lb{Vs, TP, {}};  // B(k, n) = V[k][n]
    warp_gemm_16xN<T>(Os + row0 * FP, FP, D / 16, 0, (warp + 1) * 16, la, lb);
  }
  __syncwarp();
  for (int r = 0; r < 16; ++r) {
    const int i = row0 + r;
    if (i >= L) break;
    for (int d = lane; d < D; d += 32) o[static_cast<int64_t>(i) * p.o_strides.l + d] = from_float<T>(Os[i * FP + d]);
  }
#endif
}

template <typename T, int D>
__global__ void __launch_bounds__(kThreads) attention_bwd_tc_kernel(const AttentionBackwardParams p, uint32_t threshold) {
#if PYSEQRL_TC_BODY
  using Lay = BwdLayout<T, D>;
  constexpr int TP = tpitch<D>(), FP = fpitch<D>();
  PYSEQRL_EXTERN_SMEM(smem4);
  char* base = reinterpret_cast<char*>(smem4);
  T* Qs = reinterpret_cast<T*>(base + Lay::q);
  T* Ks = reinterpret_cast<T*>(base + Lay::k);
  T* Vs = reinterpret_cast<T*>(base + Lay::v);
  T* Gs = reinterpret_cast<T*>(base + Lay::g);
  float* Ss = reinterpret_cast<float*>(base + Lay::s);
  float* dPs = reinterpret_cast<float*>(base + Lay::dp);
  float* St = reinterpret_cast<float*>(base + Lay::stage);
  T* Pds = reinterpret_cast<T*>(base + Lay::pd);
  T* dSs = reinterpret_cast<T*>(base + Lay::ds);
  float* lse_s = reinterpret_cast<float*>(base + Lay::stats);
  float* delta_s = lse_s + kMaxLen;

  const AttentionShape& s = p.shape;
  const int L = s.L;
  const int bh = blockIdx.x, b = bh / s.H, h = bh % s.H;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int row0 = warp * 16;
  const T* q = static_cast<const T*>(p.q) + b * p.q_strides.b + h * p.q_strides.h;
  const T* k = static_cast<const T*>(p.k) + b * p.k_strides.b + h * p.k_strides.h;
  const T* v = static_cast<const T*>(p.v) + b * p.v_strides.b + h * p.v_strides.h;
  const T* o = static_cast<const T*>(p.o) + b * p.o_strides.b + h * p.o_strides.h;
  const T* g = static_cast<const T*>(p.dout) + b * p.dout_strides.b + h * p.dout_strides.h;
  T* dq = static_cast<T*>(p.dq) + b * p.dq_strides.b + h * p.dq_strides.h;
  T* dk = static_cast<T*>(p.dk) + b * p.dk_strides.b + h * p.dk_strides.h;
  T* dv = static_cast<T*>(p.dv) + b * p.dv_strides.b + h * p.dv_strides.h;
  const uint8_t* mask = s.key_mask == nullptr ? nullptr : s.key_mask + b * s.mask_stride_b;
  const attn::DropoutState drop = attn::load_dropout(s, threshold);

  stage_tile<T, D>(Qs, q, p.q_strides.l, L);
  stage_tile<T, D>(Ks, k, p.k_strides.l, L);
  stage_tile<T, D>(Vs, v, p.v_strides.l, L);
  stage_tile<T, D>(Gs, g, p.dout_strides.l, L);
  for (int r = 0; r < 16; ++r) {  // lse_i and delta_i = dO_i . O_i of the warp's rows
    const int i = row0 + r;
    float part = 0.0f;
    if (i < L)
      for (int d = lane; d < D; d += 32)
        part = fmaf(to_float(o[static_cast<int64_t>(i) * p.o_strides.l + d]),
                    to_float(g[static_cast<int64_t>(i) * p.dout_strides.l + d]), part);
    const float delta = warp_sum(part);
    if (lane == 0) {
      delta_s[i] = delta;
      lse_s[i] = i < L ? p.lse[static_cast<int64_t>(bh) * L + i] : INFINITY;
      if (i < L) p.delta[static_cast<int64_t>(bh) * L + i] = delta;
    }
  }
  __syncthreads();

  // S_w = Q_w K^T and dP_w = dO_w V^T on key tiles 0..warp
  {
    ALoader<T, wmma::row_major> la{Qs + row0 * TP, TP, {}};
    BLoader<T, wmma::col_major> lb{Ks, TP, {}};
    warp_gemm_16xN<T>(Ss + row0 * kSP, kSP, warp + 1, 0, D, la, lb);
    ALoader<T, wmma::row_major> lg{Gs + row0 * TP, TP, {}};
    BLoader<T, wmma::col_major> lv{Vs, TP, {}};
    warp_gemm_16xN<T>(dPs + row0 * kSP, kSP, warp + 1, 0, D, lg, lv);
  }
  __syncwarp();

  // P, dropped P and dS for the warp's rows, all 64 columns (zeros where masked)
  const float c = s.scale * attn::kLog2e;
  for (int r = 0; r < 16; ++r) {
    const int i = row0 + r;
    const float lse_i = lse_s[i], delta_i = delta_s[i];
#pragma unroll
    for (int t = 0; t < 2; ++t) {
      const int j = lane + 32 * t;
      const bool ok = i < L && j <= i && lse_i != INFINITY && attn::key_allowed(mask, j, L);
      float pv = 0.0f, pd = 0.0f, ds = 0.0f;
      if (ok) {
        pv = exp2f(Ss[i * kSP + j] * c - lse_i);
        float dp = dPs[i * kSP + j];
        pd = pv;
        if (drop.on) {
          const bool keep = dropout_keep(drop.seed, drop.offset, bh, i, j, L, drop.threshold);
          pd = keep ? pv * drop.inv_keep : 0.0f;
          dp = keep ? dp * drop.inv_keep : 0.0f;
        }
        ds = pv * (dp - delta_i);
      }
      Pds[i * kPP + j] = from_float<T>(pd);
      dSs[i * kPP + j] = from_float<T>(ds);
    }
  }
  __syncthreads();  // every warp's P/dS rows are complete; the score tiles become output staging

  float* stage = St + row0 * FP;
  // dQ_w = scale * dS_w K over key tiles 0..warp
  {
    ALoader<T, wmma::row_major> la{dSs + row0 * kPP, kPP, {}};
    BLoader<T, wmma::row_major> lb{Ks, TP, {}};
    warp_gemm_16xN<T>(stage, FP, D / 16, 0, (warp + 1) * 16, la, lb);
  }
  __syncwarp();
  for (int r = 0; r < 16 && row0 + r < L; ++r)
    for (int d = lane; d < D; d += 32)
      dq[static_cast<int64_t>(row0 + r) * p.dq_strides.l + d] = from_float<T>(stage[r * FP + d] * s.scale);
  __syncwarp();
  // dV_w = Pd^T dO over query tiles warp..3 (keys of this warp are row0..row0+15)
  {
    ALoader<T, wmma::col_major> la{Pds + row0, kPP, {}};  // A(m, k) = Pd[k][row0 + m]
    BLoader<T, wmma::row_major> lb{Gs, TP, {}};
    warp_gemm_16xN<T>(stage, FP, D / 16, row0, kMaxLen, la, lb);
  }
  __syncwarp();
  for (int r = 0; r < 16 && row0 + r < L; ++r)
    for (int d = lane; d < D; d += 32)
      dv[static_cast<int64_t>(row0 + r) * p.dv_strides.l + d] = from_float<T>(stage[r * FP + d]);
  __syncwarp();
  // dK_w = scale * dS^T Q over query tiles warp..3
  {
    ALoader<T, wmma::col_major> la{dSs + row0, kPP, {}};
    BLoader<T, wmma::row_major> lb{Qs, TP, {}};
    warp_gemm_16xN<T>(stage, FP, D / 16, row0, kMaxLen, la, lb);
  }
  __syncwarp();
  for (int r = 0; r < 16 && row0 + r < L; ++r)
    for (int d = lane; d < D; d += 32)
      dk[static_cast<int64_t>(row0 + r) * p.dk_strides.l + d] = from_float<T>(stage[r * FP + d] * s.scale);
#endif
}

// Launchers (instantiated in attention_tc.cu; the CPU emulator calls them too). Every instantiation is its own
// kernel needing 50-120 KiB of shared memory, so each gets its own attribute.
template <typename T, int D>
void launch_forward(const AttentionForwardParams& p, cudaStream_t stream) {
  launch_kernel(attention_fwd_tc_kernel<T, D>, "attention_fwd_tc_kernel", dim3(p.shape.B * p.shape.H), kThreads,
                FwdLayout<T, D>::bytes, stream, p, dropout_threshold(p.shape.dropout_p));
}

template <typename T, int D>
void launch_backward(const AttentionBackwardParams& p, cudaStream_t stream) {
  launch_kernel(attention_bwd_tc_kernel<T, D>, "attention_bwd_tc_kernel", dim3(p.shape.B * p.shape.H), kThreads,
                BwdLayout<T, D>::bytes, stream, p, dropout_threshold(p.shape.dropout_p));
}

}  // namespace tc
}  // namespace kernels
}  // namespace pyseqrl
