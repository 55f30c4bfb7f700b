"""Fitting a scoring council (recovery/council.py) with numpy and scikit-learn.

``fit_council`` runs, on the training rows only (docs/scoring-model.md has the reasoning):

1. Binning. Numeric features: up to ``max_bins`` quantile bins, edges halfway between distinct
   values, plus a missing bin. Categorical features: one bin per category seen at least
   ``min_category_count`` times, an "other" bin for the rest (and for unseen ones at serving),
   a missing bin.
2. Shape functions. All (specialist, feature) terms are boosted together, EBM-style: cyclic
   rounds over the terms, each step a shrunken Newton step per bin (L2 on the bin's hessian), so
   each specialist is fitted on what the others leave unexplained.
3. Inner cross-validation (``inner_folds`` stratified folds, or grouped when ``groups`` is given).
   Each fold's model stops early on its held-out part; the council's tables are the average of
   the fold models (bagging), and the held-out outputs are out-of-fold specialist scores.
4. Segment. A numeric feature and one edge, picked by the gain of splitting every term's table in
   two, become the council's segment (each term then holds one table per segment) if that lowers
   the inner-CV log-loss; otherwise the council has no segment.
5. Combiner. A logistic regression on the out-of-fold specialist scores gives each specialist a
   weight and the intercept: the calibrated log-odds.
6. Export. Tables are scaled by their specialist's weight and centred (weighted mean zero over the
   training rows, within each segment; the segment's own offsets go to the segment feature's
   term), so each lookup is the feature's exact contribution and the intercept is the base.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from recovery.council import FORMAT, Council, FeatureValue, category_key

Floats = NDArray[np.float64]
Ints = NDArray[np.intp]


@dataclass(frozen=True, slots=True)
class Hyperparameters:
    """Fixed once for every council (docs/scoring-model.md); nothing is tuned per data set."""

    max_bins: int = 32
    min_category_count: int = 10
    learning_rate: float = 0.1
    l2: float = 20.0  # added to each bin's hessian sum: a bin needs data to move far from 0
    max_rounds: int = 400
    patience: int = 30  # rounds without a better held-out log-loss before a fold model stops
    inner_folds: int = 5
    segment: bool = True  # consider a segment at all
    min_segment_share: float = 0.05  # of the training weight, in each segment
    combiner_c: float = 1.0


@dataclass(slots=True)
class _Feature:
    name: str
    categorical: bool
    codes: Ints  # per training row: 0 missing, numeric 1.., categorical 1 other and 2..
    n_bins: int
    edges: Floats = field(default_factory=lambda: np.empty(0))
    categories: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Segment:
    feature: str
    edge: float
    index: Ints  # per training row: 0 or 1


@dataclass(slots=True)
class _FoldFits:
    tables: list[list[Floats]]  # per fold, per term: flat (segment, bin) table
    oof: Floats  # rows x specialists: out-of-fold specialist scores
    loss: float  # weighted held-out log-loss over all rows
    rounds: list[int]


# Inputs ------------------------------------------------------------------------------------------


def _numeric_column(rows: Sequence[Mapping[str, FeatureValue]], name: str) -> Floats:
    out = np.empty(len(rows))
    for i, row in enumerate(rows):
        v = row.get(name)
        if v is None:
            out[i] = np.nan
        elif isinstance(v, int | float):
            out[i] = float(v)
        else:
            raise ValueError(
                f"Feature {name!r} is numeric but row {i} has {type(v).__name__} {v!r}; "
                f"list it in `categorical` if it is a category."
            )
    return out


def _category_column(rows: Sequence[Mapping[str, FeatureValue]], name: str) -> list[str | None]:
    out: list[str | None] = []
    for row in rows:
        v = row.get(name)
        out.append(None if v is None or v != v else category_key(v))
    return out


def _numeric_edges(x: Floats, max_bins: int) -> Floats:
    present = x[~np.isnan(x)]
    if len(present) == 0:
        return np.empty(0)
    distinct = np.unique(present)
    if len(distinct) <= 1:
        return np.empty(0)
    if len(distinct) <= max_bins:
        return (distinct[:-1] + distinct[1:]) / 2
    cuts = np.unique(np.quantile(present, np.linspace(0, 1, max_bins + 1)[1:-1], method="lower"))
    at = np.searchsorted(distinct, cuts)
    at = at[at < len(distinct) - 1]
    return np.unique((distinct[at] + distinct[at + 1]) / 2)


def _numeric_codes(x: Floats, edges: Floats) -> Ints:
    codes = np.searchsorted(edges, x, side="right") + 1
    codes[np.isnan(x)] = 0
    return codes.astype(np.intp)


def _feature(
    rows: Sequence[Mapping[str, FeatureValue]],
    name: str,
    categorical: bool,
    weighted: NDArray[np.bool_],
    hp: Hyperparameters,
) -> _Feature:
    """Bins from the rows with weight (``weighted``); codes for every row."""
    if categorical:
        column = _category_column(rows, name)
        counts: dict[str, int] = {}
        for v, keep in zip(column, weighted, strict=True):
            if v is not None and keep:
                counts[v] = counts.get(v, 0) + 1
        kept = sorted(k for k, c in counts.items() if c >= hp.min_category_count)
        position = {k: i + 2 for i, k in enumerate(kept)}
        codes = np.array([0 if v is None else position.get(v, 1) for v in column], dtype=np.intp)
        return _Feature(name, True, codes, len(kept) + 2, categories=kept)
    x = _numeric_column(rows, name)
    edges = _numeric_edges(x[weighted], hp.max_bins)
    return _Feature(name, False, _numeric_codes(x, edges), len(edges) + 2, edges=edges)


# Boosting ----------------------------------------------------------------------------------------


def _base_log_odds(y: Floats, w: Floats) -> float:
    rate = min(max(float(np.sum(w * y) / np.sum(w)), 1e-9), 1 - 1e-9)
    return math.log(rate / (1 - rate))


def _sigmoid(z: Floats) -> Floats:
    return 0.5 + 0.5 * np.tanh(0.5 * z)  # no overflow, one transcendental


def _log_loss(z: Floats, y: Floats, w: Floats) -> float:
    # -[y log p + (1-y) log(1-p)] = logaddexp(0, z) - y z
    return float(np.sum(w * (np.logaddexp(0.0, z) - y * z)) / np.sum(w))


def _boost(
    cells: list[Ints],
    sizes: list[int],
    y: Floats,
    w: Floats,
    train: Ints,
    valid: Ints,
    hp: Hyperparameters,
) -> tuple[list[Floats], int]:
    """Cyclic Newton boosting of every term on ``train``, stopped early on ``valid``.

    Each term's step uses the gradient after the previous term's step (Gauss-Seidel): stable with
    correlated terms. With p = (1 + tanh(z/2)) / 2 the per-bin gradient and hessian sums are a
    constant part (precomputed) minus one bincount each, computed in preallocated buffers.
    """
    yt, wt, yv, wv = y[train], w[train], y[valid], w[valid]
    ct = [c[train] for c in cells]
    cv = [c[valid] for c in cells]
    start = _base_log_odds(yt, wt)
    z = np.full(len(train), start)
    zv = np.full(len(valid), start)
    half_w = 0.5 * wt
    g_const = [np.bincount(c, wt * (yt - 0.5), s) for c, s in zip(ct, sizes, strict=True)]
    h_const = [np.bincount(c, 0.25 * wt, s) for c, s in zip(ct, sizes, strict=True)]
    t, wt_t = np.empty(len(train)), np.empty(len(train))
    moved, moved_v = np.empty(len(train)), np.empty(len(valid))
    tables = [np.zeros(s) for s in sizes]
    best, best_round, best_tables = _log_loss(zv, yv, wv), 0, [t.copy() for t in tables]
    for r in range(1, hp.max_rounds + 1):
        for j, size in enumerate(sizes):
            np.multiply(z, 0.5, out=t)
            np.tanh(t, out=t)  # p = (1 + t) / 2
            np.multiply(half_w, t, out=wt_t)
            g = g_const[j] - np.bincount(ct[j], wt_t, size)  # sum w (y - p)
            np.multiply(wt_t, t, out=t)
            h = np.maximum(h_const[j] - 0.5 * np.bincount(ct[j], t, size), 0.0)  # sum w p (1-p)
            step = hp.learning_rate * g / (h + hp.l2)
            tables[j] += step
            np.take(step, ct[j], out=moved)
            z += moved
            np.take(step, cv[j], out=moved_v)
            zv += moved_v
        loss = _log_loss(zv, yv, wv)
        if loss < best - 1e-12:
            best, best_round, best_tables = loss, r, [t.copy() for t in tables]
        elif r - best_round >= hp.patience:
            break
    return best_tables, best_round


def _term_cells(features: list[_Feature], segment: _Segment | None) -> tuple[list[Ints], list[int]]:
    if segment is None:
        return [f.codes for f in features], [f.n_bins for f in features]
    return (
        [segment.index * f.n_bins + f.codes for f in features],
        [2 * f.n_bins for f in features],
    )


def _fit_folds(
    features: list[_Feature],
    owners: Ints,
    n_specialists: int,
    segment: _Segment | None,
    y: Floats,
    w: Floats,
    folds: list[tuple[Ints, Ints]],
    hp: Hyperparameters,
) -> _FoldFits:
    cells, sizes = _term_cells(features, segment)
    oof = np.zeros((len(y), n_specialists))
    all_tables, rounds = [], []
    loss = 0.0
    for train, valid in folds:
        tables, best_round = _boost(cells, sizes, y, w, train, valid, hp)
        if segment is not None:
            _segment_levels_to_owner(tables, features, segment, w, train)
        all_tables.append(tables)
        rounds.append(best_round)
        for j, table in enumerate(tables):
            oof[valid, owners[j]] += table[cells[j][valid]]
        # The fold's intercept is the same for every specialist: the combiner refits it.
        zv = _base_log_odds(y[train], w[train]) + oof[valid].sum(axis=1)
        loss += _log_loss(zv, y[valid], w[valid]) * float(np.sum(w[valid]))
    return _FoldFits(all_tables, oof, loss / float(np.sum(w)), rounds)


def _segment_levels_to_owner(
    tables: list[Floats], features: list[_Feature], segment: _Segment, w: Floats, rows: Ints
) -> None:
    """Every term's table can carry a level per segment, which makes the levels' split between
    specialists arbitrary. Centre each table within each segment (over ``rows``) and give the
    levels to the segment feature's term, so each specialist's score is its features' effect
    and the segment's level belongs to the specialist that owns the segment feature."""
    seg, wr = segment.index[rows], w[rows]
    seg_w = np.bincount(seg, wr, 2)
    owner = next(j for j, f in enumerate(features) if f.name == segment.feature)
    for j, f in enumerate(features):
        if j == owner:
            continue
        table = tables[j].reshape(2, f.n_bins)  # a view: edits land in tables[j]
        level = np.bincount(seg, table[seg, f.codes[rows]] * wr, 2) / np.maximum(seg_w, 1e-300)
        table -= level[:, None]
        tables[owner].reshape(2, -1)[:] += level[:, None]


