"""The HTTP API, version 1: submit, job status, results, cancel, review, labels, models.

Every route needs a token (``require``): submit for jobs, review for the review queue, labels
and the models' figures, admin for promote, roll back and retrain. Handlers that talk to Redis
are plain functions, run by FastAPI in its thread pool.
"""

from __future__ import annotations

import io
import itertools
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import click
import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse
from PIL import Image, ImageDraw
from pydantic import BaseModel, Field

from config.errors import ImageError, JobNotFoundError
from producer.client import Client
from producer.fieldopts import reading
from producer.formats import write_results
from producer.labelling import from_folder
from producer.web.auth import Caller, Role
from producer.web.deps import desk_of, require
from producer.web.models import overview, promote, rollback
from producer.web.uploads import Budget, read_form, uploaded_images
from recognizer import scan
from storage.priority import Priority
from storage.utils import as_text

__all__ = ["router"]

router = APIRouter()
Submitter = Annotated[Caller, Depends(require(Role.SUBMIT))]
Reviewer = Annotated[Caller, Depends(require(Role.REVIEW))]
Admin = Annotated[Caller, Depends(require(Role.ADMIN))]


class Correction(BaseModel):
    label: str = Field(description="The correct reading: a digit 0-9, or a field job's text.")


class RollbackRequest(BaseModel):
    version: str | None = Field(None, description="Version to make current; default: the current one's parent.")


@router.get("/openapi.json", include_in_schema=False)
def openapi(request: Request, caller: Submitter) -> dict[str, Any]:
    """The OpenAPI description of this API (behind a token, like everything but /healthz)."""
    schema: dict[str, Any] = request.app.openapi()
    return schema


@router.post("/jobs", status_code=202, tags=["jobs"])
async def submit(
    request: Request,
    caller: Submitter,
    chunk_size: Annotated[int | None, Query(ge=1)] = None,
    priority: Annotated[Priority, Query(description="high, normal or low (as --priority).")] = Priority.NORMAL,
    field: Annotated[bool, Query(description="Each image is one field of digits (as --field).")] = False,
    length: Annotated[str | None, Query(description="With field: N or MIN-MAX characters.")] = None,
    pattern: Annotated[str | None, Query(description="With field: a regular expression to match.")] = None,
    check: Annotated[str | None, Query(description="With field: a check digit to satisfy.")] = None,
) -> dict[str, Any]:
    """Submit images as multipart files and/or zips (any field name), with the options of
    `producer submit`; answered with the job id once its items are queued. The body is counted
    while it streams: 413 past INKQ_API_MAX_UPLOAD_BYTES."""
    desk = desk_of(request)
    try:
        read = reading(field, length, pattern, check)
    except click.ClickException as exc:
        raise HTTPException(422, exc.format_message()) from exc
    form = await read_form(request, desk.settings)
    try:
        plain = chunk_size is None and priority == Priority.NORMAL
        client = desk.client if plain else Client(desk.settings.replace(chunk_size=chunk_size), priority)
        meta = {"source": "api", "by": caller.name}
        images = uploaded_images(form, Budget(desk.settings))
        report = await run_in_threadpool(client.submit_blobs, images, meta, what="the upload", read=read)
    finally:
        await form.close()
    keys = desk.client.keys
    with desk.client.redis.pipeline() as pipe:  # the jobs page lists what came through the API
        pipe.zadd(keys.web_jobs, {report.job: time.time()})
        pipe.zremrangebyscore(keys.web_jobs, 0, time.time() - desk.settings.result_ttl_s)
        pipe.expire(keys.web_jobs, desk.settings.result_ttl_s)
        pipe.execute()
    return {"job": report.job, "items": report.items, "stored": report.stored, "rejected": report.rejected}


