"""The web page's files as the API serves them (the page in a browser: integration tests)."""

from __future__ import annotations

import re
import tomllib
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.routes.page import ASSETS, FAVICON, STATIC
from shared.config import Settings
from tests.helpers.env import REPO


@pytest.fixture
def client(settings: Settings) -> TestClient:
    # No lifespan: the page needs neither a model nor a queue.
    return TestClient(create_app(settings))


def test_the_page_is_served_at_the_root_with_its_script_and_style(client: TestClient) -> None:
    page = client.get("/", follow_redirects=False)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert '<script type="module" src="/static/app.js">' in page.text
    assert '<link rel="stylesheet" href="/static/style.css">' in page.text
    for name, media_type in ASSETS.items():
        asset = client.get(f"/static/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"] == media_type
    assert "/" not in client.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize("name", ["index.html", "../routes/page.py", "nope.js", "%2e%2e"])
def test_only_the_named_assets_are_served(client: TestClient, name: str) -> None:
    response = client.get(f"/static/{name}")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_the_page_loads_nothing_from_elsewhere() -> None:
    """No CDN: it must work offline and behind a firewall."""
    for path in STATIC.iterdir():
        if path.name == FAVICON:
            continue  # an image
        text = path.read_text()
        assert not re.search(r"(src|href)=\"(https?:)?//", text), path
        assert not re.search(r"url\((\"|')?(https?:)?//", text), path
        assert "fetch(\"http" not in text, path
        # modules import only each other, and each one the page may load
        for module in re.findall(r'from "([^"]+)"', text):
            assert module.startswith("./") and module[2:] in ASSETS, (path, module)


def test_every_control_has_a_label() -> None:
    html = (STATIC / "index.html").read_text()
    labelled = set(re.findall(r'<label for="([^"]+)"', html))
    controls = re.findall(r'<(?:input|select|textarea|progress)\b[^>]*\bid="([^"]+)"', html)
    assert controls and set(controls) <= labelled