def _best_segment(
    features: list[_Feature], fits: _FoldFits, y: Floats, w: Floats, hp: Hyperparameters
) -> _Segment | None:
    """The numeric feature and edge whose two-way split of every term gains most (one Newton
    step from the unsegmented model, as in FAST for pairwise interactions)."""
    tables = [np.mean([t[j] for t in fits.tables], axis=0) for j in range(len(features))]
    z = np.full(len(y), _base_log_odds(y, w))
    for t, f in zip(tables, features, strict=True):
        z += t[f.codes]
    p = _sigmoid(z)
    g, h = w * (y - p), w * p * (1 - p)
    total_w = float(np.sum(w))
    best: tuple[float, str, float] | None = None
    for s in features:
        if s.categorical or len(s.edges) == 0:
            continue
        share = np.cumsum(np.bincount(s.codes, w, s.n_bins)) / total_w  # codes <= t
        gain = np.zeros(len(s.edges))
        for f in features:
            if f is s:
                continue
            cell = f.codes * s.n_bins + s.codes
            gg = np.bincount(cell, g, f.n_bins * s.n_bins).reshape(f.n_bins, s.n_bins)
            hh = np.bincount(cell, h, f.n_bins * s.n_bins).reshape(f.n_bins, s.n_bins)
            g_low, h_low = np.cumsum(gg, axis=1), np.cumsum(hh, axis=1)
            g_all, h_all = g_low[:, -1:], h_low[:, -1:]
            g_high, h_high = g_all - g_low, h_all - h_low
            split = g_low**2 / (h_low + hp.l2) + g_high**2 / (h_high + hp.l2)
            gain += (split - g_all**2 / (h_all + hp.l2)).sum(axis=0)[1:-1]
        # Edge t (0-based) puts codes <= t+1 in segment 0; each side needs its share.
        low = share[1:-1]
        ok = (low >= hp.min_segment_share) & (1 - low >= hp.min_segment_share)
        if not ok.any():
            continue
        t = int(np.argmax(np.where(ok, gain, -np.inf)))
        if best is None or gain[t] > best[0]:
            best = (float(gain[t]), s.name, float(s.edges[t]))
    if best is None:
        return None
    _, name, edge = best
    s = next(f for f in features if f.name == name)
    return _Segment(name, edge, (s.codes >= np.searchsorted(s.edges, edge) + 2).astype(np.intp))


