"""Vector quantizers with EMA codebooks: plain VQ (one level) and HRQ (paper §3.1-3.2).

One interface for both: `forward(latents)` takes the encoder outputs at the quantization
taps (`[Z^(1), ..., Z^(N)]`, one `[B, L, D]` tensor per level; a single one for VQ) and
returns the straight-through output fed to the decoder, the code ids `[B, L, N]`, the
commitment loss and per-level code counts.

HRQ (Eq. 6-8): level 1 quantizes Z^(1); level n > 1 quantizes the hierarchical input
H^(n) = 2·Z^(n) − e(M^(n−1)); the output is the mean of the level embeddings and the
commitment loss is Σ_n ||Z^(n) − sg[Ẑ^(n)]||² with Ẑ^(n) the mean of the first n level
embeddings. With one level this is exactly the VQ-VAE of Eq. 1-3.

Codebooks are updated by exponential moving averages (no codebook loss). Everything that
touches a codebook runs in fp32 and, under DDP, all-reduces its statistics so every rank
holds the same codebook.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .distance import TRAIN_DISTANCES, nearest_code


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def code_counts(idx: torch.Tensor, size: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """How often each of `size` codes occurs in idx. Unlike `torch.bincount` (which reads the largest
    id back to the host on CUDA) this never synchronises, so a training step queues without stalls."""
    return torch.zeros(size, device=idx.device, dtype=dtype).index_add_(
        0, idx.reshape(-1), torch.ones(idx.numel(), device=idx.device, dtype=dtype))


def kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on rows of x (distances by matrix products); returns (centroids [k, D], counts [k]).

    Empty clusters are re-seeded with random rows so every code starts in use.
    """
    n = x.shape[0]
    idx = torch.randint(n, (k,), generator=generator, device=generator.device).to(x.device)
    centroids = x[idx].clone()
    counts = torch.zeros(k, device=x.device, dtype=x.dtype)
    for _ in range(max(1, iters)):
        assign = nearest_code(x, centroids)
        counts = code_counts(assign, k, x.dtype)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        empty = counts == 0
        centroids = torch.where(empty[:, None], centroids, sums / counts.clamp_min(1)[:, None])
        if empty.any():
            reseed = torch.randint(n, (int(empty.sum()),), generator=generator, device=generator.device).to(x.device)
            centroids[empty] = x[reseed]
    return centroids, counts


