"""The HTTP API against a real Redis: tokens and roles, CSRF, sign-in limits, uploads counted while
they stream, zips checked, results streamed, review, labels and models.

starlette's TestClient drives the app in-process; the streaming limit is tested at the ASGI level,
where the test controls how the body arrives. The browser tests (tests/test_desk.py) run a real
server, a real worker and a real retrain.
"""

from __future__ import annotations

import asyncio
import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from config.errors import ConfigError
from config.settings import Settings
from producer.web import create_app
from producer.web.auth import COOKIE
from storage.jobs import ItemResult
from storage.priority import lists
from storage.registry import Registry, VersionInfo

TOKENS = {"submit": "s" * 24, "review": "r" * 24, "admin": "a" * 24}
SETTINGS = ",".join(f"{role}-user:{role}:{token}" for role, token in TOKENS.items())


def png(shade: int = 0, size: int = 28) -> bytes:
    image = Image.new("L", (size, size), 255)
    image.paste(shade, (8, 6, 20, 22))  # a blot of ink
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def bearer(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


def zipped(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


@pytest.fixture()
def settings(redis_url: str) -> Settings:
    return Settings(redis_url=redis_url, api_tokens=SETTINGS, api_session_key="k" * 32, chunk_size=4)


@pytest.fixture()
def api(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), base_url="https://desk.test") as client:
        yield client


def submit(api: TestClient, files: list[tuple[str, bytes]]) -> dict[str, Any]:
    response = api.post("/v1/jobs", headers=bearer("submit"), files=[("files", f) for f in files])
    assert response.status_code == 202, response.text
    return response.json()


def finish(api: TestClient, job: str, review: bool = True) -> None:
    """Write a result for every item of ``job`` as a worker would (digest from the manifest)."""
    jobs = api.app.state.desk.client.jobs  # type: ignore[attr-defined]
    items = list(jobs.manifest.items(job, 0, jobs.status(job).total))
    jobs.write_results(
        ItemResult(job, index, {"item": path, "digest": digest, "label": index % 10, "confidence": 0.3 + index / 100,
                                "top3": [[index % 10, 0.3], [1, 0.2], [2, 0.1]], "error": None, "review": review})
        for index, digest, path in items
    )  # fmt: skip


def test_every_endpoint_refuses_a_missing_or_wrong_token(api: TestClient) -> None:
    described = api.app.openapi()["paths"]  # type: ignore[attr-defined]
    endpoints = [(m.upper(), p) for p, ops in described.items() for m in ops] + [("GET", "/v1/openapi.json")]
    assert len(endpoints) >= 15 and all(p.startswith("/v1/") for _, p in endpoints)
    for method, template in endpoints:
        path = template.replace("{job}", "j1").replace("{index}", "0").replace("{version}", "v1")
        for headers in ({}, {"Authorization": "Bearer " + "w" * 24}, {"Authorization": "Basic " + TOKENS["admin"]}):
            response = api.request(method, path, headers=headers)
            assert response.status_code == 401, (method, path, headers, response.text)
    for page in ("/desk", "/jobs", "/models"):
        assert api.get(page, headers={"Accept": "application/json"}).status_code == 401
        redirect = api.get(page, headers={"Accept": "text/html"}, follow_redirects=False)
        assert redirect.status_code == 303 and redirect.headers["location"].startswith("/signin")
    assert api.get("/healthz").json() == {"ok": True}  # the one open endpoint
    assert "/v1/jobs" in api.get("/v1/openapi.json", headers=bearer("submit")).json()["paths"]


def test_roles_include_the_ones_below(api: TestClient) -> None:
    assert api.get("/v1/review", headers=bearer("submit")).status_code == 403
    assert api.get("/v1/review", headers=bearer("review")).status_code == 200
    assert api.get("/v1/jobs", headers=bearer("admin")).status_code == 200
    assert api.post("/v1/models/v1/promote", headers=bearer("review")).status_code == 403
    assert api.post("/v1/retrain", headers=bearer("submit")).status_code == 403


def test_files_and_zips_submitted_and_results_streamed(api: TestClient) -> None:
    archive = zipped({"folder/a.png": png(0), "folder/b.png": png(40), "notes.txt": b"skipped", "x/": b""})
    files = [("one.png", png(10)), ("two.png", png(20)), ("scans.zip", archive), ("bad.png", b"not a png")]
    report = submit(api, files)
    assert report["items"] == 4 and [r["path"] for r in report["rejected"]] == ["bad.png"]
    job = report["job"]
    assert api.get(f"/v1/jobs/{job}", headers=bearer("submit")).json()["state"] == "queued"
    finish(api, job)
    with api.stream("GET", f"/v1/jobs/{job}/results", headers=bearer("submit")) as response:
        assert response.status_code == 200 and "content-length" not in response.headers  # streamed
        rows = [json.loads(line) for line in response.iter_lines() if line]
    assert [r["item"] for r in rows] == ["one.png", "two.png", "scans.zip/folder/a.png", "scans.zip/folder/b.png"]
    lines = api.get(f"/v1/jobs/{job}/results?format=csv", headers=bearer("submit")).text.splitlines()
    assert lines[0] == "item,label,confidence,top3,model_version,error" and len(lines) == 5
    assert lines[3].startswith("scans.zip/folder/a.png,2,0.32,2:0.3000;1:0.2000;2:0.1000")
    listed = api.get("/v1/jobs", headers=bearer("submit")).json()
    assert [j["job"] for j in listed] == [job] and listed[0]["state"] == "complete"
    assert api.post(f"/v1/jobs/{job}/cancel", headers=bearer("submit")).json()["was_complete"] is True
    desk = api.app.state.desk  # type: ignore[attr-defined]
    high, normal, low = lists(desk.client.keys, desk.settings.queue)
    before = [desk.client.redis.llen(k) for k in (high, normal, low)]
    submit_to(api, "/v1/jobs?priority=high&chunk_size=1", [("a.png", png()), ("b.png", png(9))])
    assert [desk.client.redis.llen(k) for k in (high, normal, low)] == [before[0] + 2, before[1], before[2]]
    assert api.post("/v1/jobs?priority=urgent", headers=bearer("submit")).status_code == 422
    assert api.get("/v1/jobs/nope", headers=bearer("submit")).status_code == 404


def test_zip_bombs_and_overfull_zips_are_refused(api: TestClient, settings: Settings) -> None:
    bomb = zipped({"bomb.png": b"\0" * 8_000_000, "ok.png": png()}, zipfile.ZIP_DEFLATED)
    report = submit(api, [("b.zip", bomb), ("broken.zip", b"PK\x03\x04 not really")])
    assert report["items"] == 1
    reasons = {r["path"]: r["error"] for r in report["rejected"]}
    assert "zip bomb" in reasons["b.zip/bomb.png"] and "not a readable zip" in reasons["broken.zip"]
    with TestClient(create_app(settings.replace(api_max_files=3)), base_url="https://desk.test") as small:
        many = zipped({f"{i}.png": png() for i in range(4)})
        response = small.post("/v1/jobs", headers=bearer("submit"), files=[("files", ("m.zip", many))])
        assert response.status_code == 413 and "INKQ_API_MAX_FILES" in response.text
    assert api.app.state.desk.client.redis.zcard(api.app.state.desk.client.keys.web_jobs) == 1  # type: ignore[attr-defined]


def test_upload_limit_is_enforced_while_the_body_streams(settings: Settings) -> None:
    """A body without Content-Length is cut off after the limit: the rest is never read."""
    app = create_app(settings.replace(api_max_upload_bytes=200_000))
    chunk, pulled, sent = 16_384, [0], []
    head = b'--B\r\nContent-Disposition: form-data; name="files"; filename="big.png"\r\n\r\n'

    async def receive() -> dict[str, Any]:
        pulled[0] += 1
        if pulled[0] > 1000:  # 16 MB: the app should have stopped long before
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": head if pulled[0] == 1 else b"x" * chunk, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = [
        (b"authorization", f"Bearer {TOKENS['submit']}".encode()),
        (b"content-type", b"multipart/form-data; boundary=B"),
    ]
    scope = {"type": "http", "method": "POST", "path": "/v1/jobs", "raw_path": b"/v1/jobs", "query_string": b"",
             "headers": headers, "scheme": "https", "server": ("desk.test", 443), "client": ("127.0.0.1", 1),
             "http_version": "1.1", "root_path": "", "app": app}  # fmt: skip
    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    assert sent[0]["status"] == 413
    assert pulled[0] <= 200_000 // chunk + 3  # stopped at the limit, not at the end of the body
    with TestClient(app, base_url="https://desk.test") as client:  # a declared length over it: not read at all
        response = client.post("/v1/jobs", headers=bearer("submit"), files=[("f", ("a.png", b"x" * 300_000))])
        assert response.status_code == 413 and "INKQ_API_MAX_UPLOAD_BYTES" in response.text


