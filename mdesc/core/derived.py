"""Quantities derived from a Lyapunov spectrum, each with an error from the per-block exponents.

For exponents λ_1 ≥ λ_2 ≥ … ≥ λ_k (natural log per step) of an n-dimensional tangent space:

- number of positive exponents  N₊ = #{i : λ_i > 0}
- Kolmogorov–Sinai entropy estimate (Pesin 1977)  h_KS = Σ_{λ_i > 0} λ_i  (nats per step).
  Pesin's identity holds for smooth measures (and SRB measures); in general the sum of the
  positive exponents is an upper bound (Ruelle's inequality), so read it as an estimate.
- Kaplan–Yorke (Lyapunov) dimension (Kaplan & Yorke 1979)
  D_KY = j + (λ_1 + … + λ_j) / |λ_{j+1}|, with j the largest index whose partial sum
  λ_1 + … + λ_j is ≥ 0 (D_KY = 0 when λ_1 < 0, and n when the sum of all n exponents is ≥ 0).

Each is determined by the k computed exponents only when k reaches far enough down the
spectrum: N₊ and h_KS need the smallest computed exponent to be ≤ 0 (else more positive ones
may follow), D_KY needs the partial sums to turn negative within k (unless k = n).  Otherwise
the functions refuse with the reason and the k to ask for.

Errors are batch means over the run: the counted re-orthonormalisation blocks of each sequence
are split into ``batches`` consecutive stretches of about equal counted steps, the spectrum of
each stretch (its step-weighted mean block exponents) gives one value of the quantity, and the
error is the standard deviation of those values over sqrt(batches) — the standard error of a
time average whose stretches are long compared with the correlation time.  It is NaN when fewer
than two stretches exist or some stretch leaves the quantity undetermined.

References: J. L. Kaplan & J. A. Yorke, "Chaotic behavior of multidimensional difference
equations", in Functional Differential Equations and Approximation of Fixed Points, Lecture
Notes in Mathematics 730, 204–227 (Springer, 1979).  Ya. B. Pesin, "Characteristic Lyapunov
exponents and smooth ergodic theory", Russian Math. Surveys 32(4), 55–114 (1977).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Derived:
    """One derived quantity per sequence (and checkpoint): ``value`` and its batch-means ``error``,
    both float64 of the exponents' leading shape ``[(C,) B]``."""

    name: str
    value: torch.Tensor
    error: torch.Tensor

    @property
    def mean(self) -> torch.Tensor:
        """Mean over sequences: [(C,)]."""
        return self.value.mean(dim=-1)

    def __repr__(self) -> str:
        return f"Derived({self.name}: mean={self.mean.tolist()}, value shape {tuple(self.value.shape)})"


def _sorted(exponents: torch.Tensor) -> torch.Tensor:
    exponents = torch.as_tensor(exponents, dtype=torch.float64)
    if exponents.dim() < 1 or exponents.shape[-1] < 1:
        raise ValueError(f"exponents must have shape [..., k] with k >= 1, got {tuple(exponents.shape)}")
    return exponents.sort(dim=-1, descending=True).values


def _refuse(mask: torch.Tensor, what: str, reason: str) -> None:
    if bool(mask.any()):
        raise ValueError(f"{what} is not determined for {int(mask.sum())} of {mask.numel()} spectra: "
                         f"{reason}")


def positive_count_of(exponents, n: int | None = None, *, check: bool = True) -> torch.Tensor:
    """N₊ = #{λ_i > 0} over the last axis (float64).  Refused when every computed exponent is
    positive and k < n (more positive exponents may follow)."""
    lam = _sorted(exponents)
    k = lam.shape[-1]
    bad = (lam[..., -1] > 0) & torch.tensor(n is None or k < n)
    if check:
        _refuse(bad, "the number of positive exponents",
                f"all k={k} computed exponents are positive, so there are at least {k}; compute "
                "more exponents (a larger k) until the smallest is negative")
    return (lam > 0).sum(dim=-1).to(torch.float64).masked_fill(bad, float("nan"))


def ks_entropy_of(exponents, n: int | None = None, *, check: bool = True) -> torch.Tensor:
    """h_KS = Σ_{λ_i > 0} λ_i (Pesin 1977) over the last axis.  Refused when every computed
    exponent is positive and k < n (the sum would miss positive exponents not computed)."""
    lam = _sorted(exponents)
    k = lam.shape[-1]
    bad = (lam[..., -1] > 0) & torch.tensor(n is None or k < n)
    if check:
        _refuse(bad, "the Kolmogorov-Sinai entropy estimate",
                f"all k={k} computed exponents are positive, so the sum of the positive ones may "
                "miss some; compute more exponents (a larger k) until the smallest is negative")
    return lam.clamp_min(0).sum(dim=-1).masked_fill(bad, float("nan"))


