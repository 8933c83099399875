"""Review verdicts on finished jobs."""

from __future__ import annotations

import math

from django.db import transaction

from ..audit import audit_record
from ..models import AuditEvent, DenoiseJob, Review
from .jobs import JobRequestError


def review_concerns(job: DenoiseJob) -> list[str]:
    """Why an Accept on this job needs a comment: slices flagged for structure in
    the residual, and out-of-distribution or modality warnings; empty if none."""
    concerns = []
    flagged = (job.metrics or {}).get("flagged_slices") or []
    if flagged:
        concerns.append(
            f"{len(flagged)} slice(s) flagged for structure in the residual"
        )
    # The engine's own warning about flagged slices says the same as the count.
    concerns.extend(
        str(w)
        for w in job.warnings or []
        if not str(w).startswith("residual shows structure")
    )
    return concerns


#: Most measurements one verdict may carry, and most fields each.
MAX_MEASUREMENTS = 20
_MAX_FIELDS = 32
_KINDS = ("rect", "ellipse", "length")


def clean_measurements(items: list) -> list[dict]:
    """Measurements as stored with a verdict: a list of at most 20 objects, each
    with a ``kind`` (rect, ellipse or length) and up to 32 fields whose values are
    finite numbers or short text.

    Raises:
        JobRequestError: naming the first bad item and why.
    """
    if not isinstance(items, list) or len(items) > MAX_MEASUREMENTS:
        raise JobRequestError(
            f"review: measurements must be a list of at most {MAX_MEASUREMENTS}"
        )
    cleaned = []
    for number, item in enumerate(items, start=1):
        where = f"review: measurement {number}"
        if not isinstance(item, dict) or item.get("kind") not in _KINDS:
            raise JobRequestError(f"{where}: needs a kind, one of {list(_KINDS)}")
        if len(item) > _MAX_FIELDS:
            raise JobRequestError(f"{where}: more than {_MAX_FIELDS} fields")
        for key, value in item.items():
            text = isinstance(value, str) and len(value) <= 64
            number_ok = (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and abs(value) < 2**53  # JSON's exact range; no overflow below
                and math.isfinite(value)
            )
            if not (isinstance(key, str) and len(key) <= 32 and (text or number_ok)):
                raise JobRequestError(
                    f"{where}: {key!r} must be a finite number or text of at most "
                    "64 characters"
                )
        cleaned.append(dict(item))
    return cleaned


def review_submit(
    *,
    job: DenoiseJob,
    reviewer,
    verdict: str,
    comment: str = "",
    strength: float = 1.0,
    measurements: list | None = None,
) -> Review:
    """Record a reviewer's verdict (accept / reject / needs_review) on a finished job.

    Args:
        job: a succeeded job; reviewing anything else is refused.
        reviewer: the user giving the verdict.
        verdict: a ``Review.Verdict`` value.
        comment: free text; required to accept a job with
            :func:`review_concerns`.
        strength: the blend alpha (0 = original, 1 = denoised) the reviewer chose.
        measurements: ROI statistics and lengths to keep with the verdict
            (:func:`clean_measurements`).
    """
    if job.status != DenoiseJob.Status.SUCCEEDED:
        raise JobRequestError(f"review: job {job.pk} is {job.status}, not succeeded")
    if verdict not in Review.Verdict.values:
        raise JobRequestError(
            f"review: verdict must be one of {Review.Verdict.values}, got {verdict!r}"
        )
    if not 0.0 <= strength <= 1.0:
        raise JobRequestError(f"review: strength must be within 0..1, got {strength}")
    measured = clean_measurements(measurements or [])
    concerns = review_concerns(job)
    if verdict == Review.Verdict.ACCEPT and concerns and not comment.strip():
        raise JobRequestError(
            f"review: accepting job {job.pk} needs a comment saying why: "
            + "; ".join(concerns)
        )
    with transaction.atomic():
        # A second verdict by the same reviewer changes theirs: both stay, and the
        # audit says which one this replaces.
        previous = (
            Review.objects.filter(job=job, reviewer=reviewer).order_by("-pk").first()
        )
        review = Review.objects.create(
            job=job,
            reviewer=reviewer,
            verdict=verdict,
            comment=comment,
            strength=strength,
            measurements=measured,
        )
        audit_record(
            action=AuditEvent.Action.REVIEW,
            actor=reviewer,
            target=job,
            study=job.series.study,
            extra_data={
                "verdict": verdict,
                "comment": comment,
                "strength": strength,
                "measurements": measured,
                "model": f"{job.model_name}:{job.model_version}",
                "weights_sha256": job.weights_sha256,
                # What the reviewer saw and, for an Accept, commented on.
                "concerns": concerns,
                "replaces": (
                    {"review": previous.pk, "verdict": previous.verdict}
                    if previous is not None
                    else None
                ),
            },
        )
    return review