class EMACodebook(nn.Module):
    """K code vectors of dimension D updated by EMA of the assigned latents (Razavi et al., 2019).

    cluster_size_k <- γ·cluster_size_k + (1−γ)·n_k
    embed_sum_k    <- γ·embed_sum_k    + (1−γ)·Σ_{i: M_i=k} x_i
    e_k             = embed_sum_k / smoothed(cluster_size_k)   (Laplace smoothing with ε)
    """

    def __init__(self, size: int, dim: int, decay: float, eps: float, dead_threshold: float):
        super().__init__()
        self.size, self.dim = size, dim
        self.decay, self.eps, self.dead_threshold = decay, eps, dead_threshold
        self.register_buffer("embed", torch.randn(size, dim) * dim ** -0.5)
        self.register_buffer("cluster_size", torch.zeros(size))
        self.register_buffer("embed_sum", self.embed.clone())
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        # precision of the search in `assign` (`tokenizers.training.distance`); k-means stays fp32
        self.distance = "fp32"

    def assign(self, x: torch.Tensor) -> torch.Tensor:
        return nearest_code(x, self.embed, mode=self.distance)

    def lookup(self, idx: torch.Tensor) -> torch.Tensor:
        return F.embedding(idx, self.embed)

    @torch.no_grad()
    def ema_update(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """One EMA step from latents x [N, D] assigned to idx [N]; returns the (all-reduced) counts."""
        counts = code_counts(idx, self.size, x.dtype)
        sums = torch.zeros(self.size, self.dim, device=x.device, dtype=x.dtype).index_add_(0, idx, x)
        dist = _dist()
        if dist is not None:  # every rank sees the global batch statistics -> identical codebooks
            stats = torch.cat([counts[:, None], sums], 1)
            dist.all_reduce(stats)
            counts, sums = stats[:, 0], stats[:, 1:]
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (n + self.size * self.eps) * n
        self.embed.copy_(self.embed_sum / smoothed[:, None])
        return counts

    @torch.no_grad()
    def set_codes(self, vectors: torch.Tensor, counts: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Overwrite codes (all, or where mask) and make the EMA state agree with them."""
        if mask is None:
            mask = torch.ones(self.size, dtype=torch.bool, device=vectors.device)
        self.embed[mask] = vectors
        self.cluster_size[mask] = counts
        self.embed_sum[mask] = vectors * counts[:, None]
        self.initialized.fill_(True)

    @torch.no_grad()
    def init_from(self, x: torch.Tensor, kmeans_iters: int, generator: torch.Generator) -> None:
        """(Re-)initialise all codes from latents x by k-means (0 iterations = random rows).

        The EMA counts keep their total mass so the next updates are weighted as before.
        """
        if kmeans_iters > 0:
            centroids, counts = kmeans(x, self.size, kmeans_iters, generator)
        else:
            rows = torch.randint(x.shape[0], (self.size,), generator=generator, device=generator.device).to(x.device)
            centroids, counts = x[rows].clone(), torch.ones(self.size, device=x.device)
        mass = float(self.cluster_size.sum()) or float(x.shape[0])
        counts = counts / counts.sum().clamp_min(1) * mass
        self._broadcast_and_set(centroids, counts, None)

    @torch.no_grad()
    def restart_dead(self, x: torch.Tensor, generator: torch.Generator) -> int:
        """Codes whose EMA count fell below the threshold jump to random current latents."""
        dead = self.cluster_size < self.dead_threshold
        n_dead = int(dead.sum())
        if n_dead == 0:
            return 0
        rows = torch.randint(x.shape[0], (n_dead,), generator=generator, device=generator.device).to(x.device)
        counts = torch.full((n_dead,), max(self.dead_threshold, 1e-3), device=x.device)
        self._broadcast_and_set(x[rows].clone(), counts, dead)
        return n_dead

    def _broadcast_and_set(self, vectors, counts, mask) -> None:
        dist = _dist()
        if dist is not None:  # rank 0 decides, everyone copies (masks agree: EMA state is identical)
            dist.broadcast(vectors, 0)
            dist.broadcast(counts, 0)
        self.set_codes(vectors, counts, mask)


@dataclass
class QuantizerOutput:
    z_q: torch.Tensor            # [B, L, D] straight-through output for the decoder
    codes: torch.Tensor          # [B, L, levels] int64
    commit_loss: torch.Tensor    # scalar, summed over levels (not yet multiplied by β)
    counts: list[torch.Tensor]   # per level [K_n] code counts of this batch (before all-reduce)


class HierarchicalQuantizer(nn.Module):
    """N EMA codebooks applied to the encoder taps Z^(1..N) (N=1: VQ-VAE, N>1: HRQ)."""

    def __init__(self, sizes: list[int], dim: int, *, decay: float, eps: float, dead_threshold: float):
        super().__init__()
        self.codebooks = nn.ModuleList(EMACodebook(k, dim, decay, eps, dead_threshold) for k in sizes)

    @property
    def sizes(self) -> list[int]:
        return [cb.size for cb in self.codebooks]

    def set_distance(self, mode: str) -> None:
        """Precision of the nearest-code search of every level (distance.TRAIN_DISTANCES)."""
        if mode not in TRAIN_DISTANCES:
            raise ValueError(f"tokenizers.training.distance must be one of {TRAIN_DISTANCES}, not {mode!r}")
        for cb in self.codebooks:
            cb.distance = mode

    def _hierarchical_inputs(self, latents, *, update: bool, generator=None, init_iters: int | None = None):
        """Yield (level, Z^(n), H^(n), M^(n), Ĥ^(n)) in order; optionally (re)initialise/update codebooks."""
        prev = None
        for n, (cb, z) in enumerate(zip(self.codebooks, latents)):
            z = z.float()
            h = (z if prev is None else 2 * z - prev).detach().reshape(-1, z.shape[-1])
            if init_iters is not None:
                cb.init_from(h, init_iters, generator)
            m = cb.assign(h)
            e = cb.lookup(m)
            if update:
                cb.ema_update(h, m)
            prev = e.view_as(z)
            yield n, z, m.view(z.shape[:-1]), prev

    @torch.no_grad()
    def init_codebooks(self, latents: list[torch.Tensor], kmeans_iters: int, generator: torch.Generator) -> None:
        """k-means (re-)initialisation level by level: level n uses H^(n) computed with the new level n−1."""
        for _ in self._hierarchical_inputs(latents, update=False, generator=generator, init_iters=kmeans_iters):
            pass

    def forward(self, latents: list[torch.Tensor], *, update: bool = False) -> QuantizerOutput:
        if len(latents) != len(self.codebooks):
            raise ValueError(f"{len(latents)} encoder taps for {len(self.codebooks)} codebooks")
        device_type = latents[0].device.type
        with torch.autocast(device_type=device_type, enabled=False):
            level_sum = None
            commit = latents[0].new_zeros((), dtype=torch.float32)
            codes, counts = [], []
            for n, z, m, e in self._hierarchical_inputs(latents, update=update):
                level_sum = e if level_sum is None else level_sum + e
                z_hat_n = level_sum / (n + 1)  # Ẑ^(n): mean of the first n level embeddings
                commit = commit + F.mse_loss(z, z_hat_n.detach())
                codes.append(m)
                counts.append(code_counts(m, self.codebooks[n].size, torch.int64))
            z_last = latents[-1].float()
            z_hat = level_sum / len(self.codebooks)
            z_q = z_last + (z_hat - z_last).detach()  # straight-through: decoder grads go to Z^(N)
        return QuantizerOutput(z_q=z_q, codes=torch.stack(codes, -1), commit_loss=commit, counts=counts)

    @torch.no_grad()
    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """Code ids [..., levels] -> the decoder input Ẑ (mean of the level embeddings)."""
        out = sum(cb.lookup(codes[..., n]) for n, cb in enumerate(self.codebooks))
        return out / len(self.codebooks)

    @torch.no_grad()
    def restart_dead(self, latents: list[torch.Tensor], generator: torch.Generator) -> list[int]:
        """Restart dead codes of every level from that level's current hierarchical inputs."""
        restarted = []
        prev = None
        for cb, z in zip(self.codebooks, latents):
            z = z.float()
            h = (z if prev is None else 2 * z - prev).reshape(-1, z.shape[-1])
            restarted.append(cb.restart_dead(h, generator))
            prev = cb.lookup(cb.assign(h)).view_as(z)
        return restarted


def usage_and_perplexity(counts: torch.Tensor) -> tuple[float, float]:
    """Share of codes used at least once (%) and exp(entropy) of the code distribution."""
    counts = counts.double()
    total = counts.sum()
    if total == 0:
        return 0.0, 0.0
    p = counts / total
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return float((counts > 0).double().mean() * 100), float(entropy.exp())
