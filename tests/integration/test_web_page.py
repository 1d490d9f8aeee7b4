"""The web page in a real browser (headless Chromium) against a real API and worker on Redis.

Playwright drives Debian's Chromium (`apt-get install chromium`; `playwright install` is not
needed). Every request the page makes to anywhere but the service is refused, so the page is
shown to work offline. Screenshots of each section are kept under $CXR_TEST_ARTIFACTS (or the
test's tmp_path), never in the repository. The tests share one service, started with the
versions they need; each one activates its own first and opens a page of its own.
"""

from __future__ import annotations

import base64
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shared.registry.local import LocalRegistry
from shared.training_params import TrainingParams
from tests.helpers.dicom import gray_of, make_dicom
from tests.helpers.env import (
    ADMIN_KEY,
    LABELER_KEY,
    READER_KEY,
    REQUIRE_SERVICES,
    sample_files,
)
from tests.helpers.http import dataset_zip
from tests.helpers.services import Service, start_service
from tests.helpers.versions import external_report, publish_random, zip_bytes

try:
    from playwright.sync_api import Browser, Locator, Page, Route, expect, sync_playwright
except ImportError:  # the dev extra is not installed
    sync_playwright = None

# One pytest-xdist worker runs them all, so that they share one service, when the suite
# runs with --dist loadgroup (with --dist load each worker that gets one starts its own).
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("web_page")]

CHROMIUM = Path(os.environ.get("CXR_TEST_CHROMIUM", "/usr/bin/chromium"))
SLOW = 60_000  # ms: a first prediction loads the model; a job starts a training process


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if sync_playwright is None:
        missing = "playwright is not installed (it is in the dev extra)"
    elif not CHROMIUM.is_file():
        missing = f"no Chromium at {CHROMIUM} (apt-get install chromium, or CXR_TEST_CHROMIUM)"
    else:
        missing = ""
    if missing:
        if REQUIRE_SERVICES:
            pytest.fail(missing)
        pytest.skip(missing)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield launched
        launched.close()


@pytest.fixture
def artifacts(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    root = os.environ.get("CXR_TEST_ARTIFACTS")
    folder = (Path(root) if root else tmp_path / "artifacts") / "web_page" / request.node.name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# Activated at its publication because nothing was active: a reason about that moment only.
FIRST_REASON = "it is the first version, with no active version to compare it with"
FIRST_PROMOTION = {"mode": "if_better", "metric": "balanced_accuracy", "margin": 0.0,
                   "activated": True, "reason": FIRST_REASON}
# 15 test images at chance, as a tiny training gives: the interval is wide and includes it.
AT_CHANCE_METRICS = {"test": {"images": 15, "balanced_accuracy": 0.33,
                              "balanced_accuracy_ci": [0.13, 0.6]}}
# A proxy nobody listens on: downloads fail at once, as on a machine offline.
NOWHERE = "http://127.0.0.1:9"


@dataclass(frozen=True)
class Site:
    """The module's service and the random-weight versions (classes a, b, c) it started with:
    ``reliable``, with nothing recorded against it, answers findings; ``at_chance`` knows it
    is no better than chance and has a chest-radiograph gate; ``unrecorded`` was published
    before that record, so only its test interval says it is at chance, and its temperature
    ended at the fit's upper bound."""

    service: Service
    reliable: str
    at_chance: str
    unrecorded: str

    def serve(self, version: str) -> None:
        """Activate ``version`` and wait until the API answers with it: each test starts
        from the version it needs, whatever the tests before it activated. Confirmed: two
        of them are not shown to be better than chance."""
        with self.service.client() as client:
            activated = client.post(f"/models/{version}/activate", params={"force": "true"})
            assert activated.status_code == 200, activated.text
        served(self.service, version)


def served(service: Service, version: str) -> None:
    """Until the API answers with ``version`` (it loads the active one in the background)."""
    with service.client() as client:
        deadline = time.monotonic() + 60
        while client.get("/readyz").json().get("model_version") != version:
            assert time.monotonic() < deadline, service.logs()
            time.sleep(0.3)


def chest_gate(radiography_root: Path) -> bytes:
    """A chest-radiograph gate fitted on real films, as a version's file."""
    from shared.ml.preprocessing import load_pixels
    from worker.evaluation.gate_fitting import fit_gate

    films = [load_pixels(p.read_bytes(), 32)[..., 0]
             for paths in sample_files(radiography_root, 40).values() for p in paths]
    return fit_gate(films[::2], films[1::2], seed=0).to_bytes()


# How the answers marked reliable did on a set, per class too (keyed by the true class).
RELIABLE_FIGURES = {
    "images": 15, "coverage": 0.4, "accuracy": 0.5, "balanced_accuracy": 0.45,
    "accuracy_all": 0.33, "balanced_accuracy_all": 0.34,
    "per_class": {"a": {"images": 5, "reliable": 4, "recall": 0.6, "reliable_recall": 0.75},
                  "b": {"images": 5, "reliable": 2, "recall": 0.2, "reliable_recall": 0.5},
                  "c": {"images": 5, "reliable": 0, "recall": 0.2, "reliable_recall": None}}}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, module_redis_url: str,
         radiography_root: Path) -> Iterator[Site]:
    from shared.ml.reliability import ReliabilityRecord, ReliableSubset
    from shared.registry.files import GATE_FILE

    root = tmp_path_factory.mktemp("web_page")
    registry = LocalRegistry(root / "models")
    reliable = ReliableSubset.model_validate(RELIABLE_FIGURES)
    record = ReliabilityRecord(confidence_threshold=0.0, confidence_coverage=0.95,
                               chance=1 / 3, balanced_accuracy_ci=[0.2, 0.5],
                               better_than_chance=False, test=reliable)
    site_versions = {
        "reliable": publish_random(registry, seed=1, extra={"promotion": FIRST_PROMOTION}),
        "at_chance": publish_random(registry, seed=2, files={
            GATE_FILE: chest_gate(radiography_root)}, extra={
            "reliability": record.model_dump(), "metrics": AT_CHANCE_METRICS}),
        "unrecorded": publish_random(registry, seed=3, extra={
            "metrics": AT_CHANCE_METRICS,
            "calibration": {"temperature": 19.9999, "at_bound": "upper"}}),
    }
    registry.activate(site_versions["reliable"])
    registry.save_evaluation(site_versions["at_chance"], external_report(
        site_versions["at_chance"]).model_copy(update={"reliability": reliable.model_copy(
            update={"images": 30, "coverage": 0.86})}))
    # Offline, with nothing in Keras' cache: an ImageNet job fails for want of weights.
    offline = {"KERAS_HOME": str(root / "keras"), "HTTP_PROXY": NOWHERE, "HTTPS_PROXY": NOWHERE}
    service = start_service(root, module_redis_url, extra_env=offline)
    yield Site(service, **site_versions)
    service.stop()


