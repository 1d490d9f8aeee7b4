"""The model card's account of a fine-tune: its parent, what it added, and the two
compared on the same images."""

from __future__ import annotations

from shared.manifest import ManifestDraft, PairedComparison, SplitMetrics
from worker.publishing.card_text import ci, fmt, table


def _row(where: str, paired: PairedComparison) -> list[str]:
    return [where, str(paired.images), fmt(paired.first_balanced_accuracy),
            fmt(paired.second_balanced_accuracy), ci(paired.difference, paired.difference_ci),
            f"{paired.only_first_right} / {paired.only_second_right}",
            fmt(paired.mcnemar_p)]


def lineage_section(manifest: ManifestDraft) -> list[str]:
    """The section, or nothing for a version trained from its base weights."""
    lineage = manifest.lineage
    if lineage is None:
        return []
    added = "; ".join(f"{name}: " + ", ".join(f"{label} {n}" for label, n in counts.items())
                      for name, counts in lineage.added.items())
    replayed = (", ".join(f"{label} {n}" for label, n in lineage.replayed.items())
                if lineage.replayed else f"none ({lineage.parent_data or 'not asked'})")
    parent = lineage.parent_test or SplitMetrics(images=0)
    lines = ["## Lineage", "",
             f"Fine-tuned from version {lineage.parent} (trained on "
             f"{lineage.parent_dataset}) on {added}. Replayed from the parent's training "
             f"split: {replayed}. The parent's own test figures: balanced accuracy "
             f"{ci(parent.balanced_accuracy, parent.balanced_accuracy_ci)}, macro ROC-AUC "
             f"{fmt(parent.roc_auc)}.", ""]
    paired = manifest.promotion.paired if manifest.promotion else None
    if paired:
        lines += ["Both versions on the same images (balanced accuracy; difference with its "
                  "95% paired bootstrap interval; images only this version / only the "
                  "parent got right; McNemar's exact p):", "",
                  *table(["images of", "n", "this version", "parent", "difference",
                          "only this / only parent", "McNemar p"],
                         [_row(where, comparison) for where, comparison in paired.items()]),
                  ""]
    return lines
