"""The web page in a real browser (headless Chromium) against a real API and worker on Redis.

Playwright drives Debian's Chromium (`apt-get install chromium`; `playwright install` is not
needed). Every request the page makes to anywhere but the service is refused, so the page is
shown to work offline. Screenshots of each section are kept under $CXR_TEST_ARTIFACTS (or the
test's tmp_path), never in the repository.
"""

from __future__ import annotations

import base64
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.registry.local import LocalRegistry
from tests.helpers.dicom import gray_of, make_dicom
from tests.helpers.env import ADMIN_KEY, READER_KEY, REQUIRE_SERVICES, sample_files
from tests.helpers.http import dataset_zip
from tests.helpers.services import Service, start_service
from tests.helpers.versions import publish_random

try:
    from playwright.sync_api import Browser, Page, Route, expect, sync_playwright
except ImportError:  # the dev extra is not installed
    sync_playwright = None

pytestmark = pytest.mark.integration

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


@pytest.fixture
def site(tmp_path: Path, redis_url: str) -> Iterator[tuple[Service, str]]:
    """The service, serving a random-weight version (classes a, b, c) from the start."""
    registry = LocalRegistry(tmp_path / "models")
    first = publish_random(registry, seed=1)
    registry.activate(first)
    service = start_service(tmp_path, redis_url)
    deadline = time.monotonic() + 60
    while httpx.get(f"{service.url}/readyz", timeout=5).status_code != 200:
        if time.monotonic() > deadline:
            service.stop()
            raise AssertionError(f"the API never loaded {first}:\n{service.logs()}")
        time.sleep(0.3)
    yield service, first
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
    # Chromium logs every non-2xx answer of fetch(); the tests provoke some on purpose.
    return [p for p in problems if not re.search(r"status of (401|403|400|404|422)", p)]


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


def check_heat_map(page: Page) -> bool:
    """Toggle the heat map with the keyboard if the service explains; say if it did."""
    toggle = page.get_by_label("Show heat map")
    preview = page.locator("#preview")
    if not toggle.is_enabled():
        expect(page.locator("#heatmap-help")).to_contain_text("no heat map")
        return False
    gray = preview.get_attribute("src")
    assert gray and gray.startswith("data:image/png;base64,")
    toggle.focus()
    page.keyboard.press("Space")
    expect(toggle).to_be_checked()
    expect(preview).not_to_have_attribute("src", gray)
    expect(preview).to_have_attribute("alt", re.compile("Heat map"))
    return True


def test_predict_a_real_x_ray_and_see_every_class_and_the_heat_map(
    site: tuple[Service, str], browser: Browser, radiography_root: Path, artifacts: Path,
    tmp_path: Path,
) -> None:
    service, version = site
    page, problems = open_page(browser, service, key=None)  # predicting needs no key
    expect(page.locator("#models-body tr[data-version]")).to_have_count(1)

    image = sample_files(radiography_root, 1)["COVID"][0]
    page.get_by_label("Chest X-ray: PNG, JPEG or DICOM (.dcm)").set_input_files(image)
    expect(page.locator("#preview")).to_have_attribute("src", re.compile("^(blob|data):"))
    expect(page.locator("#predict-status")).to_contain_text("from model version", timeout=SLOW)
    label = page.locator("#predicted-label").inner_text()
    assert label in {"a", "b", "c"}
    # one labelled bar per class, with its percentage as text
    for name in ("a", "b", "c"):
        expect(page.get_by_role("meter", name=name)).to_be_visible()
    expect(page.locator("#probabilities li")).to_have_count(3)
    assert all(re.fullmatch(r"\d+\.\d%", t)
               for t in page.locator("#probabilities .pct").all_inner_texts())
    expect(page.locator("#answer-version")).to_have_text(version)
    explained = check_heat_map(page)
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


