"""`cxr evaluate`: score a version on another labelled folder and keep the report."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Column

from cxr_cli.errors import require_extras
from cxr_cli.models import chosen_version
from cxr_cli.output import answer_console, table
from cxr_cli.progress import ConsoleReporter
from cxr_cli.runtime import Verbose, load_settings, start_tensorflow
from cxr_cli.training import discover_folder

if TYPE_CHECKING:
    from shared.manifest import ExternalReport, PairedComparison


def _interval(values: list[float] | None) -> str:
    return f" (95% CI {values[0]:.3f}-{values[1]:.3f})" if values else ""


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _headline(report: ExternalReport) -> list[str]:
    metrics, data = report.metrics, report.dataset
    folders = ", ".join(f"{label} {count}" + (f" (as {data.class_mapping[label]})"
                        if data.class_mapping.get(label, label) != label else "")
                        for label, count in data.counts.items())
    lines = [f"version {report.version} on {data.name}: {metrics.images} images ({folders})",
             f"balanced accuracy {_rate(metrics.balanced_accuracy)}"
             f"{_interval(metrics.balanced_accuracy_ci)}, accuracy {_rate(metrics.accuracy)}"]
    gate = report.chest_xray_gate
    lines.append("the version has no chest-X-ray gate" if gate is None else
                 f"the chest-X-ray gate refused {gate.refused} of {gate.images} images "
                 "(scored all the same)")
    if report.distribution_shift is not None:
        shift = report.distribution_shift
        lines.append(f"{shift.flagged} of {shift.images} images flagged as unlike the "
                     "training images (distribution shift)")
    return lines


def print_summary(report: ExternalReport, stored: str) -> None:
    """The report's headline figures: the set, balanced accuracy with its interval, recall
    of each class in the set, the gate's refusals, and where the whole report is."""
    for line in _headline(report):
        typer.echo(line)
    console = answer_console()
    recalls = table(console, "Class", Column("Images", justify="right"),
                    Column("Recall", justify="right"), "95% CI")
    for label in report.sensitivity:
        rates = report.metrics.per_class[label]
        low_high = rates.sensitivity_ci
        recalls.add_row(label, str(rates.support), _rate(rates.sensitivity),
                        f"{low_high[0]:.3f}-{low_high[1]:.3f}" if low_high else "-")
    console.print(recalls)
    if report.comparison is not None:
        typer.echo(paired_line(report.comparison))
    typer.echo(f"report stored as {stored} (`--json` prints all of it)")


def paired_line(comparison: PairedComparison) -> str:
    """Two versions on the same images, in one line: the difference and its interval."""
    if comparison.difference is None or comparison.difference_ci is None:
        return f"{comparison.first} and {comparison.second}: no images to compare on"
    low, high = comparison.difference_ci
    p = "-" if comparison.mcnemar_p is None else f"{comparison.mcnemar_p:.3g}"
    return (f"{comparison.first} against {comparison.second} on the same "
            f"{comparison.images} images: balanced accuracy "
            f"{_rate(comparison.first_balanced_accuracy)} against "
            f"{_rate(comparison.second_balanced_accuracy)}, difference "
            f"{comparison.difference:+.3f} (95% paired interval {low:+.3f} to {high:+.3f}); "
            f"right only by the first {comparison.only_first_right}, only by the second "
            f"{comparison.only_second_right} (McNemar p {p})")


def evaluate(
    data: Annotated[Path, typer.Option(
        exists=True, file_okay=False, readable=True,
        help="A labelled folder (class folders; one class is enough), e.g. another "
             "hospital's.")],
    model: Annotated[str | None, typer.Option(
        help="The version to evaluate; the active one if omitted.")] = None,
    compare: Annotated[str | None, typer.Option(
        help="Another version ('active' or an id) scored on the same images: prints the "
             "paired difference of balanced accuracy with its interval.")] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the whole report as JSON instead of its summary.")] = False,
    verbose: Verbose = False,
) -> None:
    """Evaluate a version on a labelled folder, store the report beside the version (apart
    from its test results) and print its summary."""
    from shared.registry import open_registry

    require_extras("cxr evaluate", "worker")
    settings = load_settings()
    registry = open_registry(settings)
    version = chosen_version(registry, model, "--model")
    other = None if compare is None else chosen_version(registry, compare, "--compare")
    dataset = discover_folder(data, "--data", min_classes=1)
    start_tensorflow(verbose)
    from worker.evaluation.external import evaluate_external

    with ConsoleReporter() as reporter:
        report = evaluate_external(registry, version, dataset, data.resolve().name,
                                   settings.max_image_pixels, reporter, other)
    stored = registry.save_evaluation(version, report)
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
        typer.echo(f"stored as {stored}", err=True)
    else:
        print_summary(report, stored)
