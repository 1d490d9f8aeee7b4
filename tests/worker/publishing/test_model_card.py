"""The model card: names that come from a dataset cannot break its tables."""

from __future__ import annotations

import re

from shared.manifest import ClassRates, ConfusionMatrix, Metrics, SplitMetrics
from tests.helpers.versions import draft
from worker.publishing.model_card import card_html, card_markdown


def test_class_names_with_pipes_and_newlines_stay_in_their_cells() -> None:
    classes = ("Covid|19", "Viral\nPneumonia", "Normal\\")
    rates = {label: ClassRates(support=3, sensitivity=0.5) for label in classes}
    test = SplitMetrics(images=9, accuracy=0.5, per_class=rates,
                        confusion_matrix=ConfusionMatrix(labels=list(classes),
                                                         counts=[[1, 1, 1]] * 3))
    markdown = card_markdown("v1", draft(classes=classes, metrics=Metrics(test=test)))
    html = card_html(markdown, "v1")
    for table in re.findall(r"<table>.*?</table>", html, flags=re.S):
        rows = re.findall(r"<tr>(.*?)</tr>", table, flags=re.S)
        widths = {len(re.findall(r"<t[hd][ >]", row)) for row in rows}
        assert len(widths) == 1, table  # every row as wide as the header
    assert "<td>Covid|19</td>" in html and "<td>Viral Pneumonia</td>" in html
    assert "<td>Normal\\</td>" in html
