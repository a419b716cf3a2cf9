"""Group-sequential decisions, valid under optional stopping (issue 26).

A study in rounds (a round = one more batch per cell) looks at its deciding rule after every
round from `min_rounds` to `max_rounds`. Looking again and again at a plain 95 % CI inflates the
false-positive rate (Armitage, McPherson & Rowe 1969); a group-sequential design spends α over
the looks instead, so that the chance of ever calling a true null "differs", over all looks
together, stays ≤ α.

Method (chosen over confidence sequences because max_batches is known: a design that knows
its last look spends all of α by then, and is tighter than an always-valid confidence
sequence at every n; see the report of issue 26 for the package evaluation):

- Boundaries: Lan & DeMets (1983) α-spending, information fraction t_k = round_k / max_rounds.
  The default spending function is the O'Brien–Fleming type,
  α*(t) = 2 − 2 Φ(z_{1−a/2} / √t) for a one-sided level a (Lan & DeMets 1983, eq. (7);
  ldbounds' and gsDesign's `sfLDOF`, one-sided), or the Pocock type α*(t) = a log(1 + (e − 1) t)
  (ibid.). Boundaries are found by recursive numerical integration of the score process
  S_k = Z_k √t_k, whose increments are independent N(0, t_k − t_{k−1}) under H0 (Armitage,
  McPherson & Rowe 1969; Jennison & Turnbull 2000, "Group Sequential Methods with Applications
  to Clinical Trials", ch. 19). `constant_boundary` gives the classical Pocock (1977) and
  O'Brien & Fleming (1979) constants of Jennison & Turnbull's Tables 2.1 and 2.3 with the same
  engine.
- Unknown variance: each normal boundary c_k is carried to the t statistic of the rule by its
  nominal significance level, t_{df}^{−1}(Φ(c_k)) (the "significance level approach",
  Jennison & Turnbull 2000, ch. 3, group sequential t-tests), df the rule's own; for the
  paired rule the share of α spent is calibrated so that the error is exactly α under
  normal noise (`calibration`: the paired t process is pivotal), as that approach alone
  exceeds α with few cells.
- Differs: the two-sided test of δ = 0 at total level α (α/2 spent on each side), *and* the
  estimate beyond the margin, as today's fixed rule (stats.paired). Its repeated confidence
  interval (RCI; Jennison & Turnbull 1989, 2000 ch. 9) at round k is estimate ± t_k · se;
  all RCIs together cover δ with probability ≥ 1 − α.
- Equivalent: two one-sided tests (TOST) of δ ≤ −margin and δ ≥ +margin, each a one-sided
  group-sequential test at level α: at round k the 1 − 2α RCI lies inside ±margin. The
  chance of ever declaring equivalence when |δ| ≥ margin is ≤ α (intersection–union).

A decision is sticky: the first round at which the rule decides is its stopping round, and the
verdict of every later round is that one (a study that stops there never sees later rounds).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy import optimize
from scipy import stats as sps
from scipy.special import ndtr

ALPHA = 0.05
GRID = 801  # points per stage of the numerical integration (error ≪ 1e-4 in the boundaries)
_LOW = -10.0  # the lower edge (z scale) standing for −∞ in one-sided designs


# --- spending functions --------------------------------------------------------------------

def spend_obrien_fleming(t, a: float):
    """Lan–DeMets O'Brien–Fleming-type spending at information fraction(s) t for a one-sided
    level a: 2 − 2 Φ(z_{1−a/2} / √t) (Lan & DeMets 1983; gsDesign::sfLDOF)."""
    t = np.asarray(t, dtype=float)
    return 2 - 2 * sps.norm.cdf(sps.norm.ppf(1 - a / 2) / np.sqrt(t))


def spend_pocock(t, a: float):
    """Lan–DeMets Pocock-type spending: a log(1 + (e − 1) t) (Lan & DeMets 1983)."""
    return a * np.log1p((math.e - 1) * np.asarray(t, dtype=float))


SPENDING = {"obrien-fleming": spend_obrien_fleming, "pocock": spend_pocock}


# --- the recursion -------------------------------------------------------------------------

def _first_density(t1: float, lo: float, hi: float, n: int):
    x = np.linspace(lo * math.sqrt(t1), hi * math.sqrt(t1), n)
    w = np.full(n, x[1] - x[0])
    w[[0, -1]] /= 2
    return x, w * sps.norm.pdf(x, scale=math.sqrt(t1))


def _exit(x, wf, t_prev, t_k, lo, hi) -> float:
    """P(the score leaves (lo √t_k, hi √t_k) at t_k, having stayed in until t_prev), from the
    weighted density wf on grid x at t_prev."""
    s = math.sqrt(t_k - t_prev)
    r = math.sqrt(t_k)
    below = ndtr((lo * r - x) / s) if lo > _LOW else 0.0
    return float(np.sum(wf * (below + ndtr((x - hi * r) / s))))


def _advance(x, wf, t_prev, t_k, lo, hi, n):
    s = math.sqrt(t_k - t_prev)
    y = np.linspace(lo * math.sqrt(t_k), hi * math.sqrt(t_k), n)
    w = np.full(n, y[1] - y[0])
    w[[0, -1]] /= 2
    dens = np.exp(-0.5 * ((y[:, None] - x[None, :]) / s) ** 2) @ wf / (s * math.sqrt(2 * math.pi))
    return y, w * dens


def _exit_first(t1, lo, hi) -> float:
    below = ndtr(lo) if lo > _LOW else 0.0
    return float(below + ndtr(-hi))


def crossing_probabilities(t, upper, sides: int = 2, n: int = GRID) -> np.ndarray:
    """P(first crossing at look k) under H0 for boundaries `upper` (z scale) at information
    fractions `t`; sides=2: continuation region (−c_k, c_k), sides=1: (−∞, c_k)."""
    t, upper = np.asarray(t, float), np.asarray(upper, float)
    lows = -upper if sides == 2 else np.full(len(t), _LOW)
    out = [_exit_first(t[0], lows[0], upper[0])]
    x, wf = _first_density(t[0], lows[0], upper[0], n)
    for k in range(1, len(t)):
        out.append(_exit(x, wf, t[k - 1], t[k], lows[k], upper[k]))
        x, wf = _advance(x, wf, t[k - 1], t[k], lows[k], upper[k], n)
    return np.array(out)


def spending_boundary(t, alpha: float, sides: int = 2, spending: str = "obrien-fleming",
                      n: int = GRID) -> np.ndarray:
    """Lan–DeMets boundaries (z scale) at information fractions t (increasing, in (0, 1]).

    sides=1: a one-sided level-`alpha` test, spending α*(t) of `alpha` (ldbounds / gsDesign
    with one-sided alpha); sides=2: symmetric two-sided at total level `alpha`, each side a
    one-sided test spending α*(t) of alpha/2, crossings on either side counted (as ldbounds
    with sides=2). Raises ValueError on fractions not increasing or outside (0, 1]."""
    t = np.asarray(t, dtype=float)
    if len(t) == 0 or np.any(np.diff(t) <= 0) or t[0] <= 0 or t[-1] > 1 + 1e-12:
        raise ValueError(f"information fractions must increase within (0, 1]: {t}")
    return _boundary(tuple(np.round(t, 12)), float(alpha), int(sides), spending, int(n))


@lru_cache(maxsize=256)
def _boundary(t: tuple, alpha: float, sides: int, spending: str, n: int) -> np.ndarray:
    t = np.array(t)
    a = alpha / 2 if sides == 2 else alpha
    spent = SPENDING[spending](t, a) * (2 if sides == 2 else 1)
    targets = np.diff(np.concatenate([[0.0], spent]))
    bounds: list[float] = []
    x = wf = None
    for k, target in enumerate(targets):
        lo_of = (lambda c: -c) if sides == 2 else (lambda c: _LOW)
        if k == 0:
            f = lambda c: _exit_first(t[0], lo_of(c), c) - target  # noqa: E731
        else:
            f = lambda c: _exit(x, wf, t[k - 1], t[k], lo_of(c), c) - target  # noqa: E731
        c = 9.0 if f(9.0) > 0 or target <= 0 else optimize.brentq(f, 0.0, 9.0, xtol=1e-10)
        bounds.append(c)
        if k == 0:
            x, wf = _first_density(t[0], lo_of(c), c, n)
        else:
            x, wf = _advance(x, wf, t[k - 1], t[k], lo_of(c), c, n)
    return np.array(bounds)


def constant_boundary(k: int, alpha: float, shape: str = "pocock", n: int = 401) -> float:
    """The classical two-sided constant for K equally spaced looks at total level alpha:
    Pocock (1977): reject at look j when |Z_j| ≥ C_P; O'Brien & Fleming (1979): when
    |Z_j| ≥ C_B √(K / j). Jennison & Turnbull (2000) Tables 2.1 (C_P) and 2.3 (C_B)."""
    t = np.arange(1, k + 1) / k
    w = np.ones(k) if shape == "pocock" else np.sqrt(k / np.arange(1, k + 1))
    return float(optimize.brentq(lambda c: crossing_probabilities(t, c * w, 2, n).sum() - alpha,
                                 1.0, 6.0, xtol=1e-8))


# --- the decisions -------------------------------------------------------------------------

@dataclass
class Decision:
    """One look, after `round` rounds. Units: those of the differences (ms, tok/s).
    lo, hi: the anytime-valid (1 − α) repeated confidence interval of δ; eq_lo, eq_hi: the
    (1 − 2α) one for the equivalence side. verdict is sticky: once decided, the verdict of
    `stopping_round`. naive_*: a rule with no correction for peeking (plain t CI and TOST at
    α every round) and its own first decided round."""
    round: int
    n: int
    estimate: float
    se: float
    df: float
    lo: float
    hi: float
    eq_lo: float
    eq_hi: float
    margin: float
    verdict_now: str
    verdict: str
    decided: bool
    stopping_round: int | None
    naive_verdict: str
    naive_lo: float
    naive_hi: float
    naive_stopping_round: int | None

    def as_dict(self) -> dict:
        return asdict(self)


def critical_values(max_rounds: int, min_rounds: int = 1, alpha: float = ALPHA,
                    spending: str = "obrien-fleming", cells: int | None = None) -> pd.DataFrame:
    """The design's boundaries per looked-at round, information fraction round / max_rounds:
    z_differs (two-sided, total α) and z_equivalent (one-sided α for each of TOST's tests).
    With `cells` (the paired rule over that many cells), also t_differs / t_equivalent: the
    boundaries for its t statistic (df = cells − 1), from spending γ α where γ ≤ 1 is the
    exact calibration of `calibration` (without it, carrying z to t by its nominal level
    lets the error exceed α for few cells: 6.2 % at 4 cells, 5.3 % at 12, in 8 rounds).
    Raises ValueError unless 1 ≤ min_rounds ≤ max_rounds."""
    if not 1 <= min_rounds <= max_rounds:
        raise ValueError(f"need 1 ≤ min_rounds ≤ max_rounds, got {min_rounds}, {max_rounds}")
    rounds = np.arange(min_rounds, max_rounds + 1)
    t = rounds / max_rounds
    out = pd.DataFrame({"round": rounds, "fraction": t,
                        "z_differs": spending_boundary(t, alpha, 2, spending),
                        "z_equivalent": spending_boundary(t, alpha, 1, spending)})
    if cells is not None:
        g_d, g_e = calibration(int(cells), max_rounds, min_rounds, alpha, spending)
        out["t_differs"] = _t_crit(spending_boundary(t, g_d * alpha, 2, spending), cells - 1)
        out["t_equivalent"] = _t_crit(spending_boundary(t, g_e * alpha, 1, spending), cells - 1)
    return out


CALIBRATION_SIMS = 40_000
CALIBRATION_SEED = 2026


def _paired_t_null(cells: int, max_rounds: int, rounds: np.ndarray, sims: int, seed: int) -> np.ndarray:
    """(sims, looks) paired t statistics under H0 with normal batch noise: the statistic is
    scale-free, so this law depends on cells and rounds only."""
    rng = np.random.default_rng(seed)
    out = []
    for chunk in np.array_split(np.arange(sims), max(1, sims * max_rounds * cells // 4_000_000)):
        d = rng.standard_normal((len(chunk), max_rounds, cells))
        cum = (np.cumsum(d, axis=1) / np.arange(1, max_rounds + 1)[None, :, None])[:, rounds - 1]
        out.append(cum.mean(axis=2) / (cum.std(axis=2, ddof=1) / math.sqrt(cells)))
    return np.concatenate(out)


@lru_cache(maxsize=64)
def calibration(cells: int, max_rounds: int, min_rounds: int = 1, alpha: float = ALPHA,
                spending: str = "obrien-fleming", sims: int = CALIBRATION_SIMS,
                seed: int = CALIBRATION_SEED) -> tuple[float, float]:
    """(γ_differs, γ_equivalent): the share of α to spend so that the paired t rule, its
    boundaries carried from z to t by their nominal level, has overall error α under H0 with
    normal batch noise and no cell × language interaction (then the t process is pivotal:
    its law depends on cells and rounds only, so a seeded Monte Carlo of it calibrates every
    study of that shape). γ = the largest value ≤ 1 whose error on `sims` seeded null studies
    is ≤ α (bisection; Monte Carlo error ±√(α(1−α)/sims), 0.0011 at the default).
    A cell × language interaction makes the information grow slower than round / max_rounds,
    and the looks more alike, which only lowers the error (tests/test_sequential.py)."""
    if cells < 3:
        raise ValueError(f"the paired rule needs 3 cells or more, got {cells}")
    rounds = np.arange(min_rounds, max_rounds + 1)
    t = rounds / max_rounds
    T = _paired_t_null(cells, max_rounds, rounds, sims, seed)

    def error(gamma: float, sides: int) -> float:
        c = _t_crit(spending_boundary(t, gamma * alpha, sides, spending), cells - 1)
        if sides == 2:
            return float(np.mean((np.abs(T) >= c).any(axis=1)))
        return float(np.mean((T >= c).any(axis=1)) + np.mean((-T >= c).any(axis=1))) / 2

    out = []
    for sides in (2, 1):
        if error(1.0, sides) <= alpha:
            out.append(1.0)
            continue
        lo, hi = 0.5, 1.0
        while error(lo, sides) > alpha:
            lo /= 2
        for _ in range(18):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if error(mid, sides) <= alpha else (lo, mid)
        out.append(lo)
    return out[0], out[1]


def _t_crit(z, df):
    """A normal boundary carried to a t statistic with `df` by its nominal level."""
    return sps.t.isf(sps.norm.sf(z), df)


def verdicts(est, se, df, margin, crit_diff, crit_eq):
    """Vectorised three-way verdict (0 inconclusive, 1 differs, 2 equivalent) for estimates,
    standard errors and dfs (any broadcastable shapes) with t critical values."""
    est, se = np.asarray(est, float), np.asarray(se, float)
    differs = (np.abs(est) >= crit_diff * se) & (np.abs(est) > margin)
    equiv = (est - crit_eq * se > -margin) & (est + crit_eq * se < margin)
    return np.where(differs, 1, np.where(equiv & ~differs, 2, 0))


NAMES = np.array(["inconclusive", "differs", "equivalent"])


def evaluate_stats(estimates, ses, dfs, margin: float, alpha: float = ALPHA, max_rounds: int | None = None,
                   min_rounds: int = 1, n=None, spending: str = "obrien-fleming",
                   cells: int | None = None) -> list[Decision]:
    """The sequential rule on per-round statistics of any deciding rule (paired t, Welch):
    estimates[j], ses[j], dfs[j] after round j + 1 (rounds 1 … len(estimates), in order).
    Rounds before min_rounds are not looked at. `cells`: the paired rule over that many
    cells, whose t boundaries are calibrated (critical_values); without it, each z boundary is
    carried to t with dfs[j] by its nominal level (Jennison & Turnbull 2000, ch. 3: approximate,
    close for df ≳ 30). Returns one Decision per looked-at round.
    Raises ValueError when there are more rounds than max_rounds or the lengths disagree."""
    est, se, df = (np.asarray(v, dtype=float) for v in (estimates, ses, dfs))
    if not len(est) == len(se) == len(df):
        raise ValueError("estimates, ses and dfs must have one value per round")
    max_rounds = max_rounds or len(est)
    if len(est) > max_rounds:
        raise ValueError(f"{len(est)} rounds observed, more than max_rounds = {max_rounds}")
    crit = critical_values(max_rounds, min_rounds, alpha, spending, cells)
    out: list[Decision] = []
    stop = naive_stop = None
    verdict = naive = "inconclusive"
    for j in range(min_rounds - 1, len(est)):
        r = j + 1
        row = crit.iloc[j - (min_rounds - 1)]
        if cells is not None:
            cd, ce = row["t_differs"], row["t_equivalent"]
        else:
            cd, ce = _t_crit(row["z_differs"], df[j]), _t_crit(row["z_equivalent"], df[j])
        now = NAMES[verdicts(est[j], se[j], df[j], margin, cd, ce)].item()
        if stop is None and now != "inconclusive":
            stop, verdict = r, now
        nd, ne = sps.t.isf(alpha / 2, df[j]), sps.t.isf(alpha, df[j])
        naive_now = NAMES[verdicts(est[j], se[j], df[j], margin, nd, ne)].item()
        if naive_stop is None and naive_now != "inconclusive":
            naive_stop, naive = r, naive_now
        out.append(Decision(r, int(n[j]) if n is not None else 0, float(est[j]), float(se[j]), float(df[j]),
                            float(est[j] - cd * se[j]), float(est[j] + cd * se[j]),
                            float(est[j] - ce * se[j]), float(est[j] + ce * se[j]), float(margin), now,
                            verdict, stop is not None, stop, naive,
                            float(est[j] - nd * se[j]), float(est[j] + nd * se[j]), naive_stop))
    return out


def paired_stats(diffs_by_round) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The paired rule's statistic after each round: diffs_by_round is (rounds, cells), the
    per-cell difference a − b of batch means in each round (NaN: that cell's batch is missing).
    After round k each cell's difference is its mean over rounds 1 … k, and the paired t over
    cells (stats.paired) gives estimate = mean, se = sd / √cells, df = cells − 1.
    Returns (estimates, ses, dfs, cells), one value per round."""
    d = np.asarray(diffs_by_round, dtype=float)
    if d.ndim != 2:
        raise ValueError(f"diffs_by_round must be (rounds, cells), got shape {d.shape}")
    seen = np.cumsum(np.isfinite(d), axis=0)
    cum = np.nancumsum(d, axis=0) / np.where(seen > 0, seen, np.nan)
    cells = np.sum(np.isfinite(cum), axis=1)
    est = np.nanmean(cum, axis=1)
    sd = np.array([np.nanstd(row, ddof=1) if c >= 2 else np.nan for row, c in zip(cum, cells)])
    return est, sd / np.sqrt(cells), (cells - 1).astype(float), cells


def evaluate(diffs_by_round, margin: float, alpha: float = ALPHA, max_rounds: int | None = None,
             min_rounds: int = 2, spending: str = "obrien-fleming") -> list[Decision]:
    """The paired rule over cells (stats.paired), looked at after every round.
    diffs_by_round: (rounds so far, cells) array of per-cell batch-mean differences a − b, in
    the metric's unit; margin: the pre-set absolute margin (same unit); max_rounds: the
    design's last round (max_batches); min_rounds: the first round looked at (min_batches).
    Returns a Decision per round from min_rounds on. Raises ValueError on a bad shape, more
    rounds than max_rounds, or fewer than 3 cells (or a count that changes) over the looks.
    A cell with a batch missing in some round keeps the mean of the batches it has."""
    est, se, df, cells = paired_stats(diffs_by_round)
    if np.any(cells[min_rounds - 1:] != cells[-1]) or cells[-1] < 3:
        raise ValueError(f"the paired rule needs the same 3 cells or more in every round, got {cells.tolist()}")
    return evaluate_stats(est, se, df, margin, alpha, max_rounds, min_rounds, cells, spending, int(cells[-1]))


def welch_stats(a_by_round, b_by_round) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The pooled rule on batch means (stats.compare, units = batches): a_by_round[k] and
    b_by_round[k] are the batch means each side added in round k + 1. After round k, Welch's
    difference of means, its standard error and Welch–Satterthwaite df over every batch so far.
    Returns (estimates, ses, dfs, batches)."""
    est, se, df, n = [], [], [], []
    xa, xb = np.array([]), np.array([])
    for a, b in zip(a_by_round, b_by_round):
        xa = np.concatenate([xa, np.asarray(a, float)[np.isfinite(a)]])
        xb = np.concatenate([xb, np.asarray(b, float)[np.isfinite(b)]])
        va, vb = xa.var(ddof=1) / len(xa), xb.var(ddof=1) / len(xb)
        est.append(xa.mean() - xb.mean())
        se.append(math.sqrt(va + vb))
        df.append((va + vb) ** 2 / (va ** 2 / (len(xa) - 1) + vb ** 2 / (len(xb) - 1)) if va + vb > 0 else np.nan)
        n.append(min(len(xa), len(xb)))
    return np.array(est), np.array(se), np.array(df), np.array(n)


def evaluate_pooled(a_by_round, b_by_round, margin: float, alpha: float = ALPHA,
                    max_rounds: int | None = None, min_rounds: int = 2,
                    spending: str = "obrien-fleming") -> list[Decision]:
    """The pooled rule (Welch on batch means) looked at after every round; see welch_stats."""
    est, se, df, n = welch_stats(a_by_round, b_by_round)
    return evaluate_stats(est, se, df, margin, alpha, max_rounds, min_rounds, n, spending)


def frame(decisions: list[Decision]) -> pd.DataFrame:
    """Decisions as a table, one row per looked-at round."""
    return pd.DataFrame([d.as_dict() for d in decisions])


# --- simulation ----------------------------------------------------------------------------

def _draw(rng, shape, noise: str, noise_df: float):
    if noise == "normal":
        return rng.standard_normal(shape)
    if noise == "t":  # unit variance, heavier tails
        return rng.standard_t(noise_df, shape) * math.sqrt((noise_df - 2) / noise_df)
    raise ValueError(f"noise must be 'normal' or 't', got {noise!r}")


def simulate(effects=(0.0, 1.0, 2.0), margin: float = 1.0, cells: int = 12, max_rounds: int = 8,
             min_rounds: int = 2, sigma: float = 2.0, tau: float = 0.0, noise: str = "normal",
             noise_df: float = 5.0, sims: int = 4000, alpha: float = ALPHA, seed: int = 26,
             spending: str = "obrien-fleming") -> pd.DataFrame:
    """Monte Carlo of the paired rule under the batch noise model: the difference a − b of one
    cell's batch means in one round is effect + τ u_cell + σ e, u_cell ~ N(0, 1) fixed per cell
    and simulated study (a cell × language interaction), e per batch, normal or t(noise_df)
    scaled to unit variance. `effects` are in multiples of `margin` (absolute unit otherwise
    when margin is 0). Three designs on the same draws: "sequential" (this module: looks from
    min_rounds on, stops at its first decision), "fixed" (the plain rule at max_rounds only:
    today's), "naive" (the plain rule looked at every round from min_rounds, stopping at its
    first decision: what a tool stopping on a plain CI does).
    Returns one row per effect × design: sims, counts and rates of differs / equivalent,
    mean stopping round (max_rounds when undecided) and mean half-width of the interval at
    the stop (the sequential rule's RCI, the plain CI otherwise)."""
    rng = np.random.default_rng(seed)
    crit = critical_values(max_rounds, min_rounds, alpha, spending, cells)
    df = cells - 1
    cd, ce = crit["t_differs"].to_numpy(), crit["t_equivalent"].to_numpy()
    nd, ne = sps.t.isf(alpha / 2, df), sps.t.isf(alpha, df)
    looked = crit["round"].to_numpy()
    rows = []
    for mult in effects:
        effect = mult * margin if margin else mult
        u = rng.standard_normal((sims, 1, cells))
        d = effect + tau * u + sigma * _draw(rng, (sims, max_rounds, cells), noise, noise_df)
        cum = np.cumsum(d, axis=1) / np.arange(1, max_rounds + 1)[None, :, None]
        est = cum.mean(axis=2)[:, looked - 1]
        se = (cum.std(axis=2, ddof=1) / math.sqrt(cells))[:, looked - 1]
        for design, c_d, c_e, rounds in (("sequential", cd, ce, looked), ("naive", nd, ne, looked),
                                         ("fixed", nd, ne, looked[-1:])):
            cols = slice(None) if design != "fixed" else slice(-1, None)
            code = verdicts(est[:, cols], se[:, cols], df, margin, c_d, c_e)
            hit = code != 0
            first = np.where(hit.any(axis=1), hit.argmax(axis=1), len(rounds) - 1)
            final = code[np.arange(sims), first]
            crit_at = np.broadcast_to(c_d, (len(rounds),))[first]
            n_diff, n_eq = int((final == 1).sum()), int((final == 2).sum())
            rows.append({"effect_x_margin": mult, "design": design, "sims": sims,
                         "differs": n_diff, "equivalent": n_eq,
                         "differs_rate": n_diff / sims, "equivalent_rate": n_eq / sims,
                         "mean_stop_round": float(rounds[first].mean()), "max_rounds": max_rounds,
                         "mean_half_width": float((crit_at * se[:, cols][np.arange(sims), first]).mean())})
    return pd.DataFrame(rows)