# Export ------------------------------------------------------------------------------------------


def _fill_empty(table: Floats, weight: Floats, numeric: bool) -> None:
    """Bins with no training weight: a numeric bin copies its nearest filled bin; any other bin
    (missing, other, a category) gets the weighted mean, which centring turns into 0."""
    filled = weight > 0
    if filled.all() or not filled.any():
        return
    mean = float(np.sum(table * weight) / np.sum(weight))
    empty = ~filled
    table[empty] = mean
    if numeric and filled[1:].any():
        at = np.flatnonzero(filled[1:]) + 1
        for b in np.flatnonzero(empty[1:]) + 1:
            table[b] = table[at[np.argmin(np.abs(at - b))]]


def _export(
    features: list[_Feature],
    owners: Ints,
    specialist_names: list[str],
    segment: _Segment | None,
    fits: _FoldFits,
    y: Floats,
    w: Floats,
    version: str,
    hp: Hyperparameters,
    meta: dict[str, Any],
) -> Council:
    combiner = LogisticRegression(C=hp.combiner_c, max_iter=1000)
    combiner.fit(fits.oof, y, sample_weight=w)
    weights = combiner.coef_[0]
    base = float(combiner.intercept_[0])
    n_segments = 1 if segment is None else 2
    seg = np.zeros(len(y), dtype=np.intp) if segment is None else segment.index
    offsets = np.zeros(n_segments)
    tables: list[Floats] = []
    for j, f in enumerate(features):
        table = np.mean([t[j] for t in fits.tables], axis=0).reshape(n_segments, f.n_bins)
        table *= weights[owners[j]]
        cell_w = np.bincount(seg * f.n_bins + f.codes, w, n_segments * f.n_bins)
        cell_w = cell_w.reshape(n_segments, f.n_bins)
        for s in range(n_segments):
            _fill_empty(table[s], cell_w[s], not f.categorical)
            mean = float(np.sum(table[s] * cell_w[s]) / np.sum(cell_w[s]))
            table[s] -= mean
            offsets[s] += mean
        tables.append(table)
    if segment is None:
        base += float(offsets[0])
    else:
        j = next(j for j, f in enumerate(features) if f.name == segment.feature)
        f = features[j]
        tables[j] += offsets[:, None]
        mean = float(np.sum(tables[j][seg, f.codes] * w) / np.sum(w))
        tables[j] -= mean
        base += mean

    specialists: list[dict[str, Any]] = [
        {"name": name, "weight": float(weights[k]), "features": []}
        for k, name in enumerate(specialist_names)
    ]
    for j, f in enumerate(features):
        table = tables[j]
        term: dict[str, Any] = {"feature": f.name}
        if f.categorical:
            term["type"] = "categorical"
            term["categories"] = list(f.categories)
            term["values"] = [[float(v) for v in table[s, 2:]] for s in range(n_segments)]
            term["other"] = [float(table[s, 1]) for s in range(n_segments)]
        else:
            term["type"] = "numeric"
            term["edges"] = [float(e) for e in f.edges]
            term["values"] = [[float(v) for v in table[s, 1:]] for s in range(n_segments)]
        term["missing"] = [float(table[s, 0]) for s in range(n_segments)]
        specialists[int(owners[j])]["features"].append(term)
    artifact = {
        "format": FORMAT,
        "version": version,
        "base_log_odds": base,
        "segment": None
        if segment is None
        else {"feature": segment.feature, "edges": [segment.edge]},
        "specialists": specialists,
        "training": {
            **meta,
            "combiner": {"intercept": float(combiner.intercept_[0]), "weights": weights.tolist()},
            "fold_rounds": fits.rounds,
            "hyperparameters": asdict(hp),
        },
    }
    return Council.from_dict(artifact)


