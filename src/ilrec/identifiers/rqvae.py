"""Residual-quantised VAE (RQ-VAE) that turns item embeddings into semantic-ID codes.

Follows TIGER (Rajput et al., "Recommender Systems with Generative Retrieval", NeurIPS 2023) and
LC-Rec (Zheng et al., ICDE 2024): an MLP encoder maps an item embedding to a latent ``z``; ``L``
residual codebooks quantise it (level ``l`` picks the code nearest to the residual left by levels
``< l``); an MLP decoder reconstructs the input from the sum of the chosen codes. The loss is

    MSE(x, x_hat) + sum_l ( ||sg[r_l] - e_l||^2 + beta * ||r_l - sg[e_l]||^2 ),

with the straight-through estimator carrying decoder gradients to the encoder and ``beta = 0.25``.
Codebooks start from k-means on each level's residuals (as in both papers), which avoids most dead
codes. Codes are then the nearest code per level; items that still share all codes are moved to
the nearest *unused* last-level code (LC-Rec resolves collisions on the last level, with a
Sinkhorn-style reassignment capped at 20 rounds; here a greedy nearest-free-code variant), and any
remaining collisions get an extra level via :func:`ilrec.identifiers.semantic.make_unique`.

Inputs are centred and scaled by one global factor before training (a deviation from both
papers, needed for unit-norm sentence embeddings; see :meth:`RQVAE.fit_normalisation`).
Defaults are sized for CPUs: 10k items x 384 dims train in about 40 s of one CPU thread.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "FitResult",
    "RQVAE",
    "RQVAEConfig",
    "assign_codes",
    "code_collision_rate",
    "code_utilisation",
    "fit_codes",
    "kmeans",
    "resolve_collisions",
    "train_rqvae",
]


@dataclass
class RQVAEConfig:
    """Hyperparameters of :class:`RQVAE` and its training.

    Attributes:
        levels: number of residual codebooks (LC-Rec 4, TIGER 3).
        codebook_size: codes per level.
        hidden_dims: encoder hidden widths (the decoder mirrors them). TIGER: 512-256-128.
        e_dim: latent / code dimension (32 in both papers).
        beta: commitment weight.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay (LC-Rec: 1e-4).
        epochs: passes over the data.
        batch_size: mini-batch size; ``None`` trains full-batch.
        kmeans_iters: Lloyd iterations of the codebook initialisation.
        kmeans_max_points: k-means init uses at most this many (randomly chosen) items.
        collision_rounds: rounds of last-level reassignment for colliding items.
        seed: seed for weight init, k-means init and batch order.
    """

    levels: int = 4
    codebook_size: int = 256
    hidden_dims: tuple[int, ...] = (512, 256, 128)
    e_dim: int = 32
    beta: float = 0.25
    lr: float = 1e-3
    weight_decay: float = 1e-4
    epochs: int = 40
    batch_size: int | None = 512
    kmeans_iters: int = 20
    kmeans_max_points: int = 65536
    collision_rounds: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.levels <= 25:  # leaves one letter for make_unique's extra level
            raise ValueError(f"levels must be in [1, 25], got {self.levels}")
        if self.codebook_size < 1:
            raise ValueError(f"codebook_size must be >= 1, got {self.codebook_size}")
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None, got {self.batch_size}")
        self.hidden_dims = tuple(int(h) for h in self.hidden_dims)


def _mlp(dims: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(pairwise(dims)):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _sq_dists(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``[N, K]`` between rows of ``x [N, d]`` and ``c [K, d]``."""
    d = (x * x).sum(1, keepdim=True) - 2.0 * (x @ c.T) + (c * c).sum(1)
    return d.clamp_min_(0.0)


