"""Active learning: which unlabeled case the user should correct next (``suggest``).

Each unlabeled case is segmented (MC dropout; outputs already made for this case, model and settings
are reused) and scored by the model's own per-case uncertainty score, the one its quality flag
thresholds (``model_meta.QualityRule.score``, e.g. ``mean_boundary_mutual_info``: the mean mutual
information, nats, in the +-2 mm boundary band), taken for the case's least reliable structure
(the maximum over structures). A higher score predicts a lower Dice (``benchmarks/uncertainty_quality.py``
measures how well), so the ranking puts first the case whose correction should teach the model most.

Diversity (``diversity`` w in [0, 1], default 0): the top K of a pure uncertainty ranking may be
near-copies (the two frames of one cine patient, two scans of one anatomy). With w > 0 the cases are
picked greedily, as in suggestive annotation (Yang et al., MICCAI 2017: uncertain first, then
representative and unlike those already picked): the next pick maximizes

    (1 - w) * u + w * (1 - max similarity to the cases already picked),

u the case's uncertainty as a rank fraction in [0, 1] (1 = most uncertain), the similarity the
Pearson correlation of the two images' thumbnails (``thumbnail``: the z-scored image resampled onto
16 x 16 x 8 voxels), clipped to [0, 1]. w = 0 is the plain ranking by score.

Shapes and units: scores in nats; volumes in mL; thumbnails (16, 16, 8) float32 over the voxel grid.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage

from .atomic import atomic_write_text
from .errors import InputError

#: The score ranked by when a model carries no quality rule (said in the output).
DEFAULT_SCORE = "mean_boundary_mutual_info"
#: Thumbnail grid (voxels) the diversity term compares images on.
THUMBNAIL_SHAPE = (16, 16, 8)
SUGGESTIONS_CSV, SUGGESTIONS_JSON = "suggestions.csv", "suggestions.json"


@dataclass
class Suggestion:
    """One ranked case. score: the case's least reliable structure's score (nats); doubtful: the
    quality flag (None when not assessed); volumes_ml: per structure; similarity: the largest
    thumbnail similarity to a case ranked above it (None without the diversity term)."""

    rank: int
    case: str
    score: float
    doubtful: bool | None
    volumes_ml: dict
    input: str
    out: str
    similarity: float | None = None


def case_score(report: dict, score_name: str) -> float:
    """The case's score: the maximum of ``score_name`` over its structures (report.json's
    ``structures``). A structure that is empty (no score) makes the case the most suspect of all
    (+inf): a missing structure is a failed segmentation."""
    values = [s.get(score_name) for s in report["structures"].values()]
    if not values:
        raise InputError(f"report of {report.get('input')} lists no structure")
    return float("inf") if any(v is None for v in values) else float(max(values))


def case_doubtful(report: dict) -> bool | None:
    """True when any structure is flagged doubtful, None when some structure was not assessed."""
    flags = [s.get("doubtful") for s in report["structures"].values()]
    return True if any(f is True for f in flags) else None if any(f is None for f in flags) else False


def thumbnail(image: np.ndarray) -> np.ndarray:
    """(X, Y, Z) image -> (16, 16, 8) float32 thumbnail of its z-scored intensities (linear
    resampling over the voxel grid; NaNs count as the mean)."""
    a = np.nan_to_num(np.asarray(image, dtype=np.float32), nan=float(np.nanmean(image)))
    a = (a - a.mean()) / (a.std() + 1e-6)
    zoom = [t / s for t, s in zip(THUMBNAIL_SHAPE, a.shape)]
    out = ndimage.zoom(a, zoom, order=1, grid_mode=True, mode="nearest")
    return out[: THUMBNAIL_SHAPE[0], : THUMBNAIL_SHAPE[1], : THUMBNAIL_SHAPE[2]].astype(np.float32)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two thumbnails, clipped to [0, 1]."""
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    return 0.0 if denom == 0 else float(np.clip(np.dot(a, b) / denom, 0.0, 1.0))


def rank_order(scores: Sequence[float], thumbnails: Sequence[np.ndarray] | None = None, diversity: float = 0.0):
    """Indices of the cases in suggestion order, and each one's largest similarity to a case before
    it (None without the diversity term). See the module docstring for the rule."""
    if not 0.0 <= diversity <= 1.0:
        raise InputError(f"--diversity must be in [0, 1], got {diversity}")
    n = len(scores)
    order = sorted(range(n), key=lambda i: (-scores[i], i))
    if diversity == 0.0 or n < 2:
        return order, [None] * n
    if thumbnails is None or len(thumbnails) != n:
        raise ValueError("the diversity term needs one thumbnail per case")
    u = np.empty(n)
    u[order] = np.linspace(1.0, 0.0, n)  # rank fraction: 1 = most uncertain
    picked: list[int] = []
    sims: list[float | None] = []
    max_sim = np.zeros(n)
    left = set(range(n))
    while left:
        gain = {i: (1 - diversity) * u[i] + diversity * (1 - max_sim[i]) for i in left}
        best = max(left, key=lambda i: (gain[i], u[i], -i))
        picked.append(best)
        sims.append(float(max_sim[best]) if len(picked) > 1 else None)
        left.remove(best)
        for i in left:
            max_sim[i] = max(max_sim[i], similarity(thumbnails[i], thumbnails[best]))
    return picked, sims


def rank_cases(rows: list[dict], score_name: str, thumbnails=None, diversity: float = 0.0) -> list[Suggestion]:
    """rows: {"case", "input", "out", "report"} per segmented case -> Suggestions, first to correct first."""
    scores = [case_score(r["report"], score_name) for r in rows]
    order, sims = rank_order(scores, thumbnails, diversity)
    return [
        Suggestion(
            rank=k + 1,
            case=rows[i]["case"],
            score=scores[i],
            doubtful=case_doubtful(rows[i]["report"]),
            volumes_ml={n: round(float(s["volume_ml"]), 3) for n, s in rows[i]["report"]["structures"].items()},
            input=rows[i]["input"],
            out=rows[i]["out"],
            similarity=sims[k],
        )
        for k, i in enumerate(order)
    ]


def write_suggestions(out: Path, suggestions: list[Suggestion], header: dict) -> tuple[Path, Path]:
    """OUT/suggestions.json (header + ranked cases) and OUT/suggestions.csv, each atomically."""
    cases = [asdict(s) for s in suggestions]
    for c in cases:  # JSON has no inf: an empty structure's score is written as null, said in "note"
        if not np.isfinite(c["score"]):
            c["score"], c["note"] = None, "a structure is missing from the segmentation"
    atomic_write_text(out / SUGGESTIONS_JSON, json.dumps({**header, "cases": cases}, indent=2))
    structures = list(suggestions[0].volumes_ml) if suggestions else []
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["rank", "case", "score", "doubtful", *[f"{s} (mL)" for s in structures], "similarity", "input"])
    for s in suggestions:
        flag = "" if s.doubtful is None else ("yes" if s.doubtful else "no")
        score = f"{s.score:.5f}" if np.isfinite(s.score) else "missing structure"
        sim = "" if s.similarity is None else f"{s.similarity:.3f}"
        vols = [f"{s.volumes_ml.get(n, 0.0):.2f}" for n in structures]
        writer.writerow([s.rank, s.case, score, flag, *vols, sim, s.input])
    atomic_write_text(out / SUGGESTIONS_CSV, buf.getvalue())
    return out / SUGGESTIONS_JSON, out / SUGGESTIONS_CSV