def kaplan_yorke_of(exponents, n: int | None = None, *, check: bool = True) -> torch.Tensor:
    """D_KY = j + (λ_1 + … + λ_j) / |λ_{j+1}| (Kaplan & Yorke 1979) over the last axis, j the
    largest index with a non-negative partial sum.  Refused when the partial sums of all k
    computed exponents stay ≥ 0 and k < n (the dimension is at least k)."""
    lam = _sorted(exponents)
    k = lam.shape[-1]
    partial = lam.cumsum(dim=-1)
    # sorted descending, the partial sums rise while exponents are positive and fall after, so
    # the indices with a non-negative partial sum form a prefix: j is their count
    j = (partial >= 0).sum(dim=-1)
    full = j == k
    bad = full & torch.tensor(n is None or k < n)
    if check:
        _refuse(bad, "the Kaplan-Yorke dimension",
                f"the sum of all k={k} computed exponents is still >= 0, so the dimension is at "
                "least k; compute more exponents (a larger k) until their partial sum turns negative")
    jj = j.clamp(max=k - 1)
    s_j = torch.where(j > 0, partial.gather(-1, (jj - 1).clamp_min(0)[..., None])[..., 0],
                      torch.zeros_like(partial[..., 0]))
    nxt = lam.gather(-1, jj[..., None])[..., 0]
    value = torch.where(full, j.to(torch.float64), j.to(torch.float64) + s_j / nxt.abs())
    return value.masked_fill(bad, float("nan"))


QUANTITIES = {
    "positive_count": positive_count_of,
    "ks_entropy": ks_entropy_of,
    "kaplan_yorke": kaplan_yorke_of,
}


def batch_spectra(block_exponents, block_steps, batches: int = 10) -> torch.Tensor:
    """Spectra of ``batches`` consecutive stretches of each run: [..., batches, k] float64.

    ``block_exponents`` [..., nblocks, k] (NaN padding allowed where ``block_steps`` is 0);
    ``block_steps`` [nblocks] or broadcastable to ``block_exponents.shape[:-1]``.  Each block
    goes to the stretch in which it starts, by counted steps; fewer stretches than requested
    when a run has fewer blocks.
    """
    be = torch.as_tensor(block_exponents, dtype=torch.float64)
    steps = torch.as_tensor(block_steps).to(torch.float64).expand(be.shape[:-1])
    real = (steps > 0).sum(dim=-1)
    m = int(min(batches, int(real.min()) if real.numel() else 0))
    if m < 1:
        raise ValueError("no counted blocks to form batches from")
    total = steps.sum(dim=-1, keepdim=True)
    start = steps.cumsum(dim=-1) - steps
    which = (start * m / total).floor().clamp(max=m - 1).to(torch.int64)  # [..., nblocks]
    growth = torch.where(steps[..., None] > 0, be * steps[..., None], 0.0)
    shape = be.shape[:-2] + (m, be.shape[-1])
    g = torch.zeros(shape, dtype=torch.float64).scatter_add(
        -2, which[..., None].expand(growth.shape), growth)
    s = torch.zeros(shape[:-1], dtype=torch.float64).scatter_add(-1, which, steps)
    return g / s[..., None]


def derive(name: str, exponents, block_exponents, block_steps, n: int | None = None,
           batches: int = 10) -> Derived:
    """``name`` ("positive_count", "ks_entropy", "kaplan_yorke") of each spectrum with its error.

    ``exponents`` [..., k] (the run's estimates), ``block_exponents`` [..., nblocks, k] and
    ``block_steps`` as in :class:`~mdesc.core.results.LyapunovResult`; ``n`` the tangent-space
    dimension (None: unknown, so k < n is assumed).
    """
    if name not in QUANTITIES:
        raise ValueError(f"unknown derived quantity {name!r}; choose one of {sorted(QUANTITIES)}")
    fn = QUANTITIES[name]
    exponents = torch.as_tensor(exponents, dtype=torch.float64)
    # -inf (a lost column, docs/conventions.md §3) is a value: it counts as negative, adds nothing
    # to the entropy and ends the Kaplan-Yorke sum; NaN (a non-finite run) is not
    if bool(torch.isnan(exponents).any()):
        raise ValueError(f"{name}: some exponents are NaN (runs flagged non-finite); drop those "
                         "sequences or rerun them with a smaller qr_every or float64")
    value = fn(exponents, n)
    per_batch = fn(batch_spectra(block_exponents, block_steps, batches), n, check=False)
    m = per_batch.shape[-1]
    if m < 2:
        error = torch.full_like(value, float("nan"))
    else:
        error = per_batch.std(dim=-1) / m ** 0.5
    return Derived(name, value, error)
