"""Wiki-RL's similarity-based alignment loss (Reid et al. 2022) without the B x T x C x D tensor.

The LM's token embeddings are clustered with k-means into C centroids once. Each input embedding of the Decision
Transformer is pulled toward its most similar centroid: loss = -mean_i max_c cos(e_i, c). The published code
broadcast (B, T, 1, D) against (1, 1, C, D), about 12 GB for GPT-2; here both sides are L2-normalised and the cosine
table is a plain matmul [N, D] x [D, C], computed in chunks of N so memory stays below ``max_elements``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kmeans(x: torch.Tensor, num_clusters: int, iters: int = 20, seed: int = 0, chunk: int = 8192) -> torch.Tensor:
    """Lloyd's k-means with a seeded random initialisation.

    Args:
        x: float (N, D) points (e.g. the LM's token table).
        num_clusters: C, at most N.
        iters: Lloyd iterations.
        seed: seed of the initial centroid choice.
        chunk: rows assigned at a time (memory is chunk x C).

    Returns:
        float32 (C, D) centroids.
    """
    x = x.detach().float()
    N = x.shape[0]
    if not 1 <= num_clusters <= N:
        raise ValueError(f"num_clusters must be in [1, {N}] (number of points), got {num_clusters}")
    g = torch.Generator(device="cpu").manual_seed(seed)
    centroids = x[torch.randperm(N, generator=g)[:num_clusters].to(x.device)].clone()  # (C, D)
    for _ in range(iters):
        sums = torch.zeros_like(centroids)
        counts = torch.zeros(num_clusters, device=x.device)
        c_sq = (centroids * centroids).sum(1)  # (C,)
        for i in range(0, N, chunk):
            xb = x[i : i + chunk]  # (n, D)
            assign = (c_sq[None, :] - 2 * xb @ centroids.T).argmin(1)  # (n,) nearest centroid (|x|^2 dropped)
            sums.index_add_(0, assign, xb)
            counts.index_add_(0, assign, torch.ones_like(assign, dtype=counts.dtype))
        nonempty = counts > 0
        centroids[nonempty] = sums[nonempty] / counts[nonempty, None]  # empty clusters keep their centroid
    return centroids


def alignment_loss(embeddings: torch.Tensor, centroids: torch.Tensor, mask: torch.Tensor | None = None,
                   max_elements: int = 1 << 24) -> torch.Tensor:
    """Negative mean over tokens of the maximum cosine similarity to any centroid.

    Args:
        embeddings: float (B, T, D) input embeddings (T = 3K tokens).
        centroids: float (C, D) k-means centroids of the LM's token embeddings (no gradient needed).
        mask: optional (B, T), nonzero for real tokens; padded tokens do not count.
        max_elements: cap on the size of one [n, C] similarity block; N is processed in chunks of
            ``max_elements // C`` rows.

    Returns:
        scalar loss in [-1, 1].
    """
    if embeddings.shape[-1] != centroids.shape[-1]:
        raise ValueError(
            f"embeddings have D={embeddings.shape[-1]} but centroids have D={centroids.shape[-1]}"
        )
    e = F.normalize(embeddings.reshape(-1, embeddings.shape[-1]).float(), dim=-1)  # (N, D)
    c = F.normalize(centroids.float(), dim=-1).T  # (D, C)
    rows = max(1, max_elements // c.shape[1])
    best = torch.cat([(e[i : i + rows] @ c).amax(dim=1) for i in range(0, e.shape[0], rows)])  # (N,)
    if mask is None:
        return -best.mean()
    w = mask.reshape(-1).to(best.dtype)
    return -(best * w).sum() / w.sum().clamp(min=1.0)