def test_the_static_files_are_package_data() -> None:
    """A non-editable install (the API image) carries the page."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "static/*" in setuptools["package-data"]["api"]
    assert {p.name for p in STATIC.iterdir()} == {"index.html", FAVICON, *ASSETS}


def test_the_page_is_open_when_reads_need_a_key(settings: Settings) -> None:
    """The key is typed into the page, so the page itself cannot need one."""
    closed = TestClient(create_app(settings.model_copy(update={"require_key_for_reads": True})))
    assert closed.get("/").status_code == 200 and closed.get("/static/app.js").status_code == 200
    assert closed.get("/datasets").status_code == 401


def test_the_heat_maps_colour_bar_is_the_colormap_the_server_draws_it_with() -> None:
    """The bar's CSS gradient, read as the browser interpolates it, is explain.py's map."""
    import numpy as np

    from shared.ml.explain import _hot

    css = (STATIC / "style.css").read_text()
    gradient = re.search(r"\.colour-bar \{[^}]*linear-gradient\(to right,([^;]*)\);", css)
    assert gradient, "no colour bar gradient in style.css"
    stops = [(float(at) / 100, [int(c) for c in rgb])
             for *rgb, at in re.findall(r"rgb\((\d+), (\d+), (\d+)\) ([\d.]+)%",
                                        gradient.group(1))]
    assert stops[0][0] == 0 and stops[-1][0] == 1
    values = np.linspace(0, 1, 61)
    positions = [at for at, _ in stops]
    drawn = np.stack([np.interp(values, positions, [rgb[i] for _, rgb in stops])
                      for i in range(3)], axis=-1)
    assert np.abs(drawn - _hot(values) * 255).max() < 1


def test_the_retrain_form_starts_from_imagenet_and_says_what_to_pick_offline() -> None:
    from shared.training_params import TrainingParams

    html = (STATIC / "index.html").read_text()
    select = re.search(r'<select id="retrain-base-weights".*?</select>', html, re.S)
    assert select and re.search(r'<option value="imagenet" selected>', select.group(0))
    assert TrainingParams.model_fields["base_weights"].default == "imagenet"  # one default
    found = re.search(r'<p id="weights-help"[^>]*>(.*?)</p>', html, re.S)
    assert found
    help_text = " ".join(found.group(1).split())
    assert "Without internet" in help_text and "fails at once" in help_text
    assert '"none (random start)"' in help_text and '"file"' in help_text


class FormControls(HTMLParser):
    """The retrain form's controls with data-param: name -> (tag, attributes, selected)."""

    def __init__(self) -> None:
        super().__init__()
        self.controls: dict[str, tuple[str, dict[str, str | None], list[str]]] = {}
        self._select: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        param = named.get("data-param")
        if param and tag in {"input", "select"}:
            self.controls[param] = (tag, named, [])
            self._select = param if tag == "select" else None
        elif tag == "option" and self._select and "selected" in named:
            self.controls[self._select][2].append(named.get("value") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None


def form_controls() -> dict[str, tuple[str, dict[str, str | None], list[str]]]:
    parser = FormControls()
    parser.feed((STATIC / "index.html").read_text())
    return parser.controls


def shown_default(tag: str, attrs: dict[str, str | None], selected: list[str]) -> object:
    """What the control sends untouched, as the API reads it (None: left out)."""
    if tag == "select" and "multiple" in attrs:
        return selected
    if tag == "select":
        return selected[0] or None if selected else "nothing selected"
    if attrs.get("type") == "checkbox":
        return "checked" in attrs
    value = attrs.get("value")
    if attrs.get("type") == "number":
        return None if value is None else float(value)
    return value or None


def test_the_retrain_form_has_every_training_option_with_its_default() -> None:
    """Every option a README recipe may use is on the form (the offline one needs the
    learning rate), each showing the default the API applies, and the fine-tune's own."""
    from shared.training_params import FINE_TUNE_DEFAULTS, TrainingParams

    controls = form_controls()
    assert set(controls) == set(TrainingParams.model_fields)
    for name, (tag, attrs, selected) in controls.items():
        field = TrainingParams.model_fields[name]
        if field.is_required():
            continue
        default = field.get_default(call_default_factory=True)
        assert shown_default(tag, attrs, selected) == default, name
        if "data-fine-tune" in attrs:
            assert float(attrs["data-fine-tune"] or "nan") == FINE_TUNE_DEFAULTS[name], name
    # A fine-tune's defaults are filled in, but for its base weights: those are not sent.
    assert {n for n, (_, a, _) in controls.items() if "data-fine-tune" in a} == \
        set(FINE_TUNE_DEFAULTS) - {"base_weights"}
    assert controls["base_weights"][1]["data-scope"] == "new"


def test_the_favicon_is_served_and_linked(client: TestClient) -> None:
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/x-icon"
    assert icon.content[:4] == b"\x00\x00\x01\x00"  # an ICO file
    assert '<link rel="icon" href="/favicon.ico"' in client.get("/").text
    assert 'href="/favicon.ico"' in client.get("/docs").text


def test_redoc_is_served_from_the_package_and_may_load_nothing_from_elsewhere(
    client: TestClient,
) -> None:
    """ReDoc draws its maker's logo from a CDN whatever its options: the page's policy
    keeps the browser from asking for it (the browser test records what leaves)."""
    page = client.get("/redoc")
    assert page.status_code == 200 and "<redoc " in page.text
    assert not re.search(r"(src|href)=\"(https?:)?//", page.text)
    assert "fonts.googleapis" not in page.text and 'href="/favicon.ico"' in page.text
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "img-src 'self' data:;" in policy
    script = re.search(r'<script src="([^"]+)">', page.text)
    assert script and client.get(script.group(1)).status_code == 200


def test_the_predict_button_does_not_say_again_before_any_prediction() -> None:
    html = (STATIC / "index.html").read_text()
    assert '<button type="submit" id="predict-button">Predict</button>' in html
