"""The web demo (honestface/apps/demo.py): its functions without a browser (restore the astronaut with a tiny model,
aligned faces found automatically, bad uploads as one-line messages), and the page itself driven in headless
Chromium (Debian's `chromium` + `chromium-driver` through Selenium; skipped with a message when they are absent;
`.ci/run` installs them). HONESTFACE_UPDATE_SCREENSHOT=1 also writes the README's docs/images/demo.png."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from honestface.apps.demo import DemoError, ModelCache, available_models, read_upload, restore
from honestface.data.samples import astronaut

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pipe(tiny_honestface_dir: Path):
    return ModelCache().get(str(tiny_honestface_dir))


def test_restore_changes_the_photo_only_inside_the_face(pipe, tmp_path: Path) -> None:
    photo = astronaut()
    res = restore(pipe, photo, output_dir=tmp_path)
    assert res.mode == "photo" and len(res.rows) == 1 and res.rows[0][3] == "yes"
    changed = np.any(res.output != photo, axis=2)
    assert changed.any() and not changed[res.mask == 0].any()  # every pixel outside the pasted face is kept
    x0, y0, x1, y1 = (float(v) for v in res.rows[0][1].split(", "))
    assert 150 < x0 < x1 < 300 and 30 < y0 < y1 < 200  # the astronaut's face, not the patch or the flag
    assert np.array_equal(np.asarray(Image.open(res.path)), res.output)  # the download is the shown image, lossless
    assert (res.boxes != photo).any()  # the box is drawn


def test_references_give_identity_similarity_and_honesty_gain(pipe, tmp_path: Path) -> None:
    photo = astronaut()
    res = restore(pipe, photo, references=[photo, photo[:, ::-1]], output_dir=tmp_path,
                  reference_names=["me.png", "mirrored.png"])
    row = res.rows[0]
    assert row[4] == "me.png, mirrored.png"  # both references were matched to the face
    out_sim, in_sim, gain = (float(v) for v in row[5:8])
    assert in_sim > 0.95  # the input face against itself (embedded from the crop vs from the photo)
    assert gain == pytest.approx(out_sim - in_sim, abs=2e-3)


def test_an_aligned_face_is_found_automatically(pipe, tmp_path: Path) -> None:
    from honestface.face import extract_faces

    crop = extract_faces(astronaut(), pipe.detector, size=256, template="ffhq")[0].crop
    res = restore(pipe, crop, output_dir=tmp_path)
    assert res.mode == "aligned" and res.output.shape == crop.shape and res.rows[0][1] == "whole image"
    assert restore(pipe, astronaut(), output_dir=tmp_path).mode == "photo"  # square too, but not on the template


def test_command_refuses_a_missing_model_folder(capsys) -> None:
    from honestface.apps.cli.demo import main

    assert main(["--model", "no/such/folder/here"]) == 2
    assert capsys.readouterr().err.strip() == ("error: --model no/such/folder/here: no such folder (pass a saved "
                                               "model folder or a Hub id org/name)")


def test_the_quickstart_export_is_offered_when_it_exists(tmp_path: Path, tiny_honestface_dir: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert available_models() == []
    export = tmp_path / "outputs" / "quickstart" / "runs" / "honestface" / "final"  # honestface-quickstart's
    export.parent.mkdir(parents=True)
    export.symlink_to(tiny_honestface_dir)
    assert available_models() == ["outputs/quickstart/runs/honestface/final"]
    assert available_models(["org/name"]) == ["org/name", "outputs/quickstart/runs/honestface/final"]


def test_bad_uploads_and_models_give_one_line_messages(pipe, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a photo")
    with pytest.raises(DemoError, match=r"photo notes.txt is not an image \(upload a JPEG"):
        read_upload(text)
    big = tmp_path / "big.png"
    Image.new("RGB", (400, 300)).save(big)
    with pytest.raises(DemoError, match="400 x 300 .* takes up to 0"):
        read_upload(big, max_pixels=100_000)
    assert read_upload(big).shape == (300, 400, 3)
    with pytest.raises(DemoError, match="no face found"):
        restore(pipe, np.full((200, 300, 3), 128, np.uint8), output_dir=tmp_path)
    with pytest.raises(DemoError, match="No model to run: start the demo with --model"):
        ModelCache().get(None)
    with pytest.raises(DemoError, match="is not a HonestFace or VSPBFR model folder"):
        ModelCache().get(str(tmp_path))
    assert available_models(["a"], quickstart=tmp_path) == ["a"]  # no export there: not offered
    assert not list(tmp_path.glob("honestface-demo-*"))  # failed requests write nothing


# ------------------------------------------------------------------------------------------------ in the browser
def _browser():
    """Headless Debian chromium through its chromedriver (no browser download), or a skip saying what is missing."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (requirements.lock.txt)")
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip("Chromium is not installed (apt-get install chromium chromium-driver; .ci/run does it)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1300"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))


