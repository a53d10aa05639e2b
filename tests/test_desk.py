"""The review desk in a real browser: headless Chromium (Debian's package) driven by Playwright,
against `producer serve`, a real worker and real Redis; the retrain runs the real `trainer retrain`.

Screenshots of the review queue and the models page go to INKQ_SCREENSHOTS when it is set (the
README's come from here: INKQ_SCREENSHOTS=bench/results).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from playwright.sync_api import expect

from bench.api import zip_folder
from bench.synth import STYLES, DigitPool, outlined, write_digits, write_fields
from producer.local import free_port
from storage.connection import connect
from storage.keys import Keys
from storage.labels import Labels
from storage.registry import Registry, VersionInfo
from tests.conftest import BIN, MnistArrays, WorkerProcess, unavailable, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ADMIN = "desk-admin-" + "a" * 24
SUBMIT = "desk-submit-" + "s" * 24


@dataclass
class Stack:
    url: str
    env: dict[str, str]
    redis: redis.Redis
    worker: WorkerProcess

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60)


@pytest.fixture(scope="module")
def stack(
    redis_server: str,
    small_model: tuple[bytes, dict[str, Any]],
    mnist_root: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """Clean Redis, the small model current, one worker that sends every result to review, and the desk."""
    client = redis.Redis.from_url(redis_server)
    client.flushall()
    weights, meta = small_model
    Registry(connect(redis_server), Keys()).publish(weights, VersionInfo(**meta))
    tmp = tmp_path_factory.mktemp("desk")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("INKQ_")} | {
        "INKQ_REDIS_URL": redis_server,
        "INKQ_COMPILE_CACHE_DIR": str(tmp / "compile-cache"),
        "INKQ_API_TOKENS": f"ada:admin:{ADMIN},sam:submit:{SUBMIT}",
        "INKQ_API_PORT": str(port),
        "INKQ_REVIEW_THRESHOLD": "1.01",  # every reading goes to review
        "INKQ_DATA_ROOT": str(mnist_root),
        "INKQ_DEVICE": "cpu",
        "INKQ_RETRAIN_EPOCHS": "1",
        "INKQ_VAL_SIZE": "500",
        "INKQ_BASE_TOLERANCE": "0.05",
        "PYTHONUNBUFFERED": "1",
    }
    worker = WorkerProcess(env, "desk", tmp / "worker.log", {"compile": "false", "precision": "fp32"})
    with (tmp / "serve.log").open("wb") as log:
        server = subprocess.Popen([str(BIN / "producer"), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert server.poll() is None, (tmp / "serve.log").read_text()
        try:
            return httpx.get(url + "/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(healthy, 60, "`producer serve` to answer /healthz", interval=0.2)
        yield Stack(url, env, client, worker)
    finally:
        server.terminate()
        server.wait(30)
        worker.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        unavailable("chromium is not installed (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield launched
        launched.close()


def screenshot(page: Any, name: str) -> None:
    folder = os.environ.get("INKQ_SCREENSHOTS")
    if folder:
        page.screenshot(path=str(Path(folder) / name), full_page=True)


def status_ends(page: Any, text: str) -> None:
    """Wait for the desk's status line to report ``text`` (read by Playwright, not evaluated in the
    page: the desk's Content-Security-Policy forbids eval)."""
    expect(page.locator("#status")).to_have_text(re.compile(re.escape(text) + "$"), timeout=30_000)


def sign_in(browser: Any, stack: Stack, where: str) -> Any:
    page = browser.new_page(viewport={"width": 1100, "height": 640})
    page.set_default_timeout(30_000)
    page.goto(stack.url + where)
    assert "/signin" in page.url  # not signed in yet
    page.fill("#token", ADMIN)
    page.click("#signin")
    page.wait_for_url(stack.url + where)
    return page