def kmeans(
    x: torch.Tensor,
    k: int,
    iters: int = 20,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Vectorised k-means (k-means++ seeding, Lloyd iterations).

    Empty clusters are re-seeded with the point farthest from its centroid, so all ``k``
    centroids stay in use when ``N >= k``.

    Args:
        x: points ``[N, d]`` (float).
        k: number of clusters. When ``N < k`` the extra centroids repeat data points.
        iters: maximum Lloyd iterations (stops early when assignments no longer change).
        generator: RNG for the seeding; pass a seeded one for reproducibility.

    Returns:
        ``(centroids [k, d], assignment [N] long)``.
    """
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"kmeans needs a non-empty [N, d] tensor, got shape {tuple(x.shape)}")
    x = x.detach().float()
    n = x.shape[0]
    gen_dev = generator.device if generator is not None else torch.device("cpu")

    def _rand_index(weights: torch.Tensor | None) -> int:
        if weights is None or not torch.isfinite(weights).all() or weights.sum() <= 0:
            return int(torch.randint(n, (1,), generator=generator, device=gen_dev))
        return int(torch.multinomial(weights.to(gen_dev), 1, generator=generator))

    # k-means++: each new centre drawn with probability proportional to squared distance.
    centroids = torch.empty(k, x.shape[1], dtype=x.dtype, device=x.device)
    centroids[0] = x[_rand_index(None)]
    closest = _sq_dists(x, centroids[:1]).squeeze(1)
    for j in range(1, k):
        centroids[j] = x[_rand_index(closest)]
        closest = torch.minimum(closest, _sq_dists(x, centroids[j : j + 1]).squeeze(1))

    assign = torch.full((n,), -1, dtype=torch.long, device=x.device)
    for _ in range(max(iters, 0)):
        d = _sq_dists(x, centroids)
        new_assign = d.argmin(1)
        if torch.equal(new_assign, assign):
            break
        assign = new_assign
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled].unsqueeze(1).to(x.dtype)
        empty = (~filled).nonzero().squeeze(1)
        if len(empty) and n >= k:
            # Farthest points from their own centroid become the new centres.
            own = d.gather(1, assign.unsqueeze(1)).squeeze(1)
            far = own.topk(len(empty)).indices
            centroids[empty] = x[far]
            assign = assign.clone()
            assign[far] = empty
    # Final assignment against the final centroids (the loop's is one update behind).
    return centroids, _sq_dists(x, centroids).argmin(1)


class RQVAE(nn.Module):
    """MLP encoder, ``levels`` residual codebooks of ``codebook_size`` codes, MLP decoder.

    Args:
        in_dim: input embedding dimension ``D``.
        cfg: architecture and loss settings (``hidden_dims``, ``e_dim``, ``levels``,
            ``codebook_size``, ``beta``).
    """

    def __init__(self, in_dim: int, cfg: RQVAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = _mlp([in_dim, *cfg.hidden_dims, cfg.e_dim])
        self.decoder = _mlp([cfg.e_dim, *reversed(cfg.hidden_dims), in_dim])
        self.codebooks = nn.Parameter(
            torch.empty(cfg.levels, cfg.codebook_size, cfg.e_dim).uniform_(
                -1.0 / cfg.codebook_size, 1.0 / cfg.codebook_size
            )
        )
        # Inputs are centred and divided by one global scale (geometry is preserved). Without
        # it, unit-norm sentence embeddings (entries ~0.05) give a reconstruction loss so small
        # that the quantisation terms win and the encoder collapses onto a single code.
        self.register_buffer("input_mean", torch.zeros(in_dim))
        self.register_buffer("input_scale", torch.ones(()))

    @torch.no_grad()
    def fit_normalisation(self, x: torch.Tensor) -> None:
        """Set the input centring and scale from data ``x [N, D]`` (mean per-dim variance 1)."""
        mean = x.mean(0)
        self.input_mean.copy_(mean)
        self.input_scale.copy_(((x - mean) ** 2).mean().sqrt().clamp_min(1e-12))

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Map raw inputs ``[N, D]`` to the space the model is trained in."""
        return (x - self.input_mean) / self.input_scale

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Quantised reconstruction of raw inputs ``[N, D]``, in the raw input space."""
        z_q = self.quantize(self.encoder(self.normalise(x)))[0]
        return self.decoder(z_q) * self.input_scale + self.input_mean

    def quantize(
        self, z: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Residual quantisation of latents.

        Args:
            z: latents ``[N, e_dim]``.

        Returns:
            ``(z_q [N, e_dim], codes [N, levels] long, quant_loss scalar, last_residual
            [N, e_dim])``; ``z_q`` is the straight-through sum of the chosen codes and
            ``last_residual`` the input of the last level (detached).
        """
        residual = z
        q_sum = torch.zeros_like(z)
        codes = []
        quant_loss = z.new_zeros(())
        last_residual = z
        for level in range(self.cfg.levels):
            cb = self.codebooks[level]
            idx = _sq_dists(residual.detach(), cb.detach()).argmin(1)
            e = cb[idx]
            quant_loss = (
                quant_loss
                + F.mse_loss(e, residual.detach())
                + self.cfg.beta * F.mse_loss(residual, e.detach())
            )
            last_residual = residual.detach()
            # Later residuals keep their gradient path to z, so every level's commitment term
            # pulls the encoder towards the cumulative codes.
            residual = residual - e.detach()
            q_sum = q_sum + e
            codes.append(idx)
        z_q = z + (q_sum - z).detach()  # straight-through: decoder gradient flows to encoder
        return z_q, torch.stack(codes, 1), quant_loss, last_residual

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode, quantise, decode.

        Args:
            x: raw inputs ``[N, D]``.

        Returns:
            ``(x_hat [N, D], codes [N, levels], loss)`` with ``x_hat`` in the normalised space
            and ``loss = MSE(normalise(x), x_hat) + quant_loss``.
        """
        xn = self.normalise(x)
        z_q, codes, quant_loss, _ = self.quantize(self.encoder(xn))
        x_hat = self.decoder(z_q)
        return x_hat, codes, F.mse_loss(x_hat, xn) + quant_loss

    @torch.no_grad()
    def init_codebooks(self, x: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Initialise each level's codebook by k-means on that level's residuals.

        Args:
            x: raw inputs ``[N, D]`` (typically the whole item set, or a random subset).
            generator: RNG for k-means seeding.
        """
        residual = self.encoder(self.normalise(x))
        for level in range(self.cfg.levels):
            centroids, assign = kmeans(
                residual, self.cfg.codebook_size, self.cfg.kmeans_iters, generator
            )
            self.codebooks[level].copy_(centroids)
            residual = residual - centroids[assign]


def _batches(n: int, batch_size: int | None, generator: torch.Generator) -> list[torch.Tensor]:
    perm = torch.randperm(n, generator=generator)
    return list(perm.split(batch_size or n))


def _rng_devices(device: torch.device) -> list[int]:
    return [device.index or 0] if device.type == "cuda" else []


def train_rqvae(
    x: torch.Tensor | np.ndarray,
    cfg: RQVAEConfig | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> tuple[RQVAE, list[float]]:
    """Train an :class:`RQVAE` on ``x``.

    Deterministic for a given ``cfg.seed`` (on CPU); the caller's global torch RNG state is left
    untouched.

    Args:
        x: item embeddings ``[N, D]``.
        cfg: settings; default :class:`RQVAEConfig`.
        device: torch device.
        progress: show a tqdm bar over epochs.

    Returns:
        ``(model in eval mode on device, mean loss per epoch)``.
    """
    from tqdm.auto import tqdm

    cfg = cfg or RQVAEConfig()
    device = torch.device(device)
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32) if isinstance(x, np.ndarray) else x)
    xt = xt.float().to(device)
    if xt.ndim != 2 or xt.shape[0] == 0:
        raise ValueError(f"x must be a non-empty [N, D] matrix, got shape {tuple(xt.shape)}")
    if not torch.isfinite(xt).all():
        raise ValueError("x contains NaN or infinite values")
    n = xt.shape[0]
    history: list[float] = []
    with torch.random.fork_rng(devices=_rng_devices(device)):
        torch.manual_seed(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)
        model = RQVAE(xt.shape[1], cfg).to(device)
        model.fit_normalisation(xt)
        init_idx = torch.randperm(n, generator=gen)[: cfg.kmeans_max_points].sort().values
        gen_dev = torch.Generator(device=device).manual_seed(cfg.seed)
        model.init_codebooks(xt[init_idx.to(device)], gen_dev)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        model.train()
        bar = tqdm(range(cfg.epochs), desc="RQ-VAE", unit="ep", disable=not progress)
        for _ in bar:
            total = 0.0
            for idx in _batches(n, cfg.batch_size, gen):
                xb = xt[idx.to(device)]
                _, _, loss = model(xb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            history.append(total / n)
            bar.set_postfix(loss=f"{history[-1]:.4g}")
    model.eval()
    return model, history


@torch.no_grad()
def assign_codes(
    model: RQVAE, x: torch.Tensor | np.ndarray, chunk_size: int = 8192
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Nearest-code assignment for every item.

    Args:
        model: a trained :class:`RQVAE`.
        x: item embeddings ``[N, D]``.
        chunk_size: rows per forward pass (bounds memory).

    Returns:
        ``(codes [N, levels] long (CPU), last_residual [N, e_dim] (CPU), recon_mse)`` where
        ``last_residual`` is what the last codebook quantises (used for collision handling) and
        ``recon_mse`` the mean squared reconstruction error over all entries.
    """
    device = model.codebooks.device
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32) if isinstance(x, np.ndarray) else x)
    codes, residuals = [], []
    sq_err = 0.0
    for part in xt.float().split(chunk_size):
        part = part.to(device)
        z_q, c, _, r = model.quantize(model.encoder(model.normalise(part)))
        x_hat = model.decoder(z_q) * model.input_scale + model.input_mean
        sq_err += float(((x_hat - part) ** 2).sum())
        codes.append(c.cpu())
        residuals.append(r.cpu())
    return torch.cat(codes), torch.cat(residuals), sq_err / max(xt.numel(), 1)


def code_utilisation(codes: torch.Tensor, codebook_size: int) -> list[float]:
    """Per level, distinct codes used / ``codebook_size``. ``codes``: ``[N, levels]``."""
    return [len(torch.unique(codes[:, j])) / codebook_size for j in range(codes.shape[1])]


def code_collision_rate(codes: torch.Tensor) -> float:
    """Fraction of rows of ``codes [N, levels]`` that equal at least one other row."""
    if len(codes) == 0:
        return 0.0
    _, inv, counts = torch.unique(codes, dim=0, return_inverse=True, return_counts=True)
    return float((counts[inv] > 1).float().mean())


def resolve_collisions(
    codes: torch.Tensor,
    last_residual: torch.Tensor,
    last_codebook: torch.Tensor,
    rounds: int = 20,
) -> tuple[torch.Tensor, int]:
    """Move colliding items to the nearest unused code of the last level.

    In each round, every group of items sharing a full code keeps the member closest to the
    shared last-level code; the others take their nearest last-level code that no item with the
    same prefix (levels ``< L-1``) uses. Movers that pick the same free code collide again and
    are handled next round. Used codes only accumulate, so the loop ends once no group can move;
    a prefix with more items than codes cannot be fully resolved (left to ``make_unique``).

    Args:
        codes: ``[N, L]`` long codes (not modified).
        last_residual: ``[N, e_dim]`` residuals quantised by the last level.
        last_codebook: ``[K, e_dim]`` last-level codebook.
        rounds: maximum number of rounds.

    Returns:
        ``(new codes [N, L], rounds used)``.
    """
    codes = codes.clone()
    last_residual = last_residual.to(last_codebook.device, last_codebook.dtype)
    k = last_codebook.shape[0]
    n_levels = codes.shape[1]
    used_rounds = 0
    for _ in range(rounds):
        _, inv, counts = torch.unique(codes, dim=0, return_inverse=True, return_counts=True)
        colliding = (counts[inv] > 1).nonzero().squeeze(1)
        if len(colliding) == 0:
            break
        used_rounds += 1
        res = last_residual[colliding.to(last_residual.device)]
        cur = last_codebook[codes[colliding, -1].to(last_codebook.device)]
        d_cur = ((res - cur) ** 2).sum(1).cpu().numpy()
        grp = inv[colliding].numpy()
        order = np.lexsort((colliding.numpy(), d_cur, grp))  # by group, then distance, then id
        first = np.ones(len(order), dtype=bool)
        first[1:] = grp[order][1:] != grp[order][:-1]
        movers = colliding[torch.from_numpy(order[~first])]

        # Which last-level codes each mover's prefix already uses.
        if n_levels > 1:
            _, prefix_id = torch.unique(codes[:, :-1], dim=0, return_inverse=True)
        else:
            prefix_id = torch.zeros(len(codes), dtype=torch.long)
        mover_prefixes, mover_row = torch.unique(prefix_id[movers], return_inverse=True)
        sharing = torch.isin(prefix_id, mover_prefixes).nonzero().squeeze(1)
        used = torch.zeros(len(mover_prefixes), k, dtype=torch.bool)
        used[torch.searchsorted(mover_prefixes, prefix_id[sharing]), codes[sharing, -1]] = True

        d = _sq_dists(last_residual[movers.to(last_residual.device)], last_codebook).cpu()
        d = d.masked_fill(used[mover_row], float("inf"))
        best_d, best = d.min(1)
        can_move = torch.isfinite(best_d)
        if not can_move.any():
            break
        codes[movers[can_move], -1] = best[can_move]
    return codes, used_rounds


@dataclass
class FitResult:
    """Output of :func:`fit_codes`.

    Attributes:
        codes: ``[N, levels]`` int64 codes after last-level collision handling.
        codes_before: nearest-code assignment before collision handling.
        utilisation, utilisation_before: per-level distinct codes / codebook size.
        collision_rate_before, collision_rate_after: fraction of items sharing their full code.
        recon_mse: reconstruction MSE of the trained model; baseline_mse: MSE of the column mean.
        seconds: wall time of training and assignment.
        history: mean loss per epoch.
        collision_rounds_used: reassignment rounds that ran.
        model: the trained model (eval mode).
    """

    codes: np.ndarray
    codes_before: np.ndarray
    utilisation: list[float]
    utilisation_before: list[float]
    collision_rate_before: float
    collision_rate_after: float
    recon_mse: float
    baseline_mse: float
    seconds: float
    history: list[float] = field(default_factory=list)
    collision_rounds_used: int = 0
    model: RQVAE | None = None


def fit_codes(
    embeddings: np.ndarray | torch.Tensor,
    cfg: RQVAEConfig | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> FitResult:
    """Train an RQ-VAE, assign codes and resolve last-level collisions.

    Args:
        embeddings: ``[N, D]`` item embeddings.
        cfg: settings; default :class:`RQVAEConfig`.
        device: torch device.
        progress: tqdm bar during training.

    Returns:
        :class:`FitResult`; turn ``codes`` into tokens (and add an extra level for any remaining
        collisions) with :func:`ilrec.identifiers.semantic.build_index`.
    """
    cfg = cfg or RQVAEConfig()
    t0 = time.perf_counter()
    x = np.asarray(embeddings, dtype=np.float32)
    model, history = train_rqvae(x, cfg, device=device, progress=progress)
    before, last_residual, recon = assign_codes(model, x)
    after, rounds = resolve_collisions(
        before, last_residual, model.codebooks[-1].detach(), cfg.collision_rounds
    )
    seconds = time.perf_counter() - t0
    baseline = float(((x - x.mean(0, keepdims=True)) ** 2).mean())
    return FitResult(
        codes=after.numpy(),
        codes_before=before.numpy(),
        utilisation=code_utilisation(after, cfg.codebook_size),
        utilisation_before=code_utilisation(before, cfg.codebook_size),
        collision_rate_before=code_collision_rate(before),
        collision_rate_after=code_collision_rate(after),
        recon_mse=recon,
        baseline_mse=baseline,
        seconds=seconds,
        history=history,
        collision_rounds_used=rounds,
        model=model,
    )
