"""A latency target read off a measured latency curve (:mod:`pqd.latency_curve`): which channel
ratio stage ``s`` prunes to. Pure functions over the curve's JSON, apart from the measurement, so
the stage's code does not depend on the runtimes that measured it (an edit there reruns the
curve job, not the training).
"""

from __future__ import annotations

from pqd.errors import PqdError


def target_keep(curve: dict, target: dict) -> float:
    """The latency fraction a target asks for: ``latency_keep`` itself, or ``latency_ms`` over the
    curve's unpruned latency (absolute: valid on the machine, and at the speed, that measured it)."""
    if "latency_keep" in target:
        return float(target["latency_keep"])
    return float(target["latency_ms"]) / curve["reference_ms"]


def monotone_keep(curve: dict) -> list[tuple[float, float]]:
    """The curve's ``(ratio, keep)`` points with ``keep`` fitted non-increasing in the ratio (isotonic
    regression, the reference pinned at 1.0). Measured points wander: a ResNet-56's 77%-MACs point
    timed 1.02-1.07 of the unpruned model and its 47% point 0.83-1.00 over three curves, so reading
    a raw curve let timing noise pick the ratio; removing channels does not make a model slower on
    the whole, and the fit pools neighbours that say otherwise into their mean."""
    from sklearn.isotonic import IsotonicRegression

    pts = sorted((p["ratio"], p["keep"]) for p in curve["points"])
    if not pts or pts[0][0] != 0:
        raise PqdError("the latency curve has no unpruned reference point; rerun its latency_curve job")
    ratios = [r for r, _ in pts]
    weights = [1e6] + [1.0] * (len(pts) - 1)  # the reference against itself is 1.0 by definition
    fit = IsotonicRegression(increasing=False).fit_transform(
        ratios, [1.0] + [k for _, k in pts[1:]], sample_weight=weights
    )
    return [(r, float(k)) for r, k in zip(ratios, fit)]


def ratio_for_latency(curve: dict, keep: float) -> tuple[float, float]:
    """The channel ratio whose pruned model keeps ``keep`` of the unpruned latency, by linear
    interpolation between the neighbouring points of the monotone fit (:func:`monotone_keep`) that
    bracket it, and the keep predicted there (``keep`` itself when bracketed). Fails with the fix when
    no point of the curve is that fast: pruning this backbone cannot reach the target in that runtime."""
    pts = monotone_keep(curve)
    for (r0, k0), (r1, k1) in zip(pts, pts[1:]):
        if k1 <= keep < k0:
            return r0 + (r1 - r0) * (k0 - keep) / (k0 - k1), keep
    if keep >= 1.0:
        return 0.0, 1.0
    ratio, fastest = min(pts, key=lambda p: p[1])
    raise PqdError(
        f"a latency of {keep:.2f} of the unpruned model cannot be reached by channel pruning in "
        f"{curve.get('runtime')} ({curve['form']}, {curve['threads']} threads): the fastest point measured "
        f"keeps {fastest:.2f} (ratio {ratio}, {fastest * curve['reference_ms']:.3g} ms); set "
        f"stages.s.latency_keep to {fastest:.2f} or more (latency_ms to {fastest * curve['reference_ms']:.3g} "
        "or more)"
    )