@pytest.mark.timeout(900)  # the first test pays for the module's stack: a model trained, a worker started
def test_review_queue_corrected_from_the_keyboard(
    stack: Stack, browser: Any, mnist_test: MnistArrays, tmp_path: Path
) -> None:
    images, truths = mnist_test[0][:24], mnist_test[1][:24]
    truth = {Path(p).name: label for p, label in write_digits(tmp_path / "scans", images, truths).items()}
    with stack.api() as api:
        upload = api.post("/v1/jobs", files={"scans": ("scans.zip", zip_folder(tmp_path / "scans"))})
        assert upload.status_code == 202, upload.text
        job = upload.json()["job"]
        wait_for(lambda: api.get(f"/v1/jobs/{job}").json()["state"] == "complete", 120, "the job to complete")
        rows = api.get(f"/v1/jobs/{job}/results").text.splitlines()
    assert len(rows) == 24

    page = sign_in(browser, stack, "/desk")
    page.wait_for_selector("#item:not([hidden])")
    labelled: dict[str, int] = {}
    started = time.perf_counter()
    for step in range(14):
        if step == 4:
            screenshot(page, "desk-review.png")
        name = page.inner_text("#where").split(" ", 1)[0].rsplit("/", 1)[-1]
        shown = page.inner_text("#reading")
        answer = page.locator("#answer")
        if step == 5:
            answer.press("s")  # skip: stays in the queue, nothing stored
            status_ends(page, ": skipped")
            continue
        if step == 6:
            answer.press("x")  # unreadable, then undone: the item comes back to decide again
            status_ends(page, ": unreadable")
            answer.press("z")
            expect(page.locator("#status")).to_have_text(re.compile(r"^undone: "), timeout=30_000)
            assert page.inner_text("#where").split(" ", 1)[0].endswith(name)
        if str(truth[name]) == shown:
            answer.press("Enter")  # accept the reading
        else:
            answer.type(str(truth[name]))
            answer.press("Enter")
        labelled[name] = truth[name]
        status_ends(page, f"{name}: {truth[name]}")
    per_item = (time.perf_counter() - started) / 14
    # 20 items a minute leaves a clerk 3 s an item; the desk itself (keys, requests, next image)
    # must take a small part of that, measured here including the test's own round trips.
    assert per_item < 1.0, per_item
    print(f"desk: {per_item * 1000:.0f} ms per item from the keyboard")
    stored = Labels(stack.redis, Keys()).all()
    assert {Path(s.path).name: s.label for s in stored} == labelled  # every decision, as typed
    assert all(s.source == f"correction:{job}" for s in stored)
    remaining = httpx.get(stack.url + "/v1/review", headers={"Authorization": f"Bearer {ADMIN}"}).json()
    assert len(remaining) == 24 - len(labelled)
    page.close()


def test_fields_corrected_with_their_text(stack: Stack, browser: Any, mnist_test: MnistArrays, tmp_path: Path) -> None:
    """A field job (`?field=true`) read by the worker: each field shown with its characters'
    boxes, corrected by typing its whole text."""
    pool = DigitPool(mnist_test[0][2000:4000], mnist_test[1][2000:4000])
    written = write_fields(tmp_path / "fields", pool, 3, STYLES["comb"], seed=7)
    truth = {Path(p).name: text for p, text in written.items()}
    with stack.api() as api:
        upload = api.post("/v1/jobs?field=true&length=5", files={"f": ("fields.zip", zip_folder(tmp_path / "fields"))})
        assert upload.status_code == 202, upload.text
        job = upload.json()["job"]
        wait_for(lambda: api.get(f"/v1/jobs/{job}").json()["state"] == "complete", 120, "the field job to complete")
    page = sign_in(browser, stack, f"/desk?job={job}")
    for step in range(3):
        page.wait_for_selector("#item:not([hidden])")
        name = page.inner_text("#where").split(" ", 1)[0].rsplit("/", 1)[-1]
        assert page.locator("#reading .char").count() >= 1  # the reading, character by character
        if step == 0:
            screenshot(page, "desk-field.png")
        page.locator("#answer").type(truth[name])
        page.locator("#answer").press("Enter")
        status_ends(page, f"{name}: {truth[name]}")
    page.wait_for_selector("#empty:not([hidden])")
    fields = {Path(s.path).name: s.text for s in Labels(stack.redis, Keys()).all() if s.source == f"correction:{job}"}
    assert fields == truth
    page.close()


@pytest.mark.timeout(900)
def test_retrain_from_the_models_page(stack: Stack, browser: Any, mnist_test: MnistArrays, tmp_path: Path) -> None:
    """More labels in a new style (outlined strokes) through the API, then the admin's button: the
    real `trainer retrain` runs and its version appears, with its gate figures, on the page."""
    images, truths = mnist_test[0][1000:1080], mnist_test[1][1000:1080]
    write_digits(tmp_path / "labels", images, truths, style=outlined, by_label=True)
    with stack.api() as api:
        added = api.post("/v1/labels", files={"l": ("labels.zip", zip_folder(tmp_path / "labels"))})
        assert added.status_code == 200 and added.json()["stored"] == 80, added.text
        with httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {SUBMIT}"}) as submitter:
            assert submitter.post("/v1/retrain").status_code == 403  # admins only
    page = sign_in(browser, stack, "/models")
    assert page.inner_text("#current") == "v1"
    page.click("#retrain")
    page.wait_for_selector('tr[data-version="v2"]', timeout=800_000)  # the page reloads when it is done
    state = page.inner_text("#retrain-state")
    assert "done" in state and "v2" in state, state
    info = Registry(stack.redis, Keys()).info("v2")
    assert info.parent == "v1" and "new_heldout_accuracy_after" in info.metrics
    if info.status == "promoted":  # the worker switches: the page shows it serving v2

        def serving() -> bool:
            page.reload()
            return stack.worker.name in page.inner_text('tr[data-version="v2"]')

        wait_for(serving, 120, "the worker to serve v2", interval=1)
        assert page.inner_text("#current") == "v2"
    assert page.locator("svg.plot circle").count() >= 3  # v1's base figure, v2's two
    screenshot(page, "desk-models.png")
    page.close()