def test_an_unreliable_answer_and_a_refused_photograph_are_shown_as_such(
    tmp_path: Path, redis_url: str, browser: Browser, radiography_root: Path, artifacts: Path,
) -> None:
    """A version that knows it is no better than chance (a random one, recorded so) and has
    a chest-radiograph gate fitted on real films: its answers are no finding."""
    import io

    from skimage import data as samples

    from shared.ml.preprocessing import load_pixels
    from shared.ml.reliability import ReliabilityRecord
    from shared.registry.files import GATE_FILE
    from worker.evaluation.gate_fitting import fit_gate

    films = [load_pixels(p.read_bytes(), 32)[..., 0]
             for paths in sample_files(radiography_root, 40).values() for p in paths]
    gate = fit_gate(films[::2], films[1::2], seed=0)
    record = ReliabilityRecord(confidence_threshold=0.0, confidence_coverage=0.95,
                               chance=1 / 3, balanced_accuracy_ci=[0.2, 0.5],
                               better_than_chance=False)
    registry = LocalRegistry(tmp_path / "models")
    version = publish_random(registry, seed=2, extra={"reliability": record.model_dump()},
                             files={GATE_FILE: gate.to_bytes()})
    registry.activate(version)
    service = start_service(tmp_path, redis_url)
    try:
        with service.client() as client:
            deadline = time.monotonic() + 60
            while client.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline, service.logs()
                time.sleep(0.3)
        page, problems = open_page(browser, service, key=None)
        image = sample_files(radiography_root, 1)["Normal"][0]
        page.get_by_label("Chest X-ray: PNG, JPEG or DICOM (.dcm)").set_input_files(image)
        status = page.locator("#predict-status")
        expect(status).to_contain_text("No reliable answer", timeout=SLOW)
        expect(page.locator("#label-line")).to_contain_text("No finding. Most probable class:")
        expect(page.locator("#label-line strong")).to_have_count(0)  # the label is not bold
        expect(page.locator("#unreliable")).to_contain_text("no better than chance")
        expect(page.locator("#probabilities li")).to_have_count(3)  # still visible
        expect(page.locator("#models-body")).to_contain_text("No better than chance")
        page.locator("#predict").screenshot(path=artifacts / "unreliable.png")

        # In the table of several answers, no label is a finding either.
        films = sample_files(radiography_root, 2)["Normal"]
        page.get_by_label("Chest X-ray: PNG, JPEG or DICOM (.dcm)").set_input_files(films)
        rows = page.locator("#batch-body tr")
        expect(rows.locator(".unreliable-label")).to_have_count(2, timeout=SLOW)
        expect(rows.locator("strong")).to_have_count(0)
        expect(rows.nth(0)).to_contain_text("Not reliable: ")
        expect(rows.nth(1)).to_contain_text("no better than chance")

        buffer = io.BytesIO()
        from PIL import Image

        Image.fromarray(samples.camera()).save(buffer, format="PNG")
        drop_file(page, "camera.png", buffer.getvalue(), "image/png")
        expect(status.locator(".code")).to_have_text("(not_a_chest_xray)", timeout=SLOW)
        expect(status).to_contain_text("does not look like a chest radiograph")
        expect(page.locator("#answer")).to_be_hidden()
        assert expected_console(problems) == []
    finally:
        service.stop()


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
    site: tuple[Service, str], browser: Browser, radiography_root: Path,
) -> None:
    service, _ = site
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
    # and follows a job again after a reload.
    page.route(re.compile(r"/jobs/[^/?]+$"), without("history"))
    archive = dataset_zip(radiography_root, 6)
    with service.client() as client:
        assert client.post("/datasets", data={"name": "small"},
                           files={"file": ("s.zip", archive)}).status_code == 201
        job = client.post("/retrain", json={"dataset": "small", "epochs": 3, "image_size": 32,
                                            "base_weights": "none", "batch_size": 8})
    page.evaluate("id => sessionStorage.setItem('cxr.jobId', id)", job.json()["job_id"])
    page.reload()
    expect(page.locator("#job-state")).to_have_text("succeeded", timeout=240_000)
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


def start_training(page: Page, **fields: Any) -> None:
    for label, value in fields.items():
        page.get_by_label(label, exact=True).fill(str(value))
    page.get_by_role("button", name="Start training").click()


