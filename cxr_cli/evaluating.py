"""`cxr evaluate`: score a version on another labelled folder and keep the report."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Column, Table

from cxr_cli.errors import require_extras
from cxr_cli.models import ModelOption, chosen_version
from cxr_cli.output import answer_console, table
from cxr_cli.progress import ConsoleReporter
from cxr_cli.runtime import Verbose, load_settings, start_tensorflow
from cxr_cli.training import discover_folder

if TYPE_CHECKING:
    from shared.manifest import ExternalReport, GateCount, PairedComparison
    from shared.ml.reliability import ReliableSubset


def _interval(values: list[float] | None) -> str:
    return f" (95% CI {values[0]:.3f}-{values[1]:.3f})" if values else ""


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _share(part: int, whole: int) -> str:
    return f"{part} ({part / whole:.0%})" if whole else str(part)


def gate_line(gate: GateCount | None) -> str:
    """What the chest-radiograph check would have done with the set, in plain words."""
    if gate is None:
        return "this version has no check that an image is a chest radiograph"
    if gate.refused == 0:
        return (f"all {gate.images} images looked like chest radiographs to this version "
                "(the service would refuse none)")
    return (f"{gate.refused} of {gate.images} images did not look like chest radiographs to "
            "this version and would be refused by the service; they are scored here all "
            "the same")


def reliable_line(subset: ReliableSubset | None) -> str:
    """How many answers were marked reliable (the coverage) and how those did."""
    if subset is None:
        return "this version does not mark its answers reliable or not"
    kept = round(subset.coverage * subset.images)
    return (f"answers marked reliable: {kept} of {subset.images} ({subset.coverage:.0%}, the "
            f"coverage); on those alone, balanced accuracy {_rate(subset.balanced_accuracy)}, "
            f"accuracy {_rate(subset.accuracy)}")


def _headline(report: ExternalReport) -> list[str]:
    metrics, data = report.metrics, report.dataset
    folders = ", ".join(f"{label} {count}" + (f" (as {data.class_mapping[label]})"
                        if data.class_mapping.get(label, label) != label else "")
                        for label, count in data.counts.items())
    lines = [f"version {report.version} on {data.name}: {metrics.images} images ({folders})",
             f"all answers: balanced accuracy {_rate(metrics.balanced_accuracy)}"
             f"{_interval(metrics.balanced_accuracy_ci)}, accuracy {_rate(metrics.accuracy)}",
             reliable_line(report.reliability), gate_line(report.chest_xray_gate)]
    if report.distribution_shift is not None:
        shift = report.distribution_shift
        lines.append(f"{shift.flagged} of {shift.images} images flagged as unlike the "
                     "training images (distribution shift)")
    return lines


def _recalls(report: ExternalReport, console: Console) -> Table:
    """Recall of each class in the set on all answers, and on the reliable ones alone."""
    shown = table(console, "Class", Column("Images", justify="right"),
                  Column("Recall, all", justify="right"), Column("95% CI", no_wrap=True),
                  Column("Reliable", justify="right", no_wrap=True),
                  Column("Recall, reliable", justify="right"))
    reliable = report.reliability.per_class if report.reliability else {}
    for label in report.sensitivity:
        rates = report.metrics.per_class[label]
        low_high = rates.sensitivity_ci
        mine = reliable.get(label)
        shown.add_row(label, str(rates.support), _rate(rates.sensitivity),
                      f"{low_high[0]:.3f}-{low_high[1]:.3f}" if low_high else "-",
                      _share(mine.reliable, mine.images) if mine else "-",
                      _rate(mine.reliable_recall) if mine else "-")
    return shown


def print_summary(report: ExternalReport, stored: str) -> None:
    """The report's headline figures: the set, balanced accuracy with its interval, how many
    answers were marked reliable and how they did, the radiograph check, each class's recall
    on all answers and on the reliable ones, and where the whole report is."""
    for line in _headline(report):
        typer.echo(line)
    console = answer_console()
    console.print(_recalls(report, console))
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
    model: ModelOption = None,
    compare: Annotated[str | None, typer.Option(
        metavar="VERSION",
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
