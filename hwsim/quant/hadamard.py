"""Hadamard matrices of the orders LLMs need, and the fast transform (docs/spec/algorithms.md §4.5).

A Hadamard matrix of order n is an n×n ±1 matrix with ``H Hᵀ = n I``; ``H/√n`` is orthogonal.
hwsim builds ``H_n = H_{2^a} ⊗ H_K`` (Kronecker product, ``n = 2^a·K``) where ``H_{2^a}`` is
Sylvester's matrix (``H[i, j] = (−1)^popcount(i & j)``) and ``H_K`` one of

- Paley I: ``K = q + 1``, q ≡ 3 (mod 4) a prime power: ``H = I + [[0, 𝟙ᵀ], [−𝟙, Q]]``;
- Paley II: ``K = 2(q + 1)``, q ≡ 1 (mod 4) a prime power:
  ``H = C ⊗ [[1, 1], [1, −1]] + I ⊗ [[1, −1], [−1, −1]]``, ``C = [[0, 𝟙ᵀ], [𝟙, Q]]``;
- Williamson type (Goethals–Seidel array, ``K = 4t``, t odd): four circulant ±1 matrices of
  order t with ``AAᵀ + BBᵀ + CCᵀ + DDᵀ = 4t I``, found by a deterministic search among the
  sequences that are constant on the orbits of a multiplicative subgroup of ``Z_t`` (the
  orbit reduction of Baumert–Hall and Đoković). This yields 156 (t = 39) and 172 (t = 43,
  LLaMA-2-7B's 11008 = 172·64) in milliseconds; no table is stored.

``Q[i, j] = χ(x_i − x_j)`` is the Jacobsthal matrix of GF(q) (χ the quadratic character); prime
powers use GF(p)[x]/(f) with the first monic irreducible f in lexicographic order.

K is the smallest order ``odd·2^j`` (j ≥ 2) that one of these constructions gives; for the sizes
of SmolLM2, Gemma-3 and LLaMA-2 this is ``4·odd``, the factor the cost model assumes
(``hwsim.cost_models.workload.hadamard_factor``). Every ``H_K`` is verified at construction,
``H_K H_Kᵀ = K I`` in int64 arithmetic; then ``H_n H_nᵀ = (H_{2^a} H_{2^a}ᵀ) ⊗ (H_K H_Kᵀ) = n I``
exactly. A size with no such factorisation raises ``ValueError`` unless
``allow_dense_orthogonal=True`` (a seeded QR of a Gaussian, recorded as a fall-back).

Conventions: :func:`hadamard_matrix` returns the normalised ``H_n/√n``; :func:`apply_hadamard`
computes ``x @ H_nᵀ/√n`` (``y = H x`` for column vectors) along the last axis in
``O(n log n + n K)``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

__all__ = [
    "HadamardInfo",
    "hadamard_info",
    "hadamard_pm1",
    "hadamard_matrix",
    "random_hadamard",
    "random_signs",
    "apply_hadamard",
    "is_hadamard_order",
    "paley_order",
]

#: Largest order K of a non-Sylvester factor that is built (the dense K×K part of the transform).
MAX_FACTOR_ORDER = 4096
#: Williamson-type search: the largest number of candidate pairs examined per multiplier subgroup.
WILLIAMSON_MAX_PAIRS = 2_000_000
#: Hash scale of the power-spectrum matching in the Williamson-type search (exactness is then
#: checked on the integer matrix, so this only has to separate distinct spectra).
_PSD_SCALE = 1000.0


@dataclass(frozen=True)
class HadamardInfo:
    """How ``H_n`` is built: ``n = 2**a * K``; ``kind`` of the K factor: ``"sylvester"`` (K = 1),
    ``"paley1"``, ``"paley2"``, ``"williamson"`` or ``"dense_orthogonal"`` (then ``seed`` is set and
    the matrix is not a Hadamard matrix); ``q`` the field order of a Paley factor; ``t`` the
    circulant order of a Williamson-type factor."""

    n: int
    a: int
    K: int
    kind: str
    q: int | None = None
    t: int | None = None
    seed: int | None = None

    @property
    def pre_transform(self) -> str:
        """The cost model's name of this online transform: ``hadamard(n)`` or ``dense(n)``."""
        return f"dense({self.n})" if self.kind == "dense_orthogonal" else f"hadamard({self.n})"


