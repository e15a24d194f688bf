"""Chapter 13 (what the students attend to and how they decide) and the additions to 02 and 07.

Each function returns Markdown assembled from the numbers passed in, like the rest of
`igkd.conclusions`; notebooks import this module directly (`from igkd.conclusions import inside`).
`conclusion` is chapter 13's closing paragraph; `attribution_methods` is added to chapter 02's,
`imagenet_maps` to chapter 07's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from igkd import stats
from igkd.conclusions._core import CHANCE_MARGIN, _names, _nan, _p, sig, signed, wilson

CHANCE = 10.0  # % for ten classes


def _untrained(accuracy: float | None, what: str) -> str:
    """A sentence when `accuracy` (%) is within CHANCE_MARGIN of chance, else ''."""
    if _nan(accuracy) or accuracy >= CHANCE + CHANCE_MARGIN:
        return ""
    return (
        f"{what} scores {sig(accuracy)} % on the test images here, within {sig(CHANCE_MARGIN)} pp of chance "
        f"({sig(CHANCE)} %): it has learned too little in this profile for its maps or decisions to "
        "say anything about the paper's."
    )


def _possessive(who: str) -> str:
    """ "students" -> "students'", "published students (from X)" -> "published students' (from X)"."""
    head, _, tail = who.partition(" (")
    return f"{head}'" + (f" ({tail}" if tail else "")


def _difference_words(result: Mapping[str, float], more: str, less: str, same: str) -> str:
    lo, hi = result["ci_low"], result["ci_high"]
    if _nan(lo) or _nan(hi) or lo == hi:
        return same
    return more if lo > 0 else less if hi < 0 else same


def _test(result: Mapping[str, float], unit: str = "") -> str:
    if _nan(result.get("p")) or result["ci_low"] == result["ci_high"]:
        return f"{signed(result['diff'])}{unit}; no scatter, so no test"
    return (
        f"{signed(result['diff'])}{unit}, 95 % CI {signed(result['ci_low'])} to "
        f"{signed(result['ci_high'])}, {result['test']} p = {_p(result['p'])}"
    )


def _safe_compare(a: Sequence[float], b: Sequence[float], paired: bool) -> dict | None:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    a, b = (
        (a[np.isfinite(a) & np.isfinite(b)], b[np.isfinite(a) & np.isfinite(b)])
        if paired
        else (
            a[np.isfinite(a)],
            b[np.isfinite(b)],
        )
    )
    if len(a) < 2 or len(b) < 2:
        return None
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return stats.compare(a, b, paired=paired)


# --- chapter 13: attention maps -------------------------------------------------------------------


def attention(
    similarity: Mapping[str, Sequence[float]],
    *,
    reference: str | None,
    layer: str,
    data: str,
    profile: str,
    teacher_accuracy: float | None = None,
    who: str = "students",
) -> str:
    """The students' attention maps against the teacher's (`who`: how to name the students, e.g.
    "published students"). `similarity`: student -> the cosine
    similarity of its map to the teacher's, image by image (the same images for every student);
    `reference` a student trained without AT (or None), against which each other student is
    tested (paired t over the images)."""
    sims = {k: np.asarray(v, dtype=float) for k, v in similarity.items() if len(v)}
    if not sims:
        return f"No student's attention maps were compared (profile `{profile}`)."
    n = len(next(iter(sims.values())))
    means = {k: float(np.nanmean(v)) for k, v in sims.items()}
    hi, lo = max(means, key=means.get), min(means, key=means.get)
    compared = [k for k in sims if k != reference]
    untrained = _untrained(teacher_accuracy, "The teacher")
    parts = [
        f"At the AT layer ({layer}), over {n:,} test images of {data} (profile `{profile}`), the "
        f"{_possessive(who)} attention maps have a mean cosine similarity to the teacher's of "
        + ", ".join(f"{sig(means[k])} ({k})" for k in compared)
        + (f"; most like the teacher's: {hi}, least: {lo}." if len(sims) > 1 else ".")
        + " The paper shows these maps as a figure and gives no number to compare with."
    ]
    if reference in sims and compared:
        closer, further, same = [], [], []
        details = []
        for k in compared:
            res = _safe_compare(sims[k], sims[reference], paired=True)
            if res is None:
                same.append(k)
                continue
            word = _difference_words(res, "closer", "further", "same")
            {"closer": closer, "further": further, "same": same}[word].append(k)
            details.append(f"{k} {_test(res)}")
        parts.append(
            f"Against {reference}, trained without attention transfer ({sig(means[reference])}), "
            f"the difference per image is {'; '.join(details) if details else 'not testable'}."
        )
        verdicts = []
        if untrained:
            parts.append(untrained)
            return " ".join(parts)
        if closer:
            verdicts.append(
                f"{_names(closer)} attend{'s' if len(closer) == 1 else ''} more like the teacher"
            )
        if further:
            verdicts.append(f"{_names(further)} less like it")
        if same:
            verdicts.append(f"{_names(same)} cannot be told from {reference} on these images")
        parts.append(
            "So " + "; ".join(verdicts) + ". With one model per method this describes these "
            "models; whether attention transfer does it needs repeated runs."
        )
    else:
        parts.append(
            "No student trained without attention transfer was compared, so there is no reference "
            "for how alike two maps are without AT (non-negative maps are never orthogonal)."
        )
    if untrained:
        parts.append(untrained)
    return " ".join(parts)


# --- chapter 13: decisions ------------------------------------------------------------------------


def decisions(
    rows: Mapping[str, Mapping[str, float]],
    distances: Mapping[str, Sequence[float]],
    *,
    class_name: str,
    temperature: float,
    definition: str,
    paper: Mapping[str, tuple[float, float]],
    teacher: str = "teacher",
    student: str = "KD_IG",
    data: str,
    profile: str,
    accuracies: Mapping[str, float] | None = None,
) -> str:
    """The teacher against the KD_IG student on one class. `rows`: model -> {"samples",
    "misclassification rate", "mean decision distance"}; `distances`: model -> each sample's
    decision distance (the same samples for every model); `paper`: model -> (rate, distance)."""
    if teacher not in rows or student not in rows:
        missing = [m for m in (teacher, student) if m not in rows]
        return f"The decision plots need {_names(missing)}, which {'was' if len(missing) == 1 else 'were'} not evaluated."
    n = int(rows[teacher]["samples"])
    reading = (
        "the true class's probability minus the strongest other class's (our reading: the paper "
        "does not define it)"
        if definition == "margin"
        else "the gap between the two largest probabilities (our second reading: the paper does not "
        "define it)"
    )
    parts = [
        f"On {n} {class_name} test images of {data} at T = {sig(temperature)} (profile `{profile}`),"
    ]
    for m in (teacher, student):
        r = rows[m]
        rate, dist = r["misclassification rate"], r["mean decision distance"]
        lo, hi = wilson(100 * (1 - rate), n) if not _nan(rate) else (math.nan, math.nan)
        ref = paper.get(m, (math.nan, math.nan)) if m in paper else None
        parts.append(
            f"{'the teacher' if m == teacher else 'the ' + m + ' student'} misclassifies "
            f"**{sig(rate)}** (95 % Wilson {sig(1 - hi / 100)} to {sig(1 - lo / 100)})"
            + (f", paper {sig(ref[0])}" if ref else "")
            + f", with a mean decision distance of **{sig(dist)}**"
            + (f" (paper {sig(ref[1])})" if ref else "")
            + (";" if m == teacher else ".")
        )
    parts.append(f"The decision distance is {reading}.")
    names = {teacher: "The teacher", student: f"The {student} student"}
    notes = [_untrained(a, names.get(m, m)) for m, a in (accuracies or {}).items()]
    if any(notes):
        return " ".join(parts + [s for s in notes if s])
    res = _safe_compare(distances.get(student, []), distances.get(teacher, []), paired=True)
    if student in paper and teacher in paper:
        claim = paper[student][1] - paper[teacher][1]
        if res is None:
            parts.append(
                f"The paper's student decides {signed(claim)} further from the boundary; too few "
                "samples here to test it."
            )
        else:
            v = _difference_words(res, "held", "reversed", "not settled")
            v = v if claim > 0 else {"held": "reversed", "reversed": "held"}.get(v, v)
            parts.append(
                f"{student} minus teacher, image by image: {_test(res)} (paper: {signed(claim)}); "
                f"the claim that the distilled student decides further from the boundary **{v}** "
                "here."
            )
    rate_t = rows[teacher]["misclassification rate"]
    rate_s = rows[student]["misclassification rate"]
    if not (_nan(rate_t) or _nan(rate_s)):
        k = round(abs(rate_t - rate_s) * n)
        (lo_t, hi_t), (lo_s, hi_s) = wilson(100 * rate_t, n), wilson(100 * rate_s, n)
        overlap = lo_t <= hi_s and lo_s <= hi_t
        parts.append(
            f"The misclassification rates differ by {k} image(s) of {n}; their 95 % Wilson "
            + (
                f"intervals overlap, so {n} images of one class cannot tell the two models apart "
                "on this."
                if overlap
                else "intervals do not overlap."
            )
        )
    return " ".join(parts)


def conclusion(attention_text: str, decisions_text: str) -> str:
    """Chapter 13's closing paragraph: the attention maps' part, then the decisions' (each from
    `attention` and `decisions`)."""
    return f"**Attention.** {attention_text}\n\n**Decisions.** {decisions_text}"


# --- chapter 02: attribution methods --------------------------------------------------------------


def attribution_methods(
    ms_per_image: Mapping[str, float],
    agreement: Mapping[str, float],
    *,
    images: int,
    device: str,
    threads: int,
    profile: str,
    ig: str = "IG (IntegratedGradients)",
    teacher_accuracy: float | None = None,
) -> str:
    """IG beside the other attribution methods: each one's time per image (ms, `ms_per_image`,
    method name -> ms, IG under `ig`) and the mean Spearman rho of its map with IG's
    (`agreement`, method name -> rho)."""
    if ig not in ms_per_image or len(ms_per_image) < 2:
        return (
            f"Too few attribution methods were timed to compare them with IG (profile `{profile}`)."
        )
    others = {k: v for k, v in ms_per_image.items() if k != ig}
    cheap, dear = min(others, key=others.get), max(others, key=others.get)
    parts = [
        f"On {images} test image(s), on {device} with {threads} thread(s) (profile `{profile}`), "
        f"IG took **{sig(ms_per_image[ig])} ms** per image through Captum; "
        + "; ".join(
            f"{k} {sig(v)} ms ({sig(v / ms_per_image[ig])} x IG)" for k, v in others.items()
        )
        + f". The cheapest is {cheap}, the dearest {dear}. These are wall-clock times of one call on "
        "a shared machine: their ratios, which follow the forward and backward passes each method "
        "makes, carry over to other machines better than the milliseconds."
    ]
    rhos = {k: float(v) for k, v in agreement.items() if not _nan(v)}
    note = _untrained(teacher_accuracy, "The teacher")
    if rhos:
        close, far = max(rhos, key=rhos.get), min(rhos, key=rhos.get)
        parts.append(
            "Ranked pixel by pixel against IG's map of the same image (Spearman rho, mean over the "
            "images): "
            + ", ".join(f"{k} {signed(v, 3)}" for k, v in rhos.items())
            + f"; the closest to IG is {close}, the furthest {far}."
            + (
                ""
                if note
                else " Every method ranks the pixels much as IG does (rho above 0.5 for all)."
                if min(rhos.values()) > 0.5
                else " The methods do not agree on which pixels matter: the overlay would look "
                "different with another attribution method."
            )
        )
    if note:
        parts.append(note)
    return " ".join(parts)


# --- chapter 07: IG maps on the ImageNet subset ---------------------------------------------------


def imagenet_maps(
    imagenet: Sequence[float],
    cifar: Sequence[float],
    *,
    share: float,
    n_steps: int,
    generated: bool,
    data: str,
    profile: str,
    teacher_right: int | None = None,
) -> str:
    """The teacher's IG maps on ImageNet subset images against CIFAR-10 test images of the same
    classes: `imagenet` and `cifar` hold each map's share of its mass in its top `share` pixels;
    `teacher_right`: how many of the ImageNet images the teacher classifies correctly."""
    a, b = np.asarray(imagenet, dtype=float), np.asarray(cifar, dtype=float)
    if not len(a) or not len(b):
        return "No IG maps were computed on the ImageNet images."
    head = (
        f"The teacher's IG maps ({n_steps} Gauss-Legendre step(s)) put on average **{sig(100 * np.nanmean(a))} %** "
        f"of their mass in their top {sig(100 * share)} % of pixels on {len(a)} "
        + ("generated images in the ImageNet layout" if generated else f"images of {data}")
        + f", against **{sig(100 * np.nanmean(b))} %** on {len(b)} CIFAR-10 test images of the same "
        f"classes (profile `{profile}`; spread evenly it would be {sig(100 * share)} %)."
    )
    if teacher_right is not None:
        head += f" The teacher classifies {teacher_right} of the {len(a)} ImageNet images measured correctly."
    parts = [head]
    if generated:
        parts.append(
            "These images are generated (CIFAR-10 test images resized), not ImageNet: the "
            "comparison only shows that the code runs."
        )
        return " ".join(parts)
    res = _safe_compare(a, b, paired=False)
    if res is None:
        parts.append("Too few maps to test the difference.")
    else:
        word = _difference_words(res, "more concentrated", "more diffuse", "not distinguishable")
        in_pp = {**res, **{k: 100 * res[k] for k in ("diff", "ci_low", "ci_high")}}
        parts.append(
            f"ImageNet minus CIFAR-10: {_test(in_pp, ' pp')}: "
            f"on these images the teacher's attributions are **{word}** on ImageNet"
            + (" than on CIFAR-10." if word != "not distinguishable" else " from CIFAR-10's.")
            + " A few images per class: a description of these maps, not of the domains."
        )
    if n_steps < 8:
        parts.append(
            f"At {n_steps} step(s) IG is a coarse approximation (the ci setting); the paper's 50 "
            "steps give smoother maps."
        )
    return " ".join(parts)