# Public API --------------------------------------------------------------------------------------


def _check_inputs(
    rows: Sequence[Mapping[str, FeatureValue]],
    labels: Sequence[int],
    specialists: Mapping[str, Sequence[str]],
    sample_weight: Sequence[float] | None,
    version: str,
) -> tuple[Floats, Floats]:
    if not isinstance(version, str) or not version:
        raise ValueError("version must be a non-empty string.")
    if not specialists:
        raise ValueError("At least one specialist is needed.")
    for name, names in specialists.items():
        if not names:
            raise ValueError(f"Specialist {name!r} has no features.")
        if len(set(names)) != len(names):
            raise ValueError(f"Specialist {name!r} lists a feature twice.")
    if len(rows) != len(labels):
        raise ValueError(f"{len(rows)} rows but {len(labels)} labels.")
    y = np.asarray(labels, dtype=np.float64)
    if y.ndim != 1 or not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("Labels must be 0 (converted) or 1 (abandoned).")
    if sample_weight is None:
        w = np.ones(len(y))
    else:
        w = np.asarray(sample_weight, dtype=np.float64)
        if w.shape != y.shape:
            raise ValueError(f"{len(y)} labels but {len(w)} sample weights.")
        if not np.isfinite(w).all() or (w < 0).any():
            raise ValueError("Sample weights must be finite and non-negative.")
    for label in (0.0, 1.0):
        if np.sum(w[y == label]) <= 0:
            raise ValueError("Both classes (0 converted, 1 abandoned) need positive weight.")
    # Mean weight 1: the L2 terms and the combiner's C mean the same whatever the weights' scale.
    return y, w / np.mean(w)


