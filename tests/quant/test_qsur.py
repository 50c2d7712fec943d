"""QSUR (docs/spec/algorithms.md §4.5, §7)."""

import math

import pytest
import torch

from hwsim.quant.algorithms.common import DampingWarning
from hwsim.quant.hadamard import hadamard_matrix
from hwsim.quant.qsur import ball_in_cube_log_ratio, chi2_quantile_wh, qsur

F64 = torch.float64


def _spd(d, seed, cond=100.0):
    g = torch.Generator().manual_seed(seed)
    Q = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=F64))[0]
    lam = torch.logspace(0, math.log10(cond), d, dtype=F64)
    return Q @ torch.diag(lam) @ Q.T


@pytest.mark.parametrize("variant", ["box", "paper"])
def test_log_space_equals_direct_evaluation_d4(variant):
    d, alpha = 4, 0.99
    sigma = _spd(d, 0)
    mu = torch.tensor([0.3, -1.0, 0.5, 2.0], dtype=F64)
    c = chi2_quantile_wh(d, alpha)
    lam, vecs = torch.linalg.eigh(sigma)
    v_x = math.pi ** (d / 2) / math.gamma(d / 2 + 1) * c ** (d / 2) * math.sqrt(float(torch.linalg.det(sigma)))
    if variant == "paper":
        half = math.sqrt(c * float(lam[-1])) * vecs[:, -1].abs()
    else:
        half = torch.sqrt(c * torch.diagonal(sigma))
    v_s = float((mu + half).max() - (mu - half).min()) ** d
    res = qsur(mu=mu, sigma=sigma, alpha=alpha, variant=variant)
    assert res.log == pytest.approx(math.log(v_x / v_s), rel=1e-12)
    assert res.root == pytest.approx((v_x / v_s) ** (1 / d), rel=1e-12)


@pytest.mark.parametrize("d", [32, 33, 64, 100, 576, 4096])
@pytest.mark.parametrize("alpha", [0.9, 0.95, 0.99])
def test_wilson_hilferty_within_0p05_percent_of_scipy(d, alpha):
    """The spec's bound, for α up to the default 0.99 (at α = 0.999 it needs d ≥ ~110: 0.16 % at
    d = 32, 0.07 % at d = 64)."""
    stats = pytest.importorskip("scipy.stats")
    exact = float(stats.chi2.ppf(alpha, d))
    assert abs(chi2_quantile_wh(d, alpha) / exact - 1) < 5e-4


def test_hadamard_rotation_raises_qsur_of_skewed_gaussian():
    """A Gaussian with a few outlier channels and a mean offset: rotating its samples by H_d
    spreads the outliers, raising both variants' QSUR."""
    d, n = 64, 4096
    g = torch.Generator().manual_seed(1)
    scale = torch.ones(d, dtype=F64)
    scale[[3, 17]] = 20.0
    mu = torch.zeros(d, dtype=F64)
    mu[5] = 4.0
    X = mu + scale * torch.randn(n, d, generator=g, dtype=F64)
    H = hadamard_matrix(d)
    for variant in ("box", "paper"):
        before, after = qsur(X, variant=variant), qsur(X @ H.T, variant=variant)
        assert after.root > 1.5 * before.root, variant


def test_paper_variant_gains_exactly_sqrt_d_under_hadamard():
    """μ = 0, Σ = diag(λ) with a unique largest λ: the principal axis e_1 becomes a column of H_d
    (entries ±1/√d), so QSUR^{1/d} is multiplied by exactly √d."""
    d = 16
    lam = torch.linspace(0.5, 1.5, d, dtype=F64)
    lam[7] = 5.0
    sigma = torch.diag(lam)
    H = hadamard_matrix(d)
    before = qsur(mu=torch.zeros(d, dtype=F64), sigma=sigma, variant="paper")
    after = qsur(mu=torch.zeros(d, dtype=F64), sigma=H @ sigma @ H.T, variant="paper")
    assert after.root / before.root == pytest.approx(math.sqrt(d), rel=1e-12)