@router.get("/jobs", tags=["jobs"])
def jobs(request: Request, caller: Submitter, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[dict[str, Any]]:
    """Recent jobs (submitted through the API, or still in progress), newest first, with their status."""
    desk = desk_of(request)
    redis, keys = desk.client.redis, desk.client.keys
    names = [as_text(n) for n in redis.zrevrange(keys.web_jobs, 0, limit - 1)]
    names += [as_text(n) for n in redis.zrevrange(keys.jobs_active, 0, limit - 1) if as_text(n) not in names]
    out = []
    for name in names[:limit]:
        try:
            out.append(desk.client.status(name).as_dict())
        except JobNotFoundError:  # expired meanwhile: not listed
            continue
    return sorted(out, key=lambda s: -float(s.get("created") or 0))


@router.get("/jobs/{job}", tags=["jobs"])
def job_status(request: Request, job: str, caller: Submitter) -> dict[str, Any]:
    """A job's progress: total, done, failed, state, and images per second so far."""
    status = desk_of(request).client.status(job).as_dict()
    elapsed = (status.get("finished") or time.time()) - float(status.get("created") or time.time())
    return status | {"rate": round(status["done"] / elapsed, 1) if elapsed > 0 else None}


@router.get("/jobs/{job}/results", tags=["jobs"], response_class=StreamingResponse)
def results(
    request: Request, job: str, caller: Submitter, format: Literal["jsonl", "csv"] = "jsonl"
) -> StreamingResponse:
    """Every result written so far, in item order, streamed as JSON lines or CSV (as `producer results`)."""
    client = desk_of(request).client
    client.status(job)  # 404 now, not half-way through a stream
    fields = client.jobs.reading(job).get("kind") == "field"
    body = stream_results(client.iter_results(job), format, fields)
    if format == "jsonl":
        return StreamingResponse(body, media_type="application/x-ndjson")
    headers = {"Content-Disposition": f'attachment; filename="{job}.csv"'}
    return StreamingResponse(body, media_type="text/csv", headers=headers)


def stream_results(rows: Iterator[dict[str, Any]], fmt: str, fields: bool, page: int = 1000) -> Iterator[str]:
    """`producer results`' output (producer/formats.py), a page of rows at a time."""
    first = True
    while True:
        chunk = list(itertools.islice(rows, page))
        if not chunk and not first:
            return
        out = io.StringIO()
        write_results(chunk, fmt, out, fields=fields)
        text = out.getvalue()
        yield text if first or fmt != "csv" else text.split("\n", 1)[1]  # the CSV header once
        first = False
        if not chunk:
            return


@router.post("/jobs/{job}/cancel", tags=["jobs"])
def cancel(request: Request, job: str, caller: Submitter) -> dict[str, Any]:
    """End a job early: its items without a result get a `cancelled` error. Safe to repeat."""
    return desk_of(request).client.cancel(job)


@router.get("/review", tags=["review"])
def review(
    request: Request, caller: Reviewer, job: str | None = None, limit: Annotated[int, Query(ge=1, le=5000)] = 200
) -> list[dict[str, Any]]:
    """Results marked for review that nobody labelled yet, least confident first."""
    rows = desk_of(request).client.review(job, limit)
    return sorted(rows, key=lambda r: (float(r.get("confidence") or 0.0), r["job"], r["index"]))


@router.get("/review/{job}/{index}/image", tags=["review"], response_class=Response)
def review_image(request: Request, job: str, index: int, caller: Reviewer) -> Response:
    """The item's image as PNG (whatever format it was submitted in), its characters' boxes drawn."""
    desk = desk_of(request)
    row = desk.client.jobs.result(job, index)
    if not row or not isinstance(row.get("digest"), str):
        raise HTTPException(404, f"item {index} of job {job} has no result yet")
    (data,) = desk.client.jobs.fetch_images([row["digest"]])
    if data is None:
        raise HTTPException(404, "the image has expired (INKQ_RESULT_TTL_S)")
    try:
        gray = scan.decode(data, max_bytes=desk.settings.max_image_bytes, max_pixels=desk.settings.max_image_pixels)
    except ImageError as exc:
        raise HTTPException(422, str(exc)) from exc
    out = io.BytesIO()
    chars = row.get("chars") if isinstance(row.get("chars"), list) else None
    boxed(gray, chars, desk.settings.review_threshold).save(out, format="PNG")
    return Response(out.getvalue(), media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


SURE, UNSURE = (37, 99, 235), (217, 119, 6)


def boxed(gray: np.ndarray, chars: list[dict[str, Any]] | None, threshold: float) -> Image.Image:
    """The image as seen (small scans enlarged) with each character's box drawn: a field's
    characters as the reader found them, orange where uncertain; a single character's ink."""
    image = Image.fromarray((np.clip(gray, 0, 1) * 255).astype(np.uint8)).convert("RGB")
    scale = max(1, 112 // max(image.size))
    image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(image)
    width = max(1, scale // 2)
    if chars:
        for char in chars:
            x0, y0, x1, y1 = (float(v) * scale for v in char["box"])
            colour = UNSURE if float(char.get("confidence", 0.0)) < threshold else SURE
            draw.rectangle((x0 - 1, y0 - 1, x1, y1), outline=colour, width=width)
        return image
    rows, cols = np.nonzero(gray < 0.5)
    if rows.size:
        box = (cols.min() * scale - 1, rows.min() * scale - 1, (cols.max() + 1) * scale, (rows.max() + 1) * scale)
        draw.rectangle(box, outline=SURE, width=width)
    return image


@router.post("/review/{job}/{index}", tags=["review"])
def correct(request: Request, job: str, index: int, body: Correction, caller: Reviewer) -> dict[str, Any]:
    """Label the item (accepting the reading is labelling it with it); the item leaves the queue."""
    return desk_of(request).client.correct(job, str(index), body.label)


@router.post("/review/{job}/{index}/unreadable", tags=["review"])
def unreadable(request: Request, job: str, index: int, caller: Reviewer) -> dict[str, Any]:
    """Take the item off the review queue without a label: nobody can read it."""
    desk_of(request).client.jobs.unmark_review(job, index)
    return {"job": job, "index": index, "unreadable": True}


@router.get("/labels", tags=["labels"])
def labels(request: Request, caller: Reviewer) -> dict[str, int]:
    """How many labelled samples the label store holds."""
    store = desk_of(request).client.labels
    return {"count": store.count(), "latest_seq": store.latest_seq()}


@router.post("/labels", tags=["labels"])
async def add_labels(request: Request, caller: Reviewer) -> dict[str, int]:
    """Add labelled samples: a zip (or files) laid out as <label>/<name>.png, as `producer label DIR`.
    Everything is checked first; one bad entry rejects the whole intake."""
    desk = desk_of(request)
    form = await read_form(request, desk.settings)
    try:
        with tempfile.TemporaryDirectory(prefix="inkq-labels-") as folder:
            count = await run_in_threadpool(unpack_labelled, uploaded_images(form, Budget(desk.settings)), Path(folder))
            stored = await run_in_threadpool(desk.client.label, from_folder(Path(folder)), f"api:{caller.name}")
    finally:
        await form.close()
    return {"stored": stored, "uploaded": count, "labels_total": desk.client.labels.count()}


def unpack_labelled(images: Iterator[tuple[str, bytes | str]], folder: Path) -> int:
    count = 0
    for name, data in images:
        parts = Path(name).parts[-2:]  # <label>/<file>, wherever the zip nests them
        if isinstance(data, str) or len(parts) != 2 or not parts[0].isdigit():
            raise HTTPException(422, f"{name}: expected <label>/<file> with a readable image ({data!s:.200})")
        (folder / parts[0]).mkdir(exist_ok=True)
        (folder / parts[0] / f"{count:07d}{Path(parts[1]).suffix.lower()}").write_bytes(data)
        count += 1
    return count


@router.get("/models", tags=["models"])
def models(request: Request, caller: Reviewer) -> dict[str, Any]:
    """Every model version with its gate figures, the current one, which workers serve which."""
    return overview(desk_of(request).registry)


@router.post("/models/{version}/promote", tags=["models"])
def promote_version(request: Request, version: str, caller: Admin) -> dict[str, Any]:
    """Make VERSION current (it must still have its weights); workers switch to it."""
    desk = desk_of(request)
    return {"current": promote(desk.registry, desk.settings, version).version}


@router.post("/models/rollback", tags=["models"])
def rollback_model(request: Request, caller: Admin, body: RollbackRequest | None = None) -> dict[str, Any]:
    """As `trainer rollback`: back to VERSION, by default the current version's parent."""
    desk = desk_of(request)
    try:
        return rollback(desk.registry, desk.settings, body.version if body else None)
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from exc


@router.post("/retrain", status_code=202, tags=["models"])
def retrain(request: Request, caller: Admin) -> dict[str, Any]:
    """Start `trainer retrain` (one at a time); follow it with GET /v1/retrain."""
    return desk_of(request).retrain.start(caller.name).as_dict()


@router.get("/retrain", tags=["models"])
def retrain_status(request: Request, caller: Reviewer) -> dict[str, Any]:
    """The last retrain started here: running, done (with its summary) or failed (with why)."""
    return desk_of(request).retrain.outcome.as_dict()