def _serving(url: str, server: subprocess.Popen) -> bool:
    if server.poll() is not None:
        raise AssertionError(f"the demo exited with {server.returncode}: {server.stdout.read()[-3000:]}")
    try:
        return urllib.request.urlopen(url, timeout=5).status == 200
    except OSError:
        return False


def _wait(browser, condition, timeout: float = 60.0):
    """The first true value of `condition()`, polled while the page renders (missing / replaced elements: retry)."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            value = condition()
        except (NoSuchElementException, StaleElementReferenceException):
            value = None
        if value:
            return value
        time.sleep(0.25)
    page = browser.find_element("tag name", "body").text[:500] if browser.current_url.startswith("http") else ""
    raise AssertionError(f"timed out after {timeout:.0f} s; page text: {page!r}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_demo_in_headless_chromium(tiny_honestface_dir: Path, tmp_path: Path) -> None:
    """The README's command (`python scripts/demo.py --model DIR`, from another folder) serves a page that refuses a
    text file with a message, then restores the astronaut with a reference: the shown output differs from the
    input only around the face, and the table names the matched reference."""
    pytest.importorskip("gradio", reason="gradio is not installed (pip install 'honestface[demo]')")
    browser = _browser()
    photo, reference, text = tmp_path / "astronaut.png", tmp_path / "reference.jpg", tmp_path / "notes.txt"
    Image.fromarray(astronaut()).save(photo)
    Image.fromarray(astronaut()[:300, 60:420]).save(reference)  # another photo of her (not square, not aligned)
    text.write_text("not a photo")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny-honestface").symlink_to(tiny_honestface_dir)  # a short name for the screenshot
    port = _free_port()
    server = subprocess.Popen([sys.executable, str(REPO / "scripts" / "demo.py"), "--model", "models/tiny-honestface",
                               "--port", str(port)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        url = f"http://127.0.0.1:{port}"
        _wait(browser, lambda: _serving(url, server), timeout=120)
        browser.get(url)

        def by_id(name: str):
            return browser.find_element("id", name)

        def upload(box: str, path: Path) -> None:
            _wait(browser, lambda: by_id(box).find_elements("css selector", "input[type=file]"))[0].send_keys(str(path))

        upload("photo", text)  # not an image: one line in the page, and the server keeps serving
        by_id("restore").click()
        _wait(browser, lambda: "notes.txt is not an image" in by_id("status").text)
        by_id("photo").find_element("css selector", "button[aria-label='Clear']").click()
        upload("photo", photo)
        upload("references", reference)
        by_id("restore").click()
        _wait(browser, lambda: "Restored 1 of 1 face" in by_id("status").text)
        sources = _wait(browser, lambda: [i.get_attribute("src") for i in
                                          by_id("compare").find_elements("css selector", "img")][1:])
        shown = np.asarray(Image.open(BytesIO(urllib.request.urlopen(sources[-1], timeout=30).read())).convert("RGB"))
        cells = _wait(browser, lambda: [c for c in (td.get_attribute("textContent").strip() for td in
                                                    by_id("faces").find_elements("css selector", "td")) if c])
        browser.save_screenshot(str(tmp_path / "demo.png"))
        if os.environ.get("HONESTFACE_UPDATE_SCREENSHOT") == "1":
            with Image.open(tmp_path / "demo.png") as shot:  # 256 colours: a quarter of the size, text stays sharp
                shot.convert("RGB").quantize(256).save(REPO / "docs" / "images" / "demo.png", optimize=True)
    finally:
        browser.quit()
        server.terminate()
        log = server.communicate(timeout=30)[0]
    assert "Traceback" not in log, log[-3000:]
    original = astronaut()
    changed = np.any(shown != original, axis=2)
    x0, y0, x1, y1 = (float(v) for v in next(c for c in cells if c.count(",") == 3).split(", "))
    mx, my = (x1 - x0) / 4, (y1 - y0) / 4  # the pasted face's soft mask reaches a little past the detector's box
    inside = np.zeros_like(changed)
    inside[int(y0 - my):int(y1 + my) + 1, int(x0 - mx):int(x1 + mx) + 1] = True
    assert changed[inside].mean() > 0.2 and not changed[~inside].any()
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    assert "reference.jpg" in cells  # the uploaded reference was matched to her face, its similarity shown