def fit_council(
    rows: Sequence[Mapping[str, FeatureValue]],
    labels: Sequence[int],
    *,
    specialists: Mapping[str, Sequence[str]],
    categorical: Collection[str] = (),
    sample_weight: Sequence[float] | None = None,
    version: str,
    seed: int = 0,
    groups: Sequence[Hashable] | None = None,
    hyperparameters: Hyperparameters | None = None,
) -> Council:
    """Fit a council; ``labels`` are 1 for abandoned (no order), 0 for converted.

    ``groups`` (optional, e.g. the cart of each snapshot) keeps a group's rows in one inner fold,
    so early stopping and the combiner see honest held-out scores. Deterministic given ``seed``.
    """
    hp = hyperparameters or Hyperparameters()
    y, w = _check_inputs(rows, labels, specialists, sample_weight, version)
    categorical = set(categorical)
    specialist_names = list(specialists)
    features: list[_Feature] = []
    owner_list: list[int] = []
    cache: dict[str, _Feature] = {}
    for k, name in enumerate(specialist_names):
        for feature in specialists[name]:
            if feature not in cache:
                cache[feature] = _feature(rows, feature, feature in categorical, w > 0, hp)
            features.append(cache[feature])
            owner_list.append(k)
    owners = np.asarray(owner_list, dtype=np.intp)

    # Inner folds: only rows with weight can be held out meaningfully, but all rows train.
    minority = int(min(np.sum(y == 0), np.sum(y == 1)))
    n_folds = min(hp.inner_folds, minority, len(set(groups)) if groups is not None else minority)
    if n_folds < 2:
        raise ValueError("At least 2 examples of each class (and 2 groups) are needed.")
    index = np.arange(len(y))
    if groups is None:
        splitter: Any = StratifiedKFold(n_folds, shuffle=True, random_state=seed)
        split = splitter.split(index, y)
    else:
        if len(groups) != len(y):
            raise ValueError(f"{len(y)} labels but {len(groups)} groups.")
        splitter = StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed)
        split = splitter.split(index, y, groups=list(groups))
    folds = [(tr.astype(np.intp), va.astype(np.intp)) for tr, va in split]

    fits = _fit_folds(features, owners, len(specialist_names), None, y, w, folds, hp)
    segment = _best_segment(features, fits, y, w, hp) if hp.segment else None
    losses: dict[str, float] = {"none": fits.loss}
    if segment is not None:
        segmented = _fit_folds(features, owners, len(specialist_names), segment, y, w, folds, hp)
        losses[f"{segment.feature} >= {segment.edge:.6g}"] = segmented.loss
        if segmented.loss < fits.loss:
            fits = segmented
        else:
            segment = None
    meta = {
        "rows": len(y),
        "weight": float(np.sum(w)),
        "abandoned_weight": float(np.sum(w * y)),
        "inner_folds": n_folds,
        "seed": seed,
        "inner_cv_log_loss": losses,
    }
    return _export(features, owners, specialist_names, segment, fits, y, w, version, hp, meta)


