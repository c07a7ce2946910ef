"""Targets and the Markdown report, from a stored results dict alone (no measuring here).

A results dict (``benchmarks/results/<name>.json``): ``mode``, ``machine``, ``note``,
``total_s``, ``loadavg_end``, ``cases`` (a list of dicts: ``name``, ``section``, ``calls``,
``settings``, ``seconds`` and either ``metrics`` (+ ``rows``, ``info``), ``skipped`` or
``error``) and ``targets`` (the target definitions of ``benchmarks/cases.py``).

A metric value is a number or a bound: ``{"at_least": x}`` / ``{"at_most": x}`` (e.g. a model
that missed the accuracy target within its cap took at least that long).
"""

from __future__ import annotations

import pandas as pd

STATUSES = ("pass", "fail", "undecided", "missing")
# ratio a / b of bounds: (kind of a, kind of b) -> kind of the ratio; "=" is an exact value
_RATIO = {("=", "="): "=", ("=", ">="): "<=", ("<=", "="): "<=", ("<=", ">="): "<=",
          (">=", "="): ">=", ("=", "<="): ">=", (">=", "<="): ">="}  # fmt: skip
_SIGN = {"=": "", "<=": "<= ", ">=": ">= "}

# the columns of each section's table: metric (or "settings.<key>": a case setting) -> header
COLUMNS = {
    "throughput": dict(params_m="params (M)", epoch_s="s/epoch (timed)", volumes_per_s="volumes/s",
                       peak_gb="peak RSS (GB)", delta_gb="training delta (GB)"),
    "memory": dict(epoch_s="s/epoch", peak_gb="peak RSS (GB)", delta_gb="training delta (GB)"),
    "latency": dict(median_s="median s", first_call_s="first call s", d_output="max abs d output",
                    skipped_slices="slices skipped", non_finite="non-finite output"),
    "cache": dict(decode_s="decode s/vol", preprocess_s="decode + preprocess s/vol",
                  cached_s="cache s/vol", speedup="cache speed-up"),
    "tta": dict(time_to_target_s="time to target (s)", best_val_mae="best val MAE (y)",
                target_mae="target MAE (y)", baseline_mae="mean baseline MAE (y)",
                target_epoch="epoch reached", epochs="epochs run", epoch_s="s/epoch", setup_s="setup s", **{"settings.cap_s": "cap (s)"}),
    "pipeline": dict(median_s="median s per head", heads="heads"),
    "gpu": dict(volumes_per_s="volumes/s", epoch_s="s/epoch", peak_gb="peak GB (CUDA)"),
}  # fmt: skip
COLUMNS["tta_real"] = COLUMNS["tta"]
TITLES = {
    "throughput": "Training throughput (slicelib.train.fit; forward + backward + Adam)",
    "memory": "Peak training memory (one fit epoch, 8 volumes 91 x 109 x 91 in one batch)",
    "latency": "Inference latency, one scan (SliceModel resnet18 sagittal, eval mode)",
    "cache": "Data: decoding + preprocessing vs the preprocessed cache",
    "tta": "Time-to-accuracy, synthetic brain-age task (slicelib.train.train)",
    "tta_real": "Time-to-accuracy, real IXI derivative (data/ixi_hh_4mm, slicelib.train.train)",
    "pipeline": "Registration pipeline on raw 2 mm heads (slicelib.pipeline.run_pipeline)",
    "gpu": "GPU (CUDA): slicelib.train.fit, fp32 vs bf16",
}


def as_bound(value) -> tuple[str, float] | None:
    """``(kind, number)`` of a stored metric value (kind "=", ">=" or "<="); None if absent."""
    if isinstance(value, dict):
        if "at_least" in value:
            return ">=", float(value["at_least"])
        if "at_most" in value:
            return "<=", float(value["at_most"])
        return None
    if value is None or isinstance(value, bool):
        return None
    return "=", float(value)


def lookup(cases: dict[str, dict], ref: str) -> tuple[str, float] | None:
    """The value of ``"<case>.<metric>"`` (the metric after the last dot) or of a ratio
    ``"<case>.<metric> / <case>.<metric>"``, as ``(kind, number)``; None when a case or metric
    is missing, or a ratio of two bounds says nothing."""
    if " / " in ref:
        a, b = (lookup(cases, part.strip()) for part in ref.split(" / ", 1))
        if a is None or b is None or b[1] == 0 or (a[0], b[0]) not in _RATIO:
            return None
        return _RATIO[(a[0], b[0])], a[1] / b[1]
    case, _, metric = ref.rpartition(".")
    return as_bound(cases.get(case, {}).get("metrics", {}).get(metric))