def test_box_never_exceeds_ball_in_cube_bound():
    g = torch.Generator().manual_seed(2)
    for trial in range(40):
        d = int(torch.randint(2, 40, (1,), generator=g))
        sigma = _spd(d, 100 + trial, cond=float(10 ** (4 * torch.rand(1, generator=g))))
        mu = torch.randn(d, generator=g, dtype=F64) * float(torch.rand(1, generator=g))
        for alpha in (0.9, 0.99):
            assert qsur(mu=mu, sigma=sigma, alpha=alpha).log <= ball_in_cube_log_ratio(d) + 1e-12
    # equality: isotropic and centred
    for d in (2, 7, 64):
        res = qsur(mu=torch.zeros(d, dtype=F64), sigma=torch.eye(d, dtype=F64))
        assert res.log == pytest.approx(ball_in_cube_log_ratio(d), rel=1e-12)
    assert math.exp(ball_in_cube_log_ratio(2)) == pytest.approx(math.pi / 4)


def test_paper_variant_is_pi_over_2_on_the_2d_flat_case():
    """Isotropic 2-D Gaussian whose principal axis is the diagonal (1, 1)/√2 (a vanishing ε picks
    it): V_X = π c λ, V_S = (2 r/√2)² = 2 c λ, QSUR = π/2 > 1."""
    eps = 1e-13
    res = qsur(mu=torch.zeros(2, dtype=F64), sigma=torch.tensor([[1.0, eps], [eps, 1.0]], dtype=F64), variant="paper")
    assert math.exp(res.log) == pytest.approx(math.pi / 2, rel=1e-12)
    assert res.root == pytest.approx(math.sqrt(math.pi / 2), rel=1e-12)


def test_samples_and_moments_agree_and_mu0_cancels_c():
    X = torch.randn(500, 8, generator=torch.Generator().manual_seed(3), dtype=F64) * torch.arange(1, 9)
    mu = X.mean(0)
    sigma = (X - mu).T @ (X - mu) / X.shape[0]
    for variant in ("box", "paper"):
        assert qsur(X, variant=variant) == pytest.approx(tuple(qsur(mu=mu, sigma=sigma, variant=variant)), rel=1e-12)
        a = qsur(mu=torch.zeros(8), sigma=sigma, alpha=0.9, variant=variant)
        b = qsur(mu=torch.zeros(8), sigma=sigma, alpha=0.999, variant=variant)
        assert a.log == pytest.approx(b.log, rel=1e-12)  # c cancels for μ = 0
    assert qsur(X.reshape(50, 10, 8)) == qsur(X)  # leading dims flattened


def test_rank_deficient_covariance_is_clamped_and_recorded():
    X = torch.randn(100, 3, generator=torch.Generator().manual_seed(4), dtype=F64)
    X = torch.cat([X, X[:, :1]], dim=1)  # 4 channels of rank 3
    events = []
    with pytest.warns(DampingWarning, match="clamped"):
        res = qsur(X, events=events, layer="blk.0:qkv")
    assert math.isfinite(res.log)
    assert events == [{"stage": "qsur", "layer": "blk.0:qkv", "kind": "eig_clamp", "value": 1}]


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="variant='cube'"):
        qsur(torch.randn(10, 2), variant="cube")
    with pytest.raises(ValueError, match="n=3 rows for d=5"):
        qsur(torch.randn(3, 5))
    with pytest.raises(ValueError, match="alpha=1.0"):
        qsur(torch.randn(10, 2), alpha=1.0)
    with pytest.raises(ValueError, match="sigma: expected shape"):
        qsur(mu=torch.zeros(3), sigma=torch.eye(2))
    with pytest.raises(ValueError, match="not both"):
        qsur(torch.randn(10, 2), mu=torch.zeros(2), sigma=torch.eye(2))
