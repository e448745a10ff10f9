"""Valid JSON out, always: a number that cannot be computed is ``null``, and the document says why.

JSON has no NaN or Infinity (Python's ``json`` writes them by default, and strict parsers - jq,
JavaScript's ``JSON.parse``, most databases - then refuse the whole file). Convention, used by
every JSON file the library writes (``report.json``, ``evaluate --out``, ``indices --out``,
``pseudo_labels.json``, ``log.jsonl``, the one-line summaries on stdout):

* a value that is not a finite number becomes ``null``, so a field keeps its type (number or null);
* the document's top-level object gains ``"null_reasons"``: {JSON pointer (RFC 6901) of each such
  value: why it is null}, e.g. ``{"/per_case/case1/left atrium/hd95": "undefined: the prediction
  or the reference is empty"}``. The reason is the producer's, else one known by key name
  (``DEFAULT_REASONS``), else "not a finite number (NaN)" / "(infinite)". A producer states its
  reasons by putting ``"null_reasons"`` (pointers relative to that object) into any object of the
  document; the writer moves them to the top level with full pointers (a ``None`` it names there
  is listed too);
* the file is written with ``allow_nan=False``, so nothing non-standard can slip through.
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping

#: Reasons known by key name (the last element of the pointer), used when the producer gives none.
DEFAULT_REASONS = {
    "hd95": "undefined: the prediction or the reference is empty",
    "hausdorff": "undefined: the prediction or the reference is empty",
    "asd": "undefined: the prediction or the reference is empty",
    "assd": "undefined: the prediction or the reference is empty",
    "ravd": "undefined: the reference is empty",
    "mean": "no case has a finite value",
    "std": "no case has a finite value",
    "dice": "undefined: nothing to compare",
    "val_dice": "undefined: no validation case",
    "lv_ef_percent": "undefined: the left ventricle is empty at end-diastole",
    "rv_ef_percent": "undefined: the right ventricle is empty at end-diastole",
}


def _escape(key: str) -> str:
    return str(key).replace("~", "~0").replace("/", "~1")


def clean(obj: Any, reasons: Mapping[str, str] | None = None, _path: str = "", _nulls: dict | None = None):
    """-> (a copy of ``obj`` with every non-finite number replaced by None and numpy scalars/arrays
    turned into Python values, {pointer: reason} of the replaced values)."""
    nulls = {} if _nulls is None else _nulls
    reasons = reasons or {}
    if isinstance(obj, Mapping):
        local = obj.get("null_reasons")
        if isinstance(local, Mapping) and local:
            reasons = {**reasons, **{f"{_path}{k}": str(v) for k, v in local.items()}}
        out = {}
        for k, v in obj.items():
            if k == "null_reasons" and isinstance(v, Mapping):
                continue
            path = f"{_path}/{_escape(k)}"
            if v is None and path in reasons:
                nulls[path] = reasons[path]
            out[str(k)] = clean(v, reasons, path, nulls)[0]
        return out, nulls
    if isinstance(obj, (list, tuple)):
        return [clean(v, reasons, f"{_path}/{i}", nulls)[0] for i, v in enumerate(obj)], nulls
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):  # numpy scalar or array
        return clean(obj.tolist(), reasons, _path, nulls)
    if isinstance(obj, bool) or obj is None or isinstance(obj, (str, int)):
        return obj, nulls
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj, nulls
        key = _path.rsplit("/", 1)[-1].replace("~1", "/").replace("~0", "~")
        default = "not a finite number (NaN)" if math.isnan(obj) else "not a finite number (infinite)"
        nulls[_path] = reasons.get(_path) or reasons.get(key) or DEFAULT_REASONS.get(key) or default
        return None, nulls
    return obj, nulls


def dumps(obj: Any, reasons: Mapping[str, str] | None = None, **kwargs) -> str:
    """``json.dumps`` following the module's convention (``null`` + ``null_reasons``; never NaN).

    reasons: {pointer or key name: why} for values the producer knows to be missing (as do the
    ``null_reasons`` objects inside ``obj``)."""
    data, nulls = clean(obj, reasons)
    if nulls:
        if isinstance(data, dict):
            data["null_reasons"] = nulls
        # a top-level list or number cannot carry reasons; it still becomes valid JSON
    return json.dumps(data, allow_nan=False, **kwargs)
