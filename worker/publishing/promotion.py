"""The promotion decision: does a new version replace the active one, or wait as a
candidate?"""

from __future__ import annotations

from dataclasses import dataclass

from shared.config import PromotionMetric, Settings
from shared.errors import CxrError
from shared.loading import load_version
from shared.manifest import PairedComparison, Promotion, SplitMetrics
from shared.registry import ActivePointer, Registry
from worker.data.pipeline import Split, load_split_pixels
from worker.evaluation.scores import summarize


@dataclass(frozen=True)
class PromotionRule:
    """How a new version is judged: the request's ``activate`` mode and the
    ``CXR_PROMOTION_*`` settings."""

    mode: str
    metric: PromotionMetric
    margin: float

    @classmethod
    def from_settings(cls, mode: str, settings: Settings) -> PromotionRule:
        return cls(mode, settings.promotion_metric, settings.promotion_margin)


@dataclass(frozen=True)
class Challenger:
    """A new version as the decision sees it: its test split and classes, its test metrics,
    and why it is no better than chance (None when it is, or when that is not asked)."""

    test: Split
    classes: list[str]
    metrics: SplitMetrics | None
    chance: str | None = None


def score_version_on(registry: Registry, version: str, split: Split, classes: list[str],
                     metric: PromotionMetric, max_pixels: int) -> float | None:
    """The metric of a published version on another version's test split; None if the two
    versions do not classify the same labels."""
    loaded = load_version(registry, version)
    if loaded.classes != classes:
        return None
    pixels = load_split_pixels(split, loaded.image_size, max_pixels, loaded.options)
    return summarize(split.labels, loaded.score(pixels).probabilities, classes).score(metric)


# Printed after "activated:" (CLI) or "activated (...)" (page, card): it must not read as
# a reason for not activating, as "no active version yet" did.
FIRST_VERSION = "it is the first version, with no active version to compare it with"


def decide(mode: str, metric: PromotionMetric, margin: float, new: float | None,
           active: ActivePointer | None, active_score: float | None,
           comparable: bool = True, chance: str | None = None) -> Promotion:
    """The decision and its reason, as recorded in the manifest. ``chance`` says why the
    new version is no better than chance, when it is not."""
    activated, reason = _verdict(mode, metric, margin, new, active, active_score, comparable,
                                 chance)
    return Promotion(mode=mode, metric=metric, margin=margin, new=new,
                     active_version=active.version if active else None, active=active_score,
                     activated=activated, reason=reason)


def _verdict(mode: str, metric: str, margin: float, new: float | None,
             active: ActivePointer | None, active_score: float | None, comparable: bool,
             chance: str | None) -> tuple[bool, str]:
    if mode == "always":
        return True, "requested: activate always"
    if mode == "never":
        return False, "requested: activate never (candidate)"
    if chance is not None:
        return False, f"{chance}; kept as a candidate"
    if active is None:
        return True, FIRST_VERSION
    if not comparable:
        return False, (f"the active version {active.version} has other classes or could not "
                       "be scored; kept as a candidate: activate it by hand")
    if new is None or active_score is None:
        return False, f"{metric} undefined on the test split; kept as a candidate"
    if new + margin >= active_score:
        return True, (f"{metric} {new:.4f} is not worse than the active version's "
                      f"{active_score:.4f} (margin {margin})")
    return False, (f"{metric} {new:.4f} is worse than the active version's {active_score:.4f} "
                   f"by more than {margin}; kept as a candidate")


def decide_promotion(registry: Registry, rule: PromotionRule, new: Challenger,
                     max_pixels: int) -> Promotion:
    """Score the active version on the new test split when it matters, then decide."""
    active = registry.active()
    mode, metric, margin = rule.mode, rule.metric, rule.margin
    score = new.metrics.score(metric) if new.metrics else None
    if mode != "if_better" or active is None or new.chance is not None:
        return decide(mode, metric, margin, score, active, None, chance=new.chance)
    try:
        active_score = score_version_on(registry, active.version, new.test, new.classes,
                                        metric, max_pixels)
    except CxrError:
        return decide(mode, metric, margin, score, active, None, comparable=False)
    return decide(mode, metric, margin, score, active, active_score,
                  comparable=active_score is not None)


SITE, PARENT_TEST = "site test split", "parent's test split"


def _interval(comparison: PairedComparison) -> str:
    low, high = comparison.difference_ci or (float("nan"), float("nan"))
    return (f"balanced accuracy {comparison.difference:+.3f} against {comparison.second} on "
            f"the {comparison.images} images of the {{where}} (95% paired interval "
            f"{low:+.3f} to {high:+.3f})")


def decide_fine_tune(mode: str, margin: float, site: PairedComparison,
                     parent_test: PairedComparison | None, parent_data: str | None = None,
                     chance: str | None = None) -> Promotion:
    """A fine-tune against its parent on the same images: with "if_better", activated when
    the paired interval of the difference lies above zero on the site's test split and above
    -``margin`` on the parent's own test split."""
    paired = {SITE: site, **({PARENT_TEST: parent_test} if parent_test else {})}
    record = {"mode": mode, "metric": "balanced_accuracy", "margin": margin,
              "new": site.first_balanced_accuracy, "active_version": site.second,
              "active": site.second_balanced_accuracy, "paired": paired}
    if mode != "if_better":
        verdict = decide(mode, "balanced_accuracy", margin, None, None, None)
        return Promotion(**record, activated=verdict.activated, reason=verdict.reason)
    if chance is not None:
        return Promotion(**record, activated=False, reason=f"{chance}; kept as a candidate")
    activated, reason = _fine_tune_verdict(margin, site, parent_test, parent_data)
    return Promotion(**record, activated=activated, reason=reason)


def _fine_tune_verdict(margin: float, site: PairedComparison,
                       parent_test: PairedComparison | None,
                       parent_data: str | None) -> tuple[bool, str]:
    if site.difference_ci is None or site.difference is None:
        return False, "no site test images to compare on; kept as a candidate"
    on_site = _interval(site).format(where=SITE)
    if site.difference_ci[0] <= 0:
        return False, f"not shown better on the site: {on_site}; kept as a candidate"
    if parent_test is None or parent_test.difference_ci is None:
        return False, (f"better on the site ({on_site}), but not compared on the parent's "
                       f"own films ({parent_data or 'none'}); kept as a candidate")
    on_parent = _interval(parent_test).format(where=PARENT_TEST)
    if parent_test.difference_ci[0] < -margin:
        return False, (f"better on the site ({on_site}), but may be worse than the parent by "
                       f"more than {margin} on its own films ({on_parent}); kept as a "
                       "candidate")
    return True, f"better on the site ({on_site}) and not worse on the parent's ({on_parent})"