def evaluate(
    probabilities: Sequence[float],
    labels: Sequence[int],
    sample_weight: Sequence[float] | None = None,
    bins: int = 10,
) -> dict[str, Any]:
    """ROC AUC, PR AUC (average precision), Brier score and a calibration table (equal-width
    probability bins; empty bins left out). AUCs are None when only one class is present."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    if p.shape != y.shape or w.shape != y.shape:
        raise ValueError("probabilities, labels and sample_weight must have the same length.")
    if len(y) == 0:
        raise ValueError("Nothing to evaluate.")
    both = bool(np.sum(w[y == 1]) > 0 and np.sum(w[y == 0]) > 0)
    result: dict[str, Any] = {
        "n": len(y),
        "positives": int(np.sum(y == 1)),
        "roc_auc": float(roc_auc_score(y, p, sample_weight=w)) if both else None,
        "pr_auc": float(average_precision_score(y, p, sample_weight=w)) if both else None,
        "brier": float(brier_score_loss(y, p, sample_weight=w)),
    }
    which = np.minimum((p * bins).astype(np.intp), bins - 1)
    calibration = []
    for b in range(bins):
        mask = which == b
        weight = float(np.sum(w[mask]))
        if not mask.any() or weight <= 0:
            continue
        calibration.append(
            {
                "bin_lo": b / bins,
                "bin_hi": (b + 1) / bins,
                "count": int(np.sum(mask)),
                "mean_predicted": float(np.sum(w[mask] * p[mask]) / weight),
                "observed_rate": float(np.sum(w[mask] * y[mask]) / weight),
            }
        )
    result["calibration"] = calibration
    return result
