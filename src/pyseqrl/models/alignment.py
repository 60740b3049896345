"""Wiki-RL's embedding-alignment loss (Reid et al. 2022): pull the Decision Transformer's input embeddings toward
k-means centroids of the language model's token embeddings.

Two computations carry that name, and they are not the same:

* ``"official"`` -- what the official code computes (``seq_trainer.py``, ``kmeans_cosine_max_loss``): with both
  sides L2-normalised, the elementwise products ``e_j c_j`` form a (B, T, C, D) tensor whose maximum is taken over
  the clusters C *per coordinate j*, then averaged over tokens and coordinates:
  ``loss = -mean_{i,j} max_c e_ij c_cj``. Because ``e_ij`` is one scalar, ``max_c e_ij c_cj`` is ``e_ij max_c c_cj``
  for ``e_ij >= 0`` and ``e_ij min_c c_cj`` otherwise, so it is computed exactly in O(N D) memory here.
* ``"paper"`` -- the paper's description: each embedding's maximum cosine similarity to any centroid,
  ``loss = -mean_i max_c cos(e_i, c)``, computed as chunked [N, D] x [D, C] matmuls.

Their gradients differ in size by about half the embedding width (63x at D=128, 383x at D=768 for random inputs),
so the same weight means different things. The weight is annealed with the official sigmoid (:func:`anneal_weight`).
Centroids come from :func:`kmeans`, with the official cosine assignment by default.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

ALIGN_LOSSES = ("official", "paper")
ANNEALS = ("sigmoid", "linear", "none")


def kmeans(
    x: torch.Tensor,
    num_clusters: int,
    iters: int = 100,
    seed: int = 0,
    metric: str = "cosine",
    tol: float = 1e-4,
    chunk: int = 8192,
) -> torch.Tensor:
    """Lloyd's k-means from ``num_clusters`` distinct random points, until the centroids move less than ``tol``.

    Args:
        x: float (N, D) points (the LM's input-embedding table).
        num_clusters: C, at most N.
        iters: maximum iterations.
        seed: seed of the initial choice.
        metric: "cosine" (assign to the most cosine-similar centroid; centroids are member means, as
            kmeans_pytorch with distance="cosine" in the official Wiki-RL code) or "euclidean".
        tol: stop when the summed squared centroid shift falls below this (kmeans_pytorch's rule).
        chunk: rows assigned at a time (memory is chunk x C).

    Returns:
        float32 (C, D) centroids.
    """
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
    x = x.detach().float()
    N = x.shape[0]
    if not 1 <= num_clusters <= N:
        raise ValueError(f"num_clusters must be in [1, {N}] (number of points), got {num_clusters}")
    g = torch.Generator(device="cpu").manual_seed(seed)
    centroids = x[torch.randperm(N, generator=g)[:num_clusters].to(x.device)].clone()  # (C, D)
    xn = F.normalize(x, dim=1) if metric == "cosine" else x
    for _ in range(iters):
        sums = torch.zeros_like(centroids)
        counts = torch.zeros(num_clusters, device=x.device)
        if metric == "cosine":
            cn = F.normalize(centroids, dim=1)
        else:
            c_sq = (centroids * centroids).sum(1)  # (C,)
        for i in range(0, N, chunk):
            xb = xn[i : i + chunk]  # (n, D)
            if metric == "cosine":
                assign = (xb @ cn.T).argmax(1)  # (n,) most similar centroid
            else:
                assign = (c_sq[None, :] - 2 * xb @ centroids.T).argmin(1)  # (n,) nearest (|x|^2 dropped)
            sums.index_add_(0, assign, x[i : i + chunk])
            counts.index_add_(0, assign, torch.ones_like(assign, dtype=counts.dtype))
        nonempty = counts > 0
        new = centroids.clone()
        new[nonempty] = sums[nonempty] / counts[nonempty, None]  # empty clusters keep their centroid
        shift = float(((new - centroids) ** 2).sum())
        centroids = new
        if shift < tol:
            break
    return centroids


def alignment_loss(
    embeddings: torch.Tensor,
    centroids: torch.Tensor,
    mask: torch.Tensor | None = None,
    kind: str = "official",
    max_elements: int = 1 << 24,
) -> torch.Tensor:
    """Alignment loss of input embeddings to LM centroids (see the module docstring for the two ``kind`` s).

    Args:
        embeddings: float (B, T, D) input embeddings (T = 3K tokens).
        centroids: float (C, D) k-means centroids of the LM's token embeddings (no gradient needed).
        mask: optional (B, T), nonzero for real tokens; padded tokens do not count.
        kind: "official" (per-coordinate max) or "paper" (max cosine).
        max_elements: cap on one [n, C] similarity block of the "paper" loss.

    Returns:
        scalar loss in [-1, 1].
    """
    if kind not in ALIGN_LOSSES:
        raise ValueError(f"alignment loss must be one of {ALIGN_LOSSES}, got {kind!r}")
    if embeddings.shape[-1] != centroids.shape[-1]:
        raise ValueError(f"embeddings have D={embeddings.shape[-1]} but centroids have D={centroids.shape[-1]}")
    e = F.normalize(embeddings.reshape(-1, embeddings.shape[-1]).float(), dim=-1)  # (N, D)
    c = F.normalize(centroids.float(), dim=-1)  # (C, D)
    if kind == "official":
        c_max, c_min = c.amax(0), c.amin(0)  # (D,) per coordinate over clusters
        best = torch.where(e >= 0, e * c_max, e * c_min).mean(1)  # (N,) = mean_j max_c e_j c_cj
    else:
        rows = max(1, max_elements // c.shape[0])
        best = torch.cat([(e[i : i + rows] @ c.T).amax(dim=1) for i in range(0, e.shape[0], rows)])  # (N,)
    if mask is None:
        return -best.mean()
    w = mask.reshape(-1).to(best.dtype)
    return -(best * w).sum() / w.sum().clamp(min=1.0)


def anneal_weight(step: int, steps: int, kind: str = "sigmoid") -> float:
    """Multiplier of the alignment weight at ``step`` for an anneal over ``steps``.

    "sigmoid" is the official schedule ``1 / (1 + exp(-((steps - step) / (steps / 10) - 5)))``: about 0.993 at
    step 0, 0.5 at steps / 2 and 0.007 at ``steps`` (never exactly 0). "linear" falls from 1 to 0 at ``steps``;
    "none" keeps 1.
    """
    if kind not in ANNEALS:
        raise ValueError(f"alignment anneal must be one of {ANNEALS}, got {kind!r}")
    if kind == "none":
        return 1.0
    steps = max(1, steps)
    if kind == "linear":
        return max(0.0, 1.0 - step / steps)
    z = (steps - step) / (steps / 10) - 5
    return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0