# ------------------------------------------------------------------------------------------------
# Number theory and finite fields
# ------------------------------------------------------------------------------------------------


def _prime_power(q: int) -> tuple[int, int] | None:
    """(p, k) with q = p**k, p prime, k ≥ 1, or None."""
    if q < 2:
        return None
    for p in range(2, math.isqrt(q) + 1):
        if q % p == 0:
            k = 0
            while q % p == 0:
                q //= p
                k += 1
            return (p, k) if q == 1 else None
    return (q, 1)


def _poly_mod(a: list[int], f: list[int], p: int) -> list[int]:
    """a mod f over GF(p); polynomials as coefficient lists, lowest degree first, f monic."""
    a = list(a)
    df = len(f) - 1
    while len(a) - 1 >= df and any(a):
        if a[-1] == 0:
            a.pop()
            continue
        c, shift = a[-1], len(a) - 1 - df
        for i, fi in enumerate(f):
            a[shift + i] = (a[shift + i] - c * fi) % p
        a.pop()
    return a


def _irreducible(p: int, k: int) -> list[int]:
    """The first monic irreducible polynomial of degree k over GF(p) (lexicographic order of the
    lower coefficients), found by trial division by every monic polynomial of degree ≤ k/2."""
    if k == 1:
        return [0, 1]
    divisors = [list(c) + [1] for d in range(1, k // 2 + 1) for c in itertools.product(range(p), repeat=d)]
    for low in itertools.product(range(p), repeat=k):
        f = list(low) + [1]
        if f[0] == 0:
            continue
        if all(any(_poly_mod(f, g, p)) for g in divisors):
            return f
    raise AssertionError(f"no irreducible polynomial of degree {k} over GF({p})")  # pragma: no cover


def _jacobsthal(q: int) -> np.ndarray:
    """Jacobsthal matrix ``Q[i, j] = χ(x_i − x_j)`` of GF(q), int64 [q, q]. Element i of GF(p^k) is
    the polynomial whose base-p digits (lowest first) are the digits of i."""
    pk = _prime_power(q)
    if pk is None:
        raise ValueError(f"q={q} is not a prime power")
    p, k = pk
    digits = np.array([[(i // p ** l) % p for l in range(k)] for i in range(q)], dtype=np.int64)
    weights = p ** np.arange(k, dtype=np.int64)
    # squares of the non-zero elements
    f = _irreducible(p, k)
    is_square = np.zeros(q, dtype=bool)
    for i in range(1, q):
        a = list(digits[i])
        sq = [0] * (2 * k - 1)
        for u in range(k):
            for v in range(k):
                sq[u + v] = (sq[u + v] + a[u] * a[v]) % p
        r = _poly_mod(sq, f, p) if k > 1 else [sq[0] % p]
        r = (r + [0] * k)[:k]
        is_square[int(np.dot(r, weights))] = True
    chi = np.where(is_square, 1, -1).astype(np.int64)
    chi[0] = 0
    diff = (digits[:, None, :] - digits[None, :, :]) % p
    return chi[diff @ weights]


# ------------------------------------------------------------------------------------------------
# Constructions of the K factor (all return int64 ±1 matrices, unverified)
# ------------------------------------------------------------------------------------------------


def _sylvester(n: int) -> np.ndarray:
    """Sylvester's matrix of order n = 2^a, int8, by doubling ``[[H, H], [H, −H]]``."""
    H = np.ones((1, 1), dtype=np.int8)
    while H.shape[0] < n:
        H = np.block([[H, H], [H, -H]])
    return H


def _paley1(q: int) -> np.ndarray:
    Q = _jacobsthal(q)
    K = q + 1
    S = np.zeros((K, K), dtype=np.int64)
    S[0, 1:] = 1
    S[1:, 0] = -1
    S[1:, 1:] = Q
    return np.eye(K, dtype=np.int64) + S


def _paley2(q: int) -> np.ndarray:
    Q = _jacobsthal(q)
    C = np.zeros((q + 1, q + 1), dtype=np.int64)
    C[0, 1:] = 1
    C[1:, 0] = 1
    C[1:, 1:] = Q
    return np.kron(C, np.array([[1, 1], [1, -1]])) + np.kron(np.eye(q + 1, dtype=np.int64),
                                                             np.array([[1, -1], [-1, -1]]))


def _circulant(a: np.ndarray) -> np.ndarray:
    t = len(a)
    idx = (np.arange(t)[None, :] - np.arange(t)[:, None]) % t
    return a[idx]


def _goethals_seidel(A: np.ndarray, B: np.ndarray, C: np.ndarray, D: np.ndarray) -> np.ndarray:
    """Goethals–Seidel array of four first rows of circulants (R the back-identity)."""
    A, B, C, D = (_circulant(np.asarray(x, dtype=np.int64)) for x in (A, B, C, D))
    R = np.fliplr(np.eye(A.shape[0], dtype=np.int64))
    return np.block([
        [A, B @ R, C @ R, D @ R],
        [-B @ R, A, D.T @ R, -C.T @ R],
        [-C @ R, -D.T @ R, A, B.T @ R],
        [-D @ R, C.T @ R, -B.T @ R, A],
    ])


def _subgroup(t: int, gens: tuple[int, ...]) -> tuple[int, ...]:
    group, frontier = {1}, [1]
    while frontier:
        x = frontier.pop()
        for g in gens:
            y = x * g % t
            if y not in group:
                group.add(y)
                frontier.append(y)
    return tuple(sorted(group))


def _orbits(t: int, group: tuple[int, ...]) -> list[list[int]]:
    seen: set[int] = set()
    out = []
    for j in range(t):
        if j not in seen:
            orb = sorted({j * h % t for h in group})
            seen.update(orb)
            out.append(orb)
    return out


def _williamson_type(t: int) -> np.ndarray | None:
    """A Hadamard matrix of order 4t from four circulants constant on the orbits of a
    multiplicative subgroup G of Z_t (deterministic; None if none is found within the budget).

    For sequences constant on G-orbits, the power spectrum ``|DFT(a)[k]|²`` is constant on the
    orbits of ``<G, −1>``, so the condition ``Σ_X |DFT(x)[k]|² = 4t`` for all k is a few equations
    per candidate; pairs (A, B) are matched to pairs (C, D) with the complementary spectrum.
    Subgroups are tried largest first (fewest orbits). The element 0 is an orbit of its own and
    its sign is fixed to +1 (negating one circulant keeps ``XXᵀ``).
    """
    units = [u for u in range(1, t) if math.gcd(u, t) == 1]
    groups = sorted({_subgroup(t, (g,)) for g in units} | {_subgroup(t, (g, t - 1)) for g in units},
                    key=lambda g: (-len(g), g))
    eye = 4 * t * np.eye(4 * t, dtype=np.int64)
    for group in groups:
        orbs = _orbits(t, group)
        r = len(orbs)
        if 2 ** (r - 1) > 4 * math.isqrt(2 * WILLIAMSON_MAX_PAIRS):
            continue
        signs = np.array(list(itertools.product((1, -1), repeat=r - 1)), dtype=np.int64).reshape(-1, r - 1)
        signs = np.concatenate([np.ones((len(signs), 1), dtype=np.int64), signs], axis=1)
        seqs = np.zeros((len(signs), t), dtype=np.int64)
        for i, orb in enumerate(orbs):
            seqs[:, orb] = signs[:, i:i + 1]
        freq = [o[0] for o in _orbits(t, _subgroup(t, tuple(group) + (t - 1,)))]
        psd = np.abs(np.fft.fft(seqs.astype(np.float64), axis=1)[:, freq]) ** 2
        keep = np.nonzero((psd <= 4 * t + 1e-6).all(axis=1))[0]
        m = len(keep)
        if m == 0 or m * (m + 1) // 2 > WILLIAMSON_MAX_PAIRS:
            continue
        ia, ib = np.triu_indices(m)
        pair = psd[keep[ia]] + psd[keep[ib]]
        ok = (pair <= 4 * t + 1e-6).all(axis=1)
        ia, ib, pair = ia[ok], ib[ok], pair[ok]
        w = np.random.default_rng(0).integers(1, 2 ** 40, pair.shape[1])
        code = np.round(pair * _PSD_SCALE).astype(np.int64)
        h = (code * w).sum(axis=1)
        h_need = ((round(4 * t * _PSD_SCALE) - code) * w).sum(axis=1)
        order = np.argsort(h, kind="stable")
        hs = h[order]
        pos = np.minimum(np.searchsorted(hs, h_need), len(hs) - 1)
        for s in np.nonzero(hs[pos] == h_need)[0]:
            u = order[pos[s]]
            H = _goethals_seidel(seqs[keep[ia[s]]], seqs[keep[ib[s]]], seqs[keep[ia[u]]], seqs[keep[ib[u]]])
            if np.array_equal(H @ H.T, eye):
                return H
    return None


def _factor_candidates(odd: int, a: int) -> list[tuple[int, int]]:
    """(K, remaining power of two) for K = odd·2^j, j = 2..a, smallest K first."""
    return [(odd * 2 ** j, a - j) for j in range(2, a + 1)]


def paley_order(K: int) -> tuple[str, int] | None:
    """("paley1", q) or ("paley2", q) if a Paley construction gives order K, else None."""
    if K > 2 and (K - 1) % 4 == 3 and _prime_power(K - 1):
        return ("paley1", K - 1)
    if K % 2 == 0 and K > 2 and (K // 2 - 1) % 4 == 1 and _prime_power(K // 2 - 1):
        return ("paley2", K // 2 - 1)
    return None


@lru_cache(maxsize=64)
def _factor(K: int) -> tuple[str, int | None, int | None, np.ndarray] | None:
    """(kind, q, t, verified int64 H_K) or None when no construction applies."""
    if K > MAX_FACTOR_ORDER:
        return None
    pal = paley_order(K)
    if pal is not None:
        kind, q = pal
        H, t = (_paley1(q) if kind == "paley1" else _paley2(q)), None
    elif K % 4 == 0 and (K // 4) % 2 == 1 and K // 4 >= 3:
        H = _williamson_type(K // 4)
        if H is None:
            return None
        kind, q, t = "williamson", None, K // 4
    else:
        return None
    _verify(H, K, kind)
    H.setflags(write=False)
    return kind, q, t, H


@lru_cache(maxsize=64)
def _factor_tensor(K: int) -> torch.Tensor:
    """The verified ±1 factor H_K as a float64 tensor (a copy of the cached numpy matrix)."""
    return torch.from_numpy(np.array(_factor(K)[3], dtype=np.float64))


def _verify(H: np.ndarray, n: int, kind: str) -> None:
    """Exact check ``H Hᵀ = n I`` and entries ±1, in int64 arithmetic."""
    if H.shape != (n, n) or not np.all(np.abs(H) == 1):
        raise AssertionError(f"hadamard {kind} of order {n}: not a ±1 matrix of shape ({n}, {n})")
    if not np.array_equal(H @ H.T, n * np.eye(n, dtype=np.int64)):
        raise AssertionError(f"hadamard {kind} of order {n}: H Hᵀ != {n} I")


# ------------------------------------------------------------------------------------------------
# Public API
# ------------------------------------------------------------------------------------------------


def _check_n(n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or int(n) < 1:
        raise ValueError(f"n={n!r}: the Hadamard size must be a positive integer")
    return int(n)


@lru_cache(maxsize=256)
def _info(n: int) -> HadamardInfo | None:
    odd, a = n, 0
    while odd % 2 == 0:
        odd //= 2
        a += 1
    if odd == 1:
        return HadamardInfo(n, a, 1, "sylvester")
    for K, rest in _factor_candidates(odd, a):
        f = _factor(K)
        if f is not None:
            kind, q, t, _ = f
            return HadamardInfo(n, rest, K, kind, q=q, t=t)
    return None


def is_hadamard_order(n: int) -> bool:
    """True if :func:`hadamard_matrix` can build a Hadamard matrix of order n."""
    return _info(_check_n(n)) is not None


def _impossible(n: int) -> ValueError:
    odd, a = n, 0
    while odd % 2 == 0:
        odd //= 2
        a += 1
    tried = ", ".join(str(K) for K, _ in _factor_candidates(odd, a)) or "none (n/odd part < 4)"
    return ValueError(
        f"n={n}: no Hadamard matrix of this order is constructible here (n = 2^{a}·{odd}; needs a "
        f"factor K = odd·2^j, j ≥ 2, that is 1, Paley I (K−1 ≡ 3 mod 4 prime power), Paley II "
        f"(K/2−1 ≡ 1 mod 4 prime power) or Williamson type (K = 4·odd, found by search); tried K = "
        f"{tried}). Pass allow_dense_orthogonal=True for a seeded random orthogonal matrix instead."
    )


def hadamard_info(n: int, *, allow_dense_orthogonal: bool = False, seed: int = 0) -> HadamardInfo:
    """The construction of ``H_n`` (raises ValueError for an impossible n unless
    ``allow_dense_orthogonal``)."""
    n = _check_n(n)
    info = _info(n)
    if info is None:
        if not allow_dense_orthogonal:
            raise _impossible(n)
        return HadamardInfo(n, 0, n, "dense_orthogonal", seed=int(seed))
    return info


def hadamard_pm1(n: int) -> torch.Tensor:
    """The unnormalised ±1 Hadamard matrix of order n, int8 [n, n] (``H Hᵀ = n I``)."""
    info = hadamard_info(n)
    S = _sylvester(2 ** info.a)
    HK = np.ones((1, 1), dtype=np.int64) if info.K == 1 else _factor(info.K)[3]
    return torch.from_numpy(np.kron(S, HK.astype(np.int8)))


def _dense_orthogonal(n: int, seed: int) -> torch.Tensor:
    """Seeded random orthogonal matrix, float64: Q of the QR of a Gaussian, columns signed so that
    diag(R) > 0 (Haar distributed)."""
    g = torch.Generator().manual_seed(int(seed))
    Q, R = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return Q * torch.sign(torch.diagonal(R)).where(torch.diagonal(R) != 0, torch.ones(()))[None, :]


def _record_dense(n: int, seed: int, events: list | None) -> None:
    from .algorithms.common import QuantWarning, record

    record(events if events is not None else [], "hadamard", None, "dense_orthogonal",
           {"n": n, "seed": int(seed)},
           message=f"n={n} is not a constructible Hadamard order; using a seeded random orthogonal "
                   f"matrix (seed {seed}), a dense {n}×{n} transform", category=QuantWarning)


def hadamard_matrix(n: int, dtype: torch.dtype = torch.float64, *, allow_dense_orthogonal: bool = False,
                    seed: int = 0, events: list | None = None) -> torch.Tensor:
    """Normalised Hadamard matrix ``H_n/√n`` [n, n] (orthogonal), ``H_{2^a} ⊗ H_K`` ordering.

    For an n with no construction: ValueError, or with ``allow_dense_orthogonal=True`` a seeded
    random orthogonal matrix (a QuantWarning, and an event appended to ``events``).
    """
    info = hadamard_info(n, allow_dense_orthogonal=allow_dense_orthogonal, seed=seed)
    if info.kind == "dense_orthogonal":
        _record_dense(info.n, seed, events)
        return _dense_orthogonal(info.n, seed).to(dtype)
    return (hadamard_pm1(info.n).to(torch.float64) / math.sqrt(info.n)).to(dtype)


def random_signs(n: int, seed: int) -> torch.Tensor:
    """Seeded ±1 vector, float64 [n]."""
    g = torch.Generator().manual_seed(int(seed))
    return (torch.randint(0, 2, (int(n),), generator=g) * 2 - 1).to(torch.float64)


def random_hadamard(n: int, seed: int, dtype: torch.dtype = torch.float64, *,
                    allow_dense_orthogonal: bool = False, events: list | None = None) -> torch.Tensor:
    """``diag(±1)·H_n/√n`` [n, n] with seeded signs (QuaRot's randomised Hadamard)."""
    H = hadamard_matrix(n, torch.float64, allow_dense_orthogonal=allow_dense_orthogonal, seed=seed,
                        events=events)
    return (random_signs(n, seed)[:, None] * H).to(dtype)


def _fwht_(y: torch.Tensor, axis_len: int) -> torch.Tensor:
    """Unnormalised Walsh–Hadamard transform (Sylvester order) along axis −2 of y [..., N, K]."""
    shape = y.shape
    h = 1
    while h < axis_len:
        y = y.reshape(*shape[:-2], axis_len // (2 * h), 2, h, shape[-1])
        a, b = y[..., 0, :, :], y[..., 1, :, :]
        y = torch.stack((a + b, a - b), dim=-3)
        h *= 2
    return y.reshape(shape)


def apply_hadamard(x: torch.Tensor, n: int | None = None, *, normalized: bool = True,
                   transpose: bool = False, allow_dense_orthogonal: bool = False,
                   seed: int = 0) -> torch.Tensor:
    """``x @ H_nᵀ`` along the last axis (``transpose=True``: ``x @ H_n``), H normalised by 1/√n
    unless ``normalized=False``. x: [..., n] (float); returns the same shape and dtype.

    Kronecker form: with x viewed as [..., 2^a, K], ``H x = H_{2^a} X H_Kᵀ``, i.e. a dense K×K
    product along the last axis and a fast Walsh–Hadamard transform (log2(2^a) butterfly passes)
    along the other: ``n·a + n·K`` operations instead of n².
    """
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise ValueError(f"x: expected a floating-point torch tensor, got {type(x).__name__}"
                         f"{'' if not torch.is_tensor(x) else ' of dtype ' + str(x.dtype)}")
    n = x.shape[-1] if n is None else _check_n(n)
    if x.shape[-1] != n:
        raise ValueError(f"x: last axis has {x.shape[-1]} elements, expected n={n}")
    info = hadamard_info(n, allow_dense_orthogonal=allow_dense_orthogonal, seed=seed)
    if info.kind == "dense_orthogonal":
        if not normalized:
            raise ValueError("normalized=False: a dense orthogonal fall-back has no ±1 form")
        M = hadamard_matrix(n, x.dtype, allow_dense_orthogonal=True, seed=seed).to(x.device)
        return x @ (M if transpose else M.T)
    N, K = 2 ** info.a, info.K
    y = x.reshape(*x.shape[:-1], N, K)
    if K > 1:
        HK = _factor_tensor(K).to(dtype=x.dtype, device=x.device)
        y = y @ (HK if transpose else HK.T)  # Sylvester is symmetric: transpose only matters here
    y = _fwht_(y, N)
    y = y.reshape(x.shape)
    return y / math.sqrt(n) if normalized else y