def sign_in(api: TestClient, role: str, where: str = "/models") -> str:
    response = api.post("/signin", data={"token": TOKENS[role], "next": where}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == where
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" in cookie
    assert TOKENS[role] not in cookie
    page = api.get(where).text
    return page.split('name="csrf" content="', 1)[1].split('"', 1)[0]


def test_browser_sessions_refuse_cross_site_posts(api: TestClient) -> None:
    job = submit(api, [("one.png", png())])["job"]
    csrf = sign_in(api, "admin")
    assert len(csrf) > 20
    cancel = f"/v1/jobs/{job}/cancel"
    assert api.post(cancel).status_code == 403  # a form post from anywhere: no CSRF token
    assert api.post(cancel, data={"csrf": "forged"}).status_code == 403
    evil = api.post(cancel, headers={"X-CSRF-Token": csrf, "Origin": "https://evil.example"})
    assert evil.status_code == 403 and "cross-site" in evil.text
    assert api.post(cancel, headers={"X-CSRF-Token": csrf, "Origin": "https://desk.test"}).status_code == 200
    assert api.get(f"/v1/jobs/{job}").status_code == 200  # reads need no CSRF token
    elsewhere = {"Origin": "https://evil.example"}
    assert api.post("/signin", data={"token": TOKENS["admin"]}, headers=elsewhere).status_code == 403
    api.cookies.set(COOKIE, api.cookies[COOKIE][:-2] + "xx")  # a tampered cookie is no session
    assert api.get(f"/v1/jobs/{job}").status_code == 401


def test_failed_sign_ins_are_rate_limited(api: TestClient, settings: Settings) -> None:
    for _ in range(settings.api_signin_failures):
        assert api.post("/signin", data={"token": "w" * 24}).status_code == 401
    assert api.post("/signin", data={"token": TOKENS["review"]}).status_code == 429  # even the right one
    desk = api.app.state.desk  # type: ignore[attr-defined]
    assert 0 < desk.client.redis.ttl(desk.client.keys.signin_failures("testclient")) <= 300  # the window ends
    assert api.get("/v1/review", headers=bearer("review")).status_code == 200  # bearer use is unaffected


def test_tokens_stay_out_of_reprs_and_logs(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    from producer.web.auth import parse_tokens

    assert not any(t in repr(settings) for t in TOKENS.values())
    assert not any(t in repr(parse_tokens(settings)) for t in TOKENS.values())
    with TestClient(create_app(settings), base_url="https://desk.test") as client:
        client.post("/signin", data={"token": TOKENS["admin"]})
        client.get("/v1/jobs", headers=bearer("submit"))
    assert not any(t in caplog.text for t in TOKENS.values())


def test_review_queue_corrections_and_labels(api: TestClient) -> None:
    job = submit(api, [(f"{i}.png", png(i * 20)) for i in range(4)])["job"]
    finish(api, job)
    queue = api.get("/v1/review", headers=bearer("review")).json()
    assert [r["index"] for r in queue] == [0, 1, 2, 3]  # least confident first
    image = api.get(f"/v1/review/{job}/2/image", headers=bearer("review"))
    shown = Image.open(io.BytesIO(image.content)).convert("RGB")
    assert image.headers["content-type"] == "image/png" and shown.size == (112, 112)  # enlarged 4x
    assert shown.getpixel((8 * 4 - 1, 50)) == (37, 99, 235) and shown.getpixel((4, 4)) == (255, 255, 255)  # the box
    fixed = api.post(f"/v1/review/{job}/0", json={"label": "7"}, headers=bearer("review")).json()
    assert (fixed["label"], fixed["was"]) == (7, 0)
    assert api.post(f"/v1/review/{job}/1", json={"label": "x"}, headers=bearer("review")).status_code == 422
    assert api.post(f"/v1/review/{job}/3/unreadable", headers=bearer("review")).status_code == 200
    assert [r["index"] for r in api.get("/v1/review", headers=bearer("review")).json()] == [1, 2]
    assert api.get("/v1/labels", headers=bearer("review")).json()["count"] == 1
    layout = zipped({"set/4/a.png": png(5), "set/5/b.png": png(60)})
    added = api.post("/v1/labels", headers=bearer("review"), files=[("files", ("l.zip", layout))]).json()
    assert (added["stored"], added["labels_total"]) == (2, 3)


def test_models_promote_and_roll_back(api: TestClient) -> None:
    desk = api.app.state.desk  # type: ignore[attr-defined]
    registry: Registry = desk.registry
    registry.publish(b"w1", VersionInfo(metrics={"test_accuracy": 0.98}, status="promoted"))
    gate = {"base_heldout_accuracy_after": 0.97, "new_heldout_accuracy_after": 0.9}
    registry.publish(b"w2", VersionInfo(parent="v1", metrics=gate), make_current=False)
    view = api.get("/v1/models", headers=bearer("review")).json()
    assert view["current"] == "v1" and view["versions"][1]["figures"] == {"base": 0.97, "labelled": 0.9}
    assert api.post("/v1/models/v2/promote", headers=bearer("admin")).json() == {"current": "v2"}
    assert api.post("/v1/models/rollback", headers=bearer("admin")).json()["current"] == "v1"
    assert api.post("/v1/models/v9/promote", headers=bearer("admin")).status_code == 404
    with registry.lock(30, "a retrain elsewhere"):
        busy = api.post("/v1/models/v2/promote", headers=bearer("admin"))
        assert busy.status_code == 409 and "running" in busy.text
    sign_in(api, "admin")
    page = api.get("/models").text
    assert "<svg" in page and "<polyline" in page and 'data-post="/v1/models/v2/promote"' in page


def test_tokens_are_required_and_checked_at_start(redis_url: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no API tokens"):
        create_app(Settings(redis_url=redis_url))
    for bad in ("alice:root:" + "x" * 24, "alice:admin:short", "a:admin:" + "x" * 24 + ",a:review:" + "y" * 24):
        with pytest.raises(ConfigError) as refused:
            create_app(Settings(redis_url=redis_url, api_tokens=bad))
        assert "x" * 24 not in str(refused.value)  # the message names the entry, never the token
    listed = tmp_path / "tokens"
    listed.write_text("# desk users\nbea:review:" + "b" * 24 + "\n")
    with TestClient(create_app(Settings(redis_url=redis_url, api_tokens_file=str(listed)))) as client:
        assert client.get("/v1/review", headers={"Authorization": "Bearer " + "b" * 24}).status_code == 200


def test_jobs_page_shows_progress_and_downloads(api: TestClient) -> None:
    job = submit(api, [("one.png", png()), ("two.png", png(30))])["job"]
    sign_in(api, "submit", "/jobs")
    page = api.get("/jobs").text
    assert job in page and '<progress max="2" value="0">' in page and f"/v1/jobs/{job}/results?format=csv" in page
    assert api.get("/models").status_code == 403  # a submitter sees no models


@pytest.mark.integration
@pytest.mark.slow
def test_api_benchmark_runs_at_a_tiny_size(mnist_root: Path) -> None:
    """`python -m bench.api` at 40 images, so the benchmark behind BENCHMARKS.md cannot rot."""
    from bench.api import run

    result = run(40, mnist_root)
    assert set(result["images_per_second"]) == {"producer submit", "API, one zip", "API, multipart files"}
    assert all(rate > 0 for rate in result["images_per_second"].values())


def test_field_jobs_through_the_api(api: TestClient) -> None:
    """`?field=true` and the rules of `producer submit --field`; a field's characters boxed, the
    uncertain one in orange; a field corrected with its text; CSV in the field columns."""
    assert api.post("/v1/jobs?length=5", headers=bearer("submit"), files=[("f", ("a.png", png()))]).status_code == 422
    bad = api.post("/v1/jobs?field=true&length=x", headers=bearer("submit"), files=[("f", ("a.png", png()))])
    assert bad.status_code == 422 and "--length" in bad.text
    job = submit_to(api, "/v1/jobs?field=true&length=2-5", [("zip.png", png(0, 40))])["job"]
    jobs = api.app.state.desk.client.jobs  # type: ignore[attr-defined]
    assert jobs.reading(job)["kind"] == "field"
    ((index, digest, path),) = jobs.manifest.items(job, 0, 1)
    chars = [
        {"label": 1, "confidence": 0.95, "top3": [[1, 0.95]], "box": [6, 4, 14, 30]},
        {"label": 2, "confidence": 0.3, "top3": [[2, 0.3], [7, 0.25]], "box": [20, 4, 30, 30]},
    ]
    reasons = ["character 2 uncertain (0.30)"]
    body = {"item": path, "digest": digest, "kind": "field", "text": "12", "label": None, "confidence": 0.28,
            "chars": chars, "review": True, "review_reasons": reasons, "error": None}  # fmt: skip
    jobs.write_results([ItemResult(job, index, body)])
    (row,) = api.get("/v1/review", headers=bearer("review")).json()
    assert row["text"] == "12" and row["chars"][1]["top3"][1] == [7, 0.25]
    image = Image.open(io.BytesIO(api.get(f"/v1/review/{job}/0/image", headers=bearer("review")).content))
    shown = image.convert("RGB")
    assert shown.size == (80, 80)  # 40 px enlarged twice
    assert shown.getpixel((6 * 2 - 1, 30)) == (37, 99, 235) and shown.getpixel((20 * 2 - 1, 30)) == (217, 119, 6)
    fixed = api.post(f"/v1/review/{job}/0", json={"label": "17"}, headers=bearer("review")).json()
    assert (fixed["label"], fixed["was"]) == ("17", "12")
    lines = api.get(f"/v1/jobs/{job}/results?format=csv", headers=bearer("submit")).text.splitlines()
    assert lines[0] == "item,text,confidence,review,model_version,error" and lines[1].startswith("zip.png,12,")


def submit_to(api: TestClient, url: str, files: list[tuple[str, bytes]]) -> dict[str, Any]:
    response = api.post(url, headers=bearer("submit"), files=[("files", f) for f in files])
    assert response.status_code == 202, response.text
    return dict(response.json())


def test_the_web_server_never_imports_torch() -> None:
    """The desk runs where the producer runs, on machines without a model: a retrain is a child process."""
    import subprocess
    import sys

    code = "import sys, producer.web, producer.cli; assert 'torch' not in sys.modules, 'torch imported'"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