def open_page(browser: Browser, service: Service, key: str | None) -> tuple[Page, list[str]]:
    """The page with ``key`` in its key field; what went wrong in it is collected."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    # Offline: anything not from the service itself is refused.
    context.route(re.compile(r"^(?!" + re.escape(service.url) + r"[/?#]|data:|blob:)"),
                  lambda route: route.abort())
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    page.goto(service.url + "/")
    expect(page.locator("h1")).to_contain_text("cxr-service")
    if key:
        page.get_by_label("API key", exact=True).fill(key)
    return page, problems


def expected_console(problems: list[str]) -> list[str]:
    # Chromium logs every non-2xx answer of fetch(); the tests provoke some on purpose
    # (409: activating a version not shown to beat chance asks for a confirmation).
    return [p for p in problems if not re.search(r"status of (401|403|400|404|409|422)", p)]


def drop_file(page: Page, name: str, data: bytes, mime: str) -> None:
    """Drag and drop ``data`` onto the drop zone, as a person would."""
    drop_files(page, [(name, data, mime)])


def drop_files(page: Page, files: list[tuple[str, bytes, str]]) -> None:
    """Drag and drop several files (name, data, type) onto the drop zone at once."""
    page.locator("#drop-zone").evaluate(
        """(zone, files) => {
            const transfer = new DataTransfer();
            for (const [name, b64, mime] of files) {
                const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                transfer.items.add(new File([bytes], name, { type: mime }));
            }
            zone.dispatchEvent(new DragEvent("dragover", { dataTransfer: transfer, bubbles: true,
                                                          cancelable: true }));
            zone.dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true,
                                                      cancelable: true }));
        }""",
        [[name, base64.b64encode(data).decode(), mime] for name, data, mime in files])


def answer_from(page: Page, version: str, timeout_s: float = 60) -> None:
    """Predict again until the answer comes from ``version`` (the API reloads in the
    background)."""
    for _ in range(int(timeout_s)):
        page.get_by_role("button", name="Predict again").click()
        expect(page.locator("#predict-status")).to_contain_text("from model version",
                                                                timeout=SLOW)
        if page.locator("#answer-version").inner_text() == version:
            return
        page.wait_for_timeout(1000)
    raise AssertionError(f"the page never showed an answer from {version}")


def check_heat_map(page: Page, explanation: dict[str, Any] | None) -> bool:
    """Show the heat map with the keyboard if the service explains: beside the X-ray, which
    stays, with its colour scale, and under it the layer and the grid it was computed on
    (a coarse grid drawn smooth looks more precise than it is). Say if it did."""
    toggle = page.get_by_label("Show heat map")
    preview, heat_map = page.locator("#preview"), page.locator("#heatmap")
    if not toggle.is_enabled():
        expect(page.locator("#heatmap-help")).to_contain_text("no heat map")
        return False
    gray = preview.get_attribute("src")
    assert gray and gray.startswith("data:image/png;base64,")
    expect(heat_map).to_be_hidden()
    toggle.focus()
    page.keyboard.press("Space")
    expect(toggle).to_be_checked()
    expect(heat_map).to_be_visible()
    expect(heat_map).to_have_attribute("alt", re.compile("Heat map"))
    expect(preview).to_be_visible()
    expect(preview).to_have_attribute("src", gray)
    x_ray, heat = preview.bounding_box(), heat_map.bounding_box()
    assert x_ray and heat and heat["x"] >= x_ray["x"] + x_ray["width"], (x_ray, heat)
    assert heat["y"] == pytest.approx(x_ray["y"], abs=1)
    assert heat["width"] == pytest.approx(x_ray["width"], abs=1)  # the same size
    expect(page.get_by_role("img", name=re.compile("^Colour scale"))).to_be_visible()
    expect(page.locator("#heatmap-view .scale-labels")).to_have_text(
        re.compile(r"^0: low attention\s+1: high attention$"))
    assert explanation
    grid = explanation["grid"]
    rows, cols = explanation.get("grid_shape") or [len(grid), len(grid[0])]
    expect(page.locator("#heatmap-caption")).to_have_text(
        f"Heat map: {explanation['layer']}, {rows}x{cols} grid, for {explanation['class_name']}")
    expect(page.locator("#heatmap-grid")).to_contain_text(
        f"known for {rows * cols} blocks of the image only")
    return True


def test_predict_a_real_x_ray_and_see_every_class_and_the_heat_map_beside_it(
    site: Site, browser: Browser, radiography_root: Path, artifacts: Path, tmp_path: Path,
) -> None:
    service, version = site.service, site.reliable
    site.serve(version)
    page, problems = open_page(browser, service, key=None)  # predicting needs no key
    expect(page.locator(f'#models-body tr[data-version="{version}"]')).to_be_visible()
    button = page.locator("#predict-button")
    expect(button).to_have_text("Predict")  # nothing to predict again yet

    image = sample_files(radiography_root, 1)["COVID"][0]
    with page.expect_response(re.compile(r"/predict\?explain=true$"), timeout=SLOW) as answered:
        page.get_by_label("Chest X-ray: PNG, JPEG or DICOM (.dcm)").set_input_files(image)
    expect(page.locator("#preview")).to_have_attribute("src", re.compile("^(blob|data):"))
    expect(page.locator("#predict-status")).to_contain_text("from model version", timeout=SLOW)
    expect(button).to_have_text("Predict again")
    label = page.locator("#label-line strong#predicted-label").inner_text()  # a finding
    assert label in {"a", "b", "c"}
    # one labelled bar per class, with its percentage as text
    for name in ("a", "b", "c"):
        expect(page.get_by_role("meter", name=name)).to_be_visible()
    expect(page.locator("#probabilities li")).to_have_count(3)
    assert all(re.fullmatch(r"\d+\.\d%", t)
               for t in page.locator("#probabilities .pct").all_inner_texts())
    expect(page.locator("#answer-version")).to_have_text(version)
    explained = check_heat_map(page, answered.value.json().get("explanation"))
    page.locator("#predict").screenshot(path=artifacts / "predict.png")

    # A DICOM, dropped on the page: no preview before the answer, the model's view after it
    # when the service explains.
    dicom = make_dicom(gray_of(sample_files(radiography_root, 1)["Normal"][0].read_bytes()), 8)
    drop_file(page, "chest.dcm", dicom, "application/dicom")
    expect(page.locator("#predict-status")).to_contain_text("from model version", timeout=SLOW)
    if explained:
        expect(page.locator("#preview")).to_be_visible()
    else:
        expect(page.locator("#preview-note")).to_contain_text("DICOM")
    page.locator("#predict").screenshot(path=artifacts / "predict-dicom.png")

    # Not an image: the API's error in words, its code small, never raw JSON.
    drop_file(page, "notes.png", b"hello", "image/png")
    status = page.locator("#predict-status")
    expect(status).to_contain_text("Error:")
    expect(status.locator(".code")).to_have_text("(invalid_image)")
    assert "{" not in status.inner_text()

    # Several files: one request without heat maps, a row for each in the order chosen, and
    # the bad one fails alone.
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"hello")
    films = sample_files(radiography_root, 1)
    chosen = [films["COVID"][0], bad, films["Normal"][0]]
    with page.expect_request(re.compile(r"/predict$")):
        page.get_by_label("Chest X-ray: PNG, JPEG or DICOM (.dcm)").set_input_files(chosen)
    rows = page.locator("#batch-body tr")
    expect(rows).to_have_count(3, timeout=SLOW)
    expect(rows.locator("th")).to_have_text([path.name for path in chosen])
    for row in (rows.nth(0), rows.nth(2)):
        assert row.locator("td strong").inner_text() in {"a", "b", "c"}  # reliable: bold
        expect(row.locator("td.num")).to_have_text(re.compile(r"^\d+\.\d%$"))
    expect(rows.nth(1)).to_contain_text("Error: Not a readable")
    expect(rows.nth(1).locator(".code")).to_have_text("(invalid_image)")
    expect(status).to_contain_text(f"2 of 3 images answered by model version {version}")
    expect(page.locator("#predict-result")).to_be_hidden()
    page.locator("#predict").screenshot(path=artifacts / "predict-several.png")
    drop_files(page, [("chest.dcm", dicom, "application/dicom"),
                      ("normal.png", films["Normal"][0].read_bytes(), "image/png")])
    expect(rows.locator("th")).to_have_text(["chest.dcm", "normal.png"], timeout=SLOW)
    expect(rows.locator("td strong")).to_have_count(2)
    page.screenshot(path=artifacts / "page.png", full_page=True)
    assert expected_console(problems) == []


def with_shift(score: float, threshold: float) -> Callable[[Route], None]:
    """The service's answer with a shift score added, flagged as the service flags it: a
    version with a shift reference (the random versions here have none)."""
    def handle(route: Route) -> None:
        response = route.fetch()
        if response.status != 200:
            route.fulfill(response=response)
            return
        body = response.json()
        body["distribution_shift"] = {"score": score, "threshold": threshold,
                                      "flagged": score > threshold}
        route.fulfill(response=response, json=body)
    return handle


def test_answers_of_a_version_at_chance_are_not_reliable_and_its_numbers_say_why(
    site: Site, browser: Browser, radiography_root: Path, artifacts: Path,
) -> None:
    """A version that knows it is no better than chance (a random one, recorded so) and has
    a chest-radiograph gate fitted on real films: its answers are not reliable (never "No
    finding", a normal study to a radiologist), an unflagged shift score is no reassurance,
    and a photograph is refused. Its details show how its answers marked reliable did. A
    version published before that record is judged by its test interval alone."""
    import io

    from PIL import Image
    from skimage import data as samples

    site.serve(site.at_chance)
    page, problems = open_page(browser, site.service, key=None)
    # Dropped, not chosen: Chromium hands a route no body of a file read from disk.
    page.route(re.compile(r"/predict\?explain=true$"), with_shift(1.0, 3.0))
    film = sample_files(radiography_root, 1)["Normal"][0].read_bytes()
    drop_file(page, "normal.png", film, "image/png")
    status = page.locator("#predict-status")
    expect(status).to_contain_text("No reliable answer", timeout=SLOW)
    expect(page.locator("#label-line")).to_have_text(re.compile(
        r"^No reliable answer\. Most probable class: [abc]$"))
    expect(page.locator("#answer")).not_to_contain_text("No finding")
    expect(page.locator("#label-line strong")).to_have_count(0)  # the label is not bold
    expect(page.locator("#unreliable")).to_contain_text("no better than chance")
    expect(page.locator("#probabilities li")).to_have_count(3)  # still visible
    expect(page.locator("#probabilities li.predicted")).to_have_count(0)  # none stands out
    shift = page.locator("#shift")
    expect(shift).to_contain_text("does not make this answer reliable")
    expect(shift).to_contain_text("shift score 1.00, below the threshold 3.00")
    expect(shift).not_to_contain_text("Similar to the training images")
    page.locator("#predict").screenshot(path=artifacts / "unreliable.png")
    # A flagged score a hair above its threshold never prints equal to it.
    page.unroute(re.compile(r"/predict\?explain=true$"))
    page.route(re.compile(r"/predict\?explain=true$"), with_shift(1.5031, 1.4969))
    drop_file(page, "normal.png", film, "image/png")
    expect(shift).to_contain_text("shift score 1.503, above the threshold 1.497", timeout=SLOW)
    expect(shift).to_contain_text("Unusual image")
    page.unroute(re.compile(r"/predict\?explain=true$"))

    # Its numbers in Models: the test size, the interval and chance beside each other.
    row = page.locator(f'#models-body tr[data-version="{site.at_chance}"]')
    expect(row).to_contain_text("No better than chance")
    expect(row.locator(".includes-chance")).to_have_text(
        "95% interval 20.0%–50.0%, includes chance")
    expect(row).to_contain_text("chance 33.3%")
    expect(row.locator(".test-size")).to_have_text("15 test images")
    check_reliable_figures(page, row)

    # In the table of several answers, no label is a finding either.
    films = sample_files(radiography_root, 2)["Normal"]
    page.get_by_label("Chest X-ray: PNG, JPEG or DICOM (.dcm)").set_input_files(films)
    rows = page.locator("#batch-body tr")
    expect(rows.locator(".unreliable-label")).to_have_count(2, timeout=SLOW)
    expect(rows.locator("strong")).to_have_count(0)
    expect(rows.nth(0)).to_contain_text("Not reliable: ")
    expect(rows.nth(1)).to_contain_text("no better than chance")

    buffer = io.BytesIO()
    Image.fromarray(samples.camera()).save(buffer, format="PNG")
    drop_file(page, "camera.png", buffer.getvalue(), "image/png")
    expect(status.locator(".code")).to_have_text("(not_a_chest_xray)", timeout=SLOW)
    expect(status).to_contain_text("does not look like a chest radiograph")
    expect(page.locator("#answer")).to_be_hidden()

    # A version without the record, whose service calls its answers reliable: the page
    # reads its interval, and its temperature pinned at the fit's upper bound.
    site.serve(site.unrecorded)
    drop_file(page, "normal.png", film, "image/png")
    expect(page.locator("#answer-version")).to_have_text(site.unrecorded, timeout=SLOW)
    expect(page.locator("#label-line")).to_contain_text("No reliable answer. Most probable class:")
    expect(page.locator("#label-line strong")).to_have_count(0)
    expect(page.locator("#unreliable")).to_contain_text("no better than chance")
    expect(page.locator("#calibration-note")).to_contain_text(
        "upper bound of its fit: this version's probabilities are not calibrated")
    row = page.locator(f'#models-body tr[data-version="{site.unrecorded}"]')
    expect(row).to_contain_text("Not calibrated")
    expect(row.locator(".includes-chance")).to_have_text(
        "95% interval 13.0%–60.0%, includes chance")
    page.locator("#predict").screenshot(path=artifacts / "unrecorded.png")
    assert expected_console(problems) == []


def check_reliable_figures(page: Page, row: Locator) -> None:
    """The version's details: coverage, then the reliable answers' figures beside all of
    them, on its test split and on another hospital's set, and per class."""
    row.get_by_role("button", name="Details").click()
    details = page.locator("#models-body tr.details:not([hidden])")
    overall = details.get_by_role("table", name=re.compile("^Marked reliable: the share"))
    expect(overall.locator("thead th")).to_have_text([
        "Set", "Images", "Marked reliable", "Accuracy, reliable", "Accuracy, all",
        "Balanced accuracy, reliable", "Balanced accuracy, all"])
    expect(overall.locator("tbody tr")).to_have_count(2)
    expect(overall.locator("tbody tr").nth(0)).to_have_text(re.compile(
        r"^Its test split\s*15\s*40\.0%\s*50\.0%\s*33\.0%\s*45\.0%\s*34\.0%$"))
    expect(overall.locator("tbody tr").nth(1)).to_have_text(re.compile(
        r"^other-hospital \(evaluated 2026-01-02\)\s*30\s*86\.0%"))
    classes = details.get_by_role("table", name="Per class on Its test split: recall on the "
                                  "answers marked reliable and on all of them.")
    expect(classes.locator("tbody th")).to_have_text(["a", "b", "c"])
    expect(classes.locator("tbody tr").nth(0).locator("td")).to_have_text(
        ["5", "80.0% (4)", "75.0%", "60.0%"])
    expect(classes.locator("tbody tr").nth(2).locator("td")).to_have_text(
        ["5", "0.0% (0)", "n/a", "20.0%"])
    expect(details.get_by_role("table", name=re.compile("^Per class on"))).to_have_count(2)
    row.get_by_role("button", name="Details").click()  # closed again


def without(key: str) -> Callable[[Route], None]:
    """A route handler answering with the service's JSON less ``key``: an older service."""
    def handle(route: Route) -> None:
        response = route.fetch()
        body = response.json()
        body.pop(key, None)
        if isinstance(body.get("progress"), dict):
            body["progress"].pop(key, None)
        route.fulfill(response=response, json=body)
    return handle


def test_the_page_copes_with_a_service_without_heat_maps_or_job_history(
    site: Site, browser: Browser, radiography_root: Path,
) -> None:
    service = site.service
    site.serve(site.reliable)
    page, problems = open_page(browser, service, key=ADMIN_KEY)
    page.route(re.compile(r"/predict\?explain=true$"), without("explanation"))
    dicom = make_dicom(gray_of(sample_files(radiography_root, 1)["COVID"][0].read_bytes()), 8)
    drop_file(page, "chest.dcm", dicom, "application/dicom")
    expect(page.locator("#preview-note")).to_contain_text("appears after the prediction")
    expect(page.locator("#predict-status")).to_contain_text("from model version", timeout=SLOW)
    expect(page.get_by_label("Show heat map")).to_be_disabled()
    expect(page.locator("#heatmap-help")).to_contain_text("no heat map")
    expect(page.locator("#preview-note")).to_contain_text("returned no preview")

    # Jobs that report only their last epoch: the page keeps what it saw, poll after poll,
    # and follows a job again after a reload. This one activates its version: its end is
    # a success, in green.
    page.route(re.compile(r"/jobs/[^/?]+$"), without("history"))
    archive = dataset_zip(radiography_root, 6)
    with service.client() as client:
        assert client.post("/datasets", data={"name": "small"},
                           files={"file": ("s.zip", archive)}).status_code == 201
        job = client.post("/retrain", json={"dataset": "small", "epochs": 3, "image_size": 32,
                                            "base_weights": "none", "batch_size": 8,
                                            "activate": "always"})
    page.evaluate("id => sessionStorage.setItem('cxr.jobId', id)", job.json()["job_id"])
    page.reload()
    expect(page.locator("#job-state")).to_have_text("succeeded", timeout=240_000)
    expect(page.locator("#job-status")).to_contain_text("It is the active version.")
    expect(page.locator("#job-status")).to_have_class("status ok")
    # every epoch the page saw (a poll a second; the tiny epochs may be quicker)
    seen = page.locator("#history-body tr").count()
    assert 1 <= seen <= 3
    expect(page.locator("#chart circle.train")).to_have_count(2 * seen)
    assert expected_console(problems) == []
    # The API's documentation renders with the network cut off (this context refuses all
    # that is not the service's): Swagger UI's and ReDoc's files come with the package.
    docs = page.context.new_page()
    docs.goto(service.url + "/docs")
    expect(docs.locator(".swagger-ui .info .title")).to_contain_text("cxr-service",
                                                                      timeout=SLOW)
    expect(docs.locator(".opblock-summary-path", has_text="/predict").first).to_be_visible()
    docs.goto(service.url + "/redoc")
    expect(docs.locator("h1").first).to_contain_text("cxr-service", timeout=SLOW)
    expect(docs.get_by_text("/retrain").first).to_be_attached()


def assert_whole_epochs(chart: Locator) -> None:
    """The chart's epoch axis ticks at whole epochs only."""
    ticks = chart.locator(".tick.x").all_text_contents()
    assert ticks and all(re.fullmatch(r"\d+|epoch", tick) for tick in ticks), ticks


def confirm_if_asked(page: Page, version: str) -> None:
    """A version not shown to be better than chance (a tiny training's usually is not)
    asks again, the key that opened the question focused on the button that changes
    nothing; the second, explicit button serves it."""
    status = page.locator("#models-status")
    expect(status).to_contain_text(
        re.compile(f"Version {re.escape(version)} (is now the active|needs a confirmation)"))
    if "needs a confirmation" in status.inner_text():
        guard = page.get_by_role("dialog", name=re.compile(f"^Serve version {version}"))
        expect(guard.get_by_role("button", name="Keep the active version")).to_be_focused()
        guard.get_by_role("button", name=re.compile("^Serve it anyway: ")).click()


def start_training(page: Page, **fields: Any) -> None:
    for label, value in fields.items():
        page.get_by_label(label, exact=True).fill(str(value))
    page.get_by_role("button", name="Start training").click()


def test_upload_train_watch_activate_and_predict_from_the_new_version(
    site: Site, browser: Browser, radiography_root: Path, tmp_path: Path, artifacts: Path,
) -> None:
    service, first = site.service, site.reliable
    site.serve(first)
    with service.client() as client:
        published = len(client.get("/models").json()["versions"])
    page, problems = open_page(browser, service, key=None)
    archive = tmp_path / "tiny.zip"
    archive.write_bytes(dataset_zip(radiography_root, 12))

    # Uploading needs an admin key, and the page says so.
    page.get_by_label("Name", exact=True).fill("tiny")
    page.get_by_label("Zip file").set_input_files(archive)
    upload, status = page.get_by_role("button", name="Upload"), page.locator("#dataset-status")
    upload.click()
    expect(status).to_contain_text("needs an API key")
    expect(status.locator(".code")).to_have_text("(unauthorized)")
    page.get_by_label("API key", exact=True).fill(READER_KEY)
    upload.click()
    expect(status).to_contain_text("needs an admin API key")
    page.get_by_label("API key", exact=True).fill(ADMIN_KEY)
    upload.click()
    expect(status).to_contain_text("Stored dataset tiny: 36 images", timeout=SLOW)
    expect(page.locator("#datasets-body")).to_contain_text("COVID 12, Normal 12")
    expect(page.get_by_label("Dataset", exact=True)).to_have_value("tiny")

    # ImageNet by default, as in the paper: the form warns before submitting that offline
    # its job fails; it does, and the job's error, which names the alternatives, shows
    # beside the form.
    weights, form_status = page.get_by_label("Base weights"), page.locator("#retrain-status")
    expect(weights).to_have_value("imagenet")
    note = page.locator("#weights-help")
    expect(note).to_be_visible()
    expect(note).to_have_class("note warn")
    expect(note).to_contain_text("job fails at once")
    expect(note).to_contain_text('pick "none (random start)" or "file"')
    start_training(page, **{"Epochs": 2, "Fine-tune epochs": 1, "Image size (pixels)": 32,
                            "Batch size": 8})
    expect(page.locator("#job-state")).to_have_text("failed", timeout=SLOW)
    expect(form_status.locator(".code")).to_have_text("(weights_unavailable)")
    expect(form_status).to_contain_text("'none'")  # the alternatives
    # Weights the server cannot load: the API's refusal in plain words.
    weights.select_option("file")
    start_training(page)
    expect(form_status).to_contain_text("needs CXR_BASE_WEIGHTS_FILE")
    expect(form_status.locator(".code")).to_have_text("(weights_unavailable)")
    weights.select_option("none")
    expect(note).to_have_class("help note")
    # A random start is trained whole: block 5's fine-tuning options do not apply.
    for label in ("Then fine-tune block 5", "Fine-tune epochs", "Fine-tune learning rate",
                  "Head cache views"):
        expect(page.get_by_label(label, exact=True)).to_be_disabled()

    # TINY of the end-to-end test: 32 px, 2 epochs, a random base, batch 8, at the README's
    # offline learning rate; every option that applies reaches the API.
    with page.expect_request(lambda r: r.url.endswith("/retrain") and r.method == "POST") \
            as sent:
        start_training(page, **{"Learning rate": "1e-4"})
    body = sent.value.post_data_json
    assert body["learning_rate"] == 1e-4 and body["base_weights"] == "none"
    assert (body["image_size"], body["epochs"], body["batch_size"]) == (32, 2, 8)
    left_out = {"base_version", "holdout_source", "seed", "time_budget_s", "groups_csv",
                "replay_fraction", "fine_tune", "fine_tune_epochs", "fine_tune_learning_rate",
                "head_cache_views"}
    assert set(body) == set(TrainingParams.model_fields) - left_out, body
    expect(page.locator("#job-state")).to_have_text("succeeded", timeout=240_000)
    expect(page.locator("#job-epoch")).to_have_text("2 / 2")
    expect(page.locator("#job-progress")).to_have_attribute("value", "2")
    # two points per series in each panel, and the same values as a table
    expect(page.locator("#chart circle.train")).to_have_count(4)
    expect(page.locator("#chart circle.val")).to_have_count(4)
    expect(page.locator("#history-body tr")).to_have_count(2)
    expect(page.locator("#chart desc")).to_contain_text("After epoch 2")
    assert_whole_epochs(page.locator("#chart"))
    job_status = page.locator("#job-status")
    expect(job_status).to_contain_text("published version")
    new = re.search(r"published version (\S+?)\.", job_status.inner_text())
    assert new, job_status.inner_text()
    version = new.group(1)
    with service.client() as client:
        assert client.get(f"/models/{version}").json()["training"]["learning_rate"] == 1e-4
    # The form's line followed the job to its end, and the line above the models table
    # counts the new version with the table. Not activated, the end is not a success's
    # green: the version is a candidate.
    expect(form_status).to_contain_text(f"succeeded: published version {version}. Not "
                                         "activated")
    expect(form_status).to_have_class("status warn")
    expect(job_status).to_contain_text("Not activated: ")
    expect(job_status).to_have_class("status warn")
    expect(page.locator("#models-body tr[data-version]")).to_have_count(published + 1)
    expect(page.locator("#models-summary")).to_contain_text(f"{published + 1} versions")
    page.locator("#train").screenshot(path=artifacts / "train.png")

    # The new version appears in Models: not activated at publication (its classes differ
    # from the active version's), with curves and card; activated from the keyboard.
    row = page.locator(f'#models-body tr[data-version="{version}"]')
    expect(row.locator(".state")).to_have_text("Not active")
    expect(row.locator(".publication")).to_contain_text("At publication: not activated (")
    row.get_by_role("button", name="Details").click()
    details = page.locator("#models-body tr.details:not([hidden])")
    expect(details.get_by_role("img", name=re.compile("Loss and accuracy"))).to_be_visible()
    assert_whole_epochs(details.locator("svg"))
    expect(details.locator("iframe")).to_be_visible()
    frame = details.frame_locator("iframe")
    expect(frame.locator("h1")).to_contain_text(version, timeout=SLOW)
    activate = page.get_by_role("button", name=f"Activate version {version}")
    activate.focus()
    page.keyboard.press("Enter")
    confirm_if_asked(page, version)
    expect(page.locator("#models-status")).to_contain_text(f"Version {version} is now the active")
    expect(row.locator(".badge.active")).to_have_text("★ Active")
    expect(page.locator("#serving")).to_contain_text(f"serves version {version}", timeout=SLOW)
    expect(row.get_by_role("button", name="Details")).to_be_focused()
    expect(details.get_by_role("img", name=re.compile("Loss and accuracy"))).to_be_visible()
    expect(frame.locator("h1")).to_contain_text(version, timeout=SLOW)
    # The version it replaced is not active now; why it was activated is a past event.
    old = page.locator(f'#models-body tr[data-version="{first}"]')
    expect(old.locator(".state")).to_have_text("Not active")
    expect(old.locator(".publication")).to_have_text(
        f"At publication: activated ({FIRST_REASON}).")
    page.locator("#models").screenshot(path=artifacts / "models.png")

    # Predict again: the answer comes from the new version, with its classes.
    image = sample_files(radiography_root, 1)["Viral Pneumonia"][0]
    page.get_by_label("Chest X-ray: PNG, JPEG or DICOM (.dcm)").set_input_files(image)
    answer_from(page, version)
    assert page.locator("#probabilities label").all_inner_texts() == [
        "COVID", "Normal", "Viral Pneumonia"]
    assert first != version
    page.locator("#predict").screenshot(path=artifacts / "predict-new-version.png")

    # A fine-tune of the active version, offered by the form, sends base_version: on a set
    # of one class the API refuses it by the fine-tune's own rule.
    one_class = tmp_path / "covid.zip"
    one_class.write_bytes(zip_bytes({f"COVID/{path.name}": path.read_bytes()
                                     for path in sample_files(radiography_root, 3)["COVID"]}))
    page.get_by_label("Name", exact=True).fill("covid")
    page.get_by_label("Zip file").set_input_files(one_class)
    upload.click()
    expect(status).to_contain_text("Stored dataset covid", timeout=SLOW)
    base = page.get_by_label("Start from")
    expect(base.locator(f'option[value="{version}"]')).to_have_count(1)
    base.select_option("active")
    # A fine-tune inherits its size; its own defaults are filled in.
    expect(page.get_by_label("Image size (pixels)")).to_be_disabled()
    expect(page.get_by_label("Epochs", exact=True)).to_have_value("20")
    expect(page.get_by_label("Learning rate", exact=True)).to_have_value("2e-5")
    page.get_by_label("Dataset", exact=True).select_option("covid")
    page.get_by_role("button", name="Start training").click()
    expect(form_status.locator(".code")).to_have_text("(class_mismatch)")
    expect(form_status).to_contain_text("teach the site's look")
    base.select_option("")
    page.get_by_label("Dataset", exact=True).select_option("tiny")

    # A long job, followed by the form's line, cancelled from the page.
    start_training(page, **{"Epochs": 200})
    expect(page.locator("#job-state")).to_have_text("running", timeout=SLOW)
    expect(form_status).to_contain_text(re.compile(r"running: (epoch \d+ of 200|the first)"))
    page.get_by_role("button", name="Cancel the job").click()
    expect(page.locator("#job-state")).to_have_text("cancelled", timeout=SLOW)
    expect(page.locator("#job-status")).to_contain_text("nothing was published")
    expect(form_status).to_contain_text("cancelled: nothing was published")
    page.screenshot(path=artifacts / "page.png", full_page=True)
    assert expected_console(problems) == []


def predict_from_page(page: Page, image: Path) -> str:
    """Predict ``image`` as a person would; the answer's prediction id, once the page shows
    it. The page names itself as the image's source."""
    with page.expect_response(re.compile(r"/predict\?explain=true$"), timeout=SLOW) as answered:
        page.get_by_label("Chest X-ray: PNG, JPEG or DICOM (.dcm)").set_input_files(image)
    assert answered.value.request.headers.get("x-cxr-source") == "page"
    expect(page.locator("#predict-status")).to_contain_text("from model version", timeout=SLOW)
    prediction_id: str = answered.value.json()["prediction_id"]
    return prediction_id


def label_answer(page: Page) -> str:
    """Record the answer shown as what the reading room confirmed; the label."""
    label = page.locator("#predicted-label").inner_text()
    page.get_by_label("Class", exact=True).select_option(label)
    page.get_by_role("button", name="Record label").click()
    expect(page.locator("#confirm-status")).to_have_text(f"Recorded as {label}.")
    return label


def refreshed_until(page: Page, shown: Callable[[], None], timeout_s: float = 60) -> None:
    """Refresh the models list until ``shown`` passes: the shadow scores after each answer."""
    deadline = time.monotonic() + timeout_s
    while True:
        page.get_by_role("button", name="Refresh the list").click()
        try:
            shown()
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise


def test_label_an_answer_from_the_page_and_read_its_versions_live_figures(
    site: Site, browser: Browser, radiography_root: Path, artifacts: Path,
) -> None:
    service, version = site.service, site.reliable
    site.serve(version)
    page, problems = open_page(browser, service, key=READER_KEY)
    prediction_id = predict_from_page(page, sample_files(radiography_root, 1)["COVID"][0])
    confirm = page.get_by_role("form", name="Confirmed by the reading room")
    expect(confirm).to_be_visible()
    choice, line = page.get_by_label("Class", exact=True), page.locator("#confirm-status")
    expect(choice.locator("option")).to_have_text(["choose the confirmed class", "a", "b", "c"])
    expect(choice).to_have_value("")  # nothing confirmed for the reader
    record = page.get_by_role("button", name="Record label")
    record.click()
    expect(line).to_contain_text("Choose the class the reading room confirmed first")
    choice.select_option("b")
    record.click()
    expect(line).to_contain_text("needs a labeler or admin API key")
    expect(line.locator(".code")).to_have_text("(forbidden)")
    page.get_by_label("API key", exact=True).fill(LABELER_KEY)
    label = label_answer(page)
    with service.client() as client:
        logged = client.get(f"/predictions/{prediction_id}").json()
    assert logged["source"] == "page"
    assert logged["confirmed"]["label"] == label and logged["confirmed"]["by"] == "labeler"

    # The version's row counts it, right and reliable; its details give recall per class.
    row = page.locator(f'#models-body tr[data-version="{version}"]')
    expect(row.locator(".live")).to_have_text(re.compile(
        r"^Live: 100% right on 1 labelled answers \(95% interval \d+–100%\); reliable "
        r"answers right 100% of 1\.$"))
    row.get_by_role("button", name="Details").click()
    details = page.locator("#models-body tr.details:not([hidden])")
    recall = details.get_by_role("table", name=re.compile("^Recall of version"))
    expect(recall.locator("tbody th")).to_have_text(["a", "b", "c"])
    for name in ("a", "b", "c"):  # the label's class is counted, the others not yet
        expect(recall.locator("tbody tr", has_text=name).locator("td").nth(0)).to_have_text(
            "100%" if name == label else "n/a")
    page.locator("#predict").screenshot(path=artifacts / "labelled.png")
    assert expected_console(problems) == []


def test_shadow_a_version_on_live_traffic_read_its_figures_and_activate_it(
    site: Site, browser: Browser, radiography_root: Path, artifacts: Path,
) -> None:
    service, active, candidate = site.service, site.reliable, site.unrecorded
    site.serve(active)
    page, problems = open_page(browser, service, key=READER_KEY)
    status, rows = page.locator("#models-status"), page.locator("#models-body")
    row = rows.locator(f'tr[data-version="{candidate}"]')
    start = row.get_by_role("button", name=f"Shadow version {candidate} on live traffic")
    start.click()
    expect(status).to_contain_text("needs an admin API key")
    page.get_by_label("API key", exact=True).fill(ADMIN_KEY)
    start.click()
    expect(status).to_contain_text(f"Version {candidate} now shadows the active version")
    expect(row.locator(".badge.shadow")).to_have_text("Shadow")
    expect(row.get_by_role("button", name=f"End the shadow of version {candidate}")).to_be_visible()
    # The active version can shadow nothing, and the buttons keep the table in its column.
    expect(rows.locator(f'tr[data-version="{active}"]').get_by_role(
        "button", name=re.compile("shadow", re.I))).to_have_count(0)
    assert page.locator("#models .table-wrap").evaluate("w => w.scrollWidth <= w.clientWidth")
    panel = page.get_by_role("region", name=f"Shadow: version {candidate}")
    expect(panel).to_be_visible()
    refreshed_until(page, lambda: expect(panel).not_to_contain_text(
        "Not loaded", timeout=1000))

    # An answer, scored by the shadow after it was sent: agreement, and the matrix of labels.
    predict_from_page(page, sample_files(radiography_root, 1)["Normal"][0])
    refreshed_until(page, lambda: expect(panel.locator(".agreement")).to_contain_text(
        "of 1 images", timeout=1000))
    expect(panel).to_contain_text("Images seen 1, dropped 0")
    matrix = panel.get_by_role("table", name=re.compile("^Images by the active version's label"))
    expect(matrix.locator("td")).to_have_text("1")  # one image: one active label, one shadow
    expect(panel.locator(".paired")).to_have_text(
        "No labelled images yet: label answers to compare accuracy.")
    # Labelled, the two are compared on it.
    label_answer(page)
    refreshed_until(page, lambda: expect(panel.locator(".paired")).to_contain_text(
        re.compile(r"^Shadow minus active: .* on 1 labelled images\."), timeout=1000))
    with service.client() as client:
        report = client.get(f"/models/{candidate}/shadow").json()
    assert report["images"] == 1 and report["labelled"] == 1
    expect(panel.locator(".agreement")).to_have_text(
        f"Agrees with the active version on {report['agreement'] * 100:.1f}% of 1 images.")
    page.locator("#models").screenshot(path=artifacts / "shadow.png")

    # A shadow that cannot load says so first (its report, as such a service answers it).
    def broken(route: Route) -> None:
        response = route.fetch()
        route.fulfill(response=response, json={**response.json(), "loaded": False,
                                               "load_error": "the model file is unreadable"})
    page.route(re.compile(f"/models/{re.escape(candidate)}/shadow$"), broken)
    page.get_by_role("button", name="Refresh the list").click()
    expect(panel.locator(".load-error")).to_have_text(
        "The shadow is not scoring: the model file is unreadable")
    page.unroute(re.compile(f"/models/{re.escape(candidate)}/shadow$"))

    # Activating the shadow shows its figures and asks first; declined, nothing changes.
    activate = rows.get_by_role("button", name=f"Activate version {candidate}")
    activate.click()
    dialog = page.get_by_role("dialog", name=f"Activate version {candidate}, the shadow?")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Agrees with the active version on")
    expect(dialog).to_contain_text("on 1 labelled images")
    expect(dialog).to_contain_text("answer every prediction, and ends the shadow")
    page.screenshot(path=artifacts / "activate-shadow.png")
    dialog.get_by_role("button", name="Keep the active version").click()
    expect(dialog).to_be_hidden()
    expect(status).to_contain_text("was not activated; it is still the shadow")
    expect(row.locator(".badge.shadow")).to_have_count(1)
    activate.click()
    dialog.get_by_role("button", name=f"Activate version {candidate}").click()
    # Its test interval includes chance: the shadow's way goes through the same guard.
    guard = page.get_by_role(
        "dialog", name=f"Serve version {candidate}, not shown to be better than chance?")
    guard.get_by_role("button", name="Serve it anyway: its test interval includes chance").click()
    expect(status).to_contain_text(f"Version {candidate} is now the active version")
    expect(row.locator(".badge.active")).to_have_text("★ Active")
    expect(rows.locator(".badge.shadow")).to_have_count(0)
    expect(panel).to_be_hidden()
    # Its shadow figures stay in its details.
    row.get_by_role("button", name="Details").click()
    details = page.locator("#models-body tr.details:not([hidden])")
    expect(details).to_contain_text("Shadowed earlier")
    expect(details.locator(".paired")).to_contain_text("on 1 labelled images")

    # Another shadow, ended from its row.
    other = rows.locator(f'tr[data-version="{site.at_chance}"]')
    other.get_by_role("button", name=f"Shadow version {site.at_chance} on live traffic").click()
    expect(other.locator(".badge.shadow")).to_have_text("Shadow")
    other.get_by_role("button", name=f"End the shadow of version {site.at_chance}").click()
    expect(status).to_have_text(f"Version {site.at_chance} no longer shadows the active version.")
    expect(rows.locator(".badge.shadow")).to_have_count(0)
    expect(page.locator("#shadow-panel")).to_be_hidden()
    assert expected_console(problems) == []


# A first version as a person's first training names it: a long dataset name, the paper's
# classes, and the publication decision's reason in full, beside a test interval that
# includes chance (the widest row the table shows).
FIRST_VERSION = {
    "dataset": {"name": "covid19-radiography-first-300"},
    "metrics": {"test": {"images": 135, "accuracy": 0.71, "balanced_accuracy": 0.46,
                         "macro_f1": 0.44, "balanced_accuracy_ci": [0.3, 0.6]}},
    "promotion": {"mode": "if_better", "metric": "balanced_accuracy", "margin": 0.01,
                  "activated": False, "reason": "the test balanced accuracy interval "
                  "0.30-0.60 includes chance (0.33), so it is kept as a candidate"},
    "calibration": {"temperature": 19.9999, "at_bound": "upper"},
}


@pytest.fixture
def first_day(tmp_path: Path) -> Iterator[Service]:
    """The API alone on an empty registry, as on a first day: no model, no worker."""
    service = start_service(tmp_path / "first-day", None, processes=("serve",))
    yield service
    service.stop()


def test_a_first_day_no_model_then_one_not_shown_to_beat_chance(
    first_day: Service, browser: Browser, radiography_root: Path, artifacts: Path,
) -> None:
    """With no model the predict area says so before any image and after one, naming the
    page's Train section; the icon and ReDoc load nothing from elsewhere; a first version
    fits the models table at 1280 px, and one not shown to beat chance is served only by
    a second, explicit click."""
    service = first_day
    page, problems = open_page(browser, service, key=None)
    page.set_viewport_size({"width": 1280, "height": 800})
    no_model = page.locator("#no-model")
    expect(no_model).to_have_text("No model yet: train one in the Train section below.")
    no_model.get_by_role("link", name="Train section below").click()
    expect(page.locator("#train-title")).to_be_in_viewport()
    expect(page.locator("#datasets-note")).to_contain_text(
        "read where it lies and is not stored: it appears as the dataset of that version")
    film = sample_files(radiography_root, 1)["Normal"][0].read_bytes()
    drop_file(page, "normal.png", film, "image/png")
    status = page.locator("#predict-status")
    expect(status).to_have_text("No answer: No model yet: train one in the Train section "
                                "below. (no_model)")
    expect(status.get_by_role("link", name="Train section below")).to_have_attribute(
        "href", "#train")
    page.locator("#predict").screenshot(path=artifacts / "no-model.png")

    # The icon, and the API's documentation: nothing is asked of another host.
    expect(page.locator('link[rel="icon"]')).to_have_attribute("href", "/favicon.ico")
    assert page.request.get(service.url + "/favicon.ico").status == 200
    elsewhere: list[str] = []
    page.context.route(re.compile(r"^(?!" + re.escape(service.url) + r"[/?#]|data:|blob:)"),
                       lambda route: (elsewhere.append(route.request.url), route.abort()))
    docs = page.context.new_page()
    docs.goto(service.url + "/redoc")
    expect(docs.locator("h1").first).to_contain_text("cxr-service", timeout=SLOW)
    expect(docs.get_by_text("API docs by Redocly")).to_be_attached()  # its logo's place
    docs.goto(service.url + "/docs")
    expect(docs.locator(".swagger-ui .info .title")).to_contain_text("cxr-service",
                                                                      timeout=SLOW)
    docs.close()
    assert elsewhere == []

    # A first version, not activated: the table fits its column at 1280 px.
    version = publish_random(LocalRegistry(Path(service.env["CXR_MODELS_DIR"])), seed=4,
                             classes=("COVID", "Normal", "Viral Pneumonia"), extra=FIRST_VERSION)
    page.get_by_role("button", name="Refresh the list").click()
    row = page.locator(f'#models-body tr[data-version="{version}"]')
    expect(row.locator(".publication")).to_contain_text("kept as a candidate")
    expect(no_model).to_have_text("No version is active yet: activate one under Models, or "
                                  "train one in the Train section below.")
    check_table_fits(page, row)
    page.locator("#models").screenshot(path=artifacts / "models-1280.png")

    # Activating it asks again; a key press or the first button changes nothing.
    page.get_by_label("API key", exact=True).fill(ADMIN_KEY)
    activate = row.get_by_role("button", name=f"Activate version {version}")
    guard = page.get_by_role(
        "dialog", name=f"Serve version {version}, not shown to be better than chance?")
    activate.click()
    expect(guard).to_be_visible()
    expect(guard).to_contain_text(f"Version {version} is not shown better than chance")
    assert not re.search(r"`|POST |--force", guard.inner_text())  # the page's words: buttons
    expect(guard.get_by_role("button", name="Do not activate it")).to_be_focused()
    page.screenshot(path=artifacts / "activation-guard.png")
    page.keyboard.press("Enter")
    expect(guard).to_be_hidden()
    expect(page.locator("#models-status")).to_have_text(f"Version {version} was not activated.")
    with service.client() as client:
        assert client.get("/models").json()["active"] is None
    activate.click()
    with page.expect_request(re.compile(r"/activate\?force=true$")):
        guard.get_by_role("button",
                          name="Serve it anyway: its test interval includes chance").click()
    expect(page.locator("#models-status")).to_contain_text(
        f"Version {version} is now the active version, served although it is not shown")
    expect(no_model).to_be_hidden()
    served(service, version)
    drop_file(page, "normal.png", film, "image/png")
    expect(status).to_contain_text(f"No reliable answer from model version {version}",
                                   timeout=SLOW)
    assert [p for p in expected_console(problems) if "status of 503" not in p] == []


def check_table_fits(page: Page, row: Locator) -> None:
    """The models table's right edge within its column, and its Status and Actions cells
    shown whole, with no scrolling sideways."""
    wrap = page.locator("#models .table-wrap")
    assert wrap.evaluate("w => w.scrollWidth <= w.clientWidth")
    column = wrap.bounding_box()
    table = page.locator("#models-table").bounding_box()
    assert column and table and table["x"] + table["width"] <= column["x"] + column["width"] + 1
    for cell in (page.locator("#models-table thead th").nth(7),
                 page.locator("#models-table thead th").nth(8),
                 row.locator("td").nth(7), row.locator("td.actions")):
        expect(cell).to_be_visible()
        box = cell.bounding_box()
        assert box and box["x"] + box["width"] <= column["x"] + column["width"] + 1, box
    expect(page.locator("#models-table thead th").nth(7)).to_have_text("Status")
    expect(page.locator("#models-table thead th").nth(8)).to_have_text("Actions")