def test_upload_train_watch_activate_and_predict_from_the_new_version(
    site: tuple[Service, str], browser: Browser, radiography_root: Path, tmp_path: Path,
    artifacts: Path,
) -> None:
    service, first = site
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

    # Weights the server cannot load: the API's refusal in plain words.
    page.get_by_label("Base weights").select_option("file")
    start_training(page)
    expect(page.locator("#retrain-status .code")).to_have_text("(weights_unavailable)")
    page.get_by_label("Base weights").select_option("none")

    # TINY of the end-to-end test: 32 px, 2 epochs, a random base, batch 8.
    start_training(page, **{"Epochs": 2, "Fine-tune epochs": 1, "Image size (pixels)": 32,
                            "Batch size": 8})
    expect(page.locator("#job-state")).to_have_text("succeeded", timeout=240_000)
    expect(page.locator("#job-epoch")).to_have_text("2 / 2")
    expect(page.locator("#job-progress")).to_have_attribute("value", "2")
    # two points per series in each panel, and the same values as a table
    expect(page.locator("#chart circle.train")).to_have_count(4)
    expect(page.locator("#chart circle.val")).to_have_count(4)
    expect(page.locator("#history-body tr")).to_have_count(2)
    expect(page.locator("#chart desc")).to_contain_text("After epoch 2")
    job_status = page.locator("#job-status")
    expect(job_status).to_contain_text("published version")
    new = re.search(r"published version (\S+?)\.", job_status.inner_text())
    assert new, job_status.inner_text()
    version = new.group(1)
    page.locator("#train").screenshot(path=artifacts / "train.png")

    # The new version appears in Models: a candidate (its classes differ from the active
    # version's), with curves and card; activated from the keyboard.
    row = page.locator(f'#models-body tr[data-version="{version}"]')
    expect(row).to_contain_text("Candidate")
    expect(page.locator("#models-body tr[data-version]")).to_have_count(2)
    row.get_by_role("button", name="Details").click()
    details = page.locator("#models-body tr.details:not([hidden])")
    expect(details.get_by_role("img", name=re.compile("Loss and accuracy"))).to_be_visible()
    expect(details.locator("iframe")).to_be_visible()
    frame = details.frame_locator("iframe")
    expect(frame.locator("h1")).to_contain_text(version, timeout=SLOW)
    activate = page.get_by_role("button", name=f"Activate version {version}")
    activate.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#models-status")).to_contain_text(f"Version {version} is now the active")
    expect(row.locator(".badge.active")).to_have_text("★ Active")
    expect(page.locator("#serving")).to_contain_text(f"serves version {version}", timeout=SLOW)
    expect(row.get_by_role("button", name="Details")).to_be_focused()
    expect(details.get_by_role("img", name=re.compile("Loss and accuracy"))).to_be_visible()
    expect(frame.locator("h1")).to_contain_text(version, timeout=SLOW)
    page.locator("#models").screenshot(path=artifacts / "models.png")

    # Predict again: the answer comes from the new version, with its classes.
    image = sample_files(radiography_root, 1)["Viral Pneumonia"][0]
    page.get_by_label("Chest X-ray: PNG, JPEG or DICOM (.dcm)").set_input_files(image)
    answer_from(page, version)
    assert page.locator("#probabilities label").all_inner_texts() == [
        "COVID", "Normal", "Viral Pneumonia"]
    assert first != version
    page.locator("#predict").screenshot(path=artifacts / "predict-new-version.png")

    # A long job, cancelled from the page.
    start_training(page, **{"Epochs": 200})
    expect(page.locator("#job-state")).to_have_text("running", timeout=SLOW)
    page.get_by_role("button", name="Cancel the job").click()
    expect(page.locator("#job-state")).to_have_text("cancelled", timeout=SLOW)
    expect(page.locator("#job-status")).to_contain_text("nothing was published")
    page.screenshot(path=artifacts / "page.png", full_page=True)
    assert expected_console(problems) == []