def check_target(target: dict, cases: dict[str, dict]) -> dict:
    """Check one target (``name``, ``metric``, ``op`` "<=" or ">=", ``goal``) against the cases
    by name. Returns the target with ``value`` (a number or None), ``bound`` ("=", "<=", ">=")
    and ``status``: "pass", "fail", "undecided" (a bound on the wrong side of the goal) or
    "missing" (a case or metric absent, e.g. skipped or failed)."""
    op, goal = target["op"], float(target["goal"])
    if op not in ("<=", ">="):
        raise ValueError(f"target {target['name']!r}: op {op!r} must be '<=' or '>='")
    got = lookup(cases, target["metric"])
    if got is None:
        return {**target, "value": None, "bound": None, "status": "missing"}
    kind, value = got
    ok = value <= goal if op == "<=" else value >= goal
    if kind == "=":
        status = "pass" if ok else "fail"
    elif (kind == op) == ok:  # a bound on the goal's side that settles it
        status = "pass" if ok else "fail"
    else:
        status = "undecided"
    return {**target, "value": value, "bound": kind, "status": status}


def check_targets(results: dict) -> list[dict]:
    """Every stored target definition checked against the stored cases."""
    cases = {c["name"]: c for c in results["cases"]}
    return [check_target(t, cases) for t in results.get("targets", [])]


def fmt(value) -> str:
    """A cell: 3 significant digits; a bound as ``>= x`` (not reached / at least)."""
    if isinstance(value, str):
        return value
    got = as_bound(value)
    if got is None:
        return "" if value is None else str(value)
    kind, x = got
    text = f"{x:.3g}" if abs(x) < 1e5 else f"{x:.3e}"
    return (
        _SIGN[kind] + text + (" (not reached)" if kind == ">=" and isinstance(value, dict) else "")
    )


def markdown_table(rows: list[dict], columns: dict[str, str]) -> str:
    """A Markdown table (pandas) of ``rows`` with ``columns`` (key -> header), cells by
    :func:`fmt`."""
    df = pd.DataFrame([{h: fmt(r.get(k)) for k, h in columns.items()} for r in rows])
    return df.to_markdown(index=False)


def section_table(cases: list[dict], section: str) -> list[str]:
    """The Markdown parts of one section: its table, per-case detail rows and how it was run."""
    columns = {"name": "case", **COLUMNS[section]}
    rows, infos, details = [], [], []
    for c in cases:
        settings = {f"settings.{k}": v for k, v in c.get("settings", {}).items()}
        row = {"name": c["name"], **settings, **c.get("metrics", {})}
        problem = c.get("error") or c.get("skipped")
        if problem:
            first = next(iter(COLUMNS[section]))
            row[first] = ("error: " if "error" in c else "skipped: ") + problem
        rows.append(row)
        if c.get("info") and c["info"] not in infos:
            infos.append(c["info"])
        if c.get("rows"):
            cols = {k: k for k in c["rows"][0]}
            details += [f"{c['name']}:", markdown_table(c["rows"], cols)]
    parts = [f"## {TITLES.get(section, section)}", markdown_table(rows, columns), *details]
    return parts + ["How: " + "; ".join(infos) + "."] if infos else parts


def to_markdown(results: dict) -> str:
    """The whole report of a stored results dict: header, targets, one table per section."""
    m = results["machine"]
    load = m["loadavg"][0]
    parts = [
        f"# slicelib benchmark ({results['mode']} mode)",
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads); GPU: "
        f"{m.get('gpu') or 'none'}; torch {m['torch']}, MONAI {m.get('monai', '-')}, Python "
        f"{m['python']}; {m['date']}. Load average {load:.2f} at start, "
        f"{results['loadavg_end'][0]:.2f} at end; total {results['total_s']:.0f} s.",
    ]
    if load > 0.5 * m["cores"]:
        parts.append("**Measured on a loaded machine: timings are noisy and slow.**")
    if results.get("note"):
        parts.append(f"Note: {results['note']}")
    checked = check_targets(results)
    rows = [{**t, "goal": f"{t['op']} {t['goal']:g}",
             "value": "" if t["value"] is None else f"{_SIGN[t['bound']]}{t['value']:.3g}"}
            for t in checked]  # fmt: skip
    cols = dict(name="target", metric="metric", value="value", goal="goal", status="status")
    parts += ["## Targets (checked from the stored results)", markdown_table(rows, cols)]
    order = list(dict.fromkeys(c["section"] for c in results["cases"]))
    for section in order:
        parts += section_table([c for c in results["cases"] if c["section"] == section], section)
    return "\n\n".join(parts) + "\n"
