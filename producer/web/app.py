"""The web application: the HTTP API under /v1, the review desk's pages, and /healthz.

``create_app(settings)`` builds it; `producer serve` runs it with uvicorn. Everything it does
with jobs, results and labels goes through ``producer.Client``.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from config.errors import InkqError, JobNotFoundError, LockLostError, RegistryConflictError, VersionNotFoundError
from config.settings import Settings, load_settings
from producer.client import Client
from producer.web.api import router as api_router
from producer.web.auth import Auth
from producer.web.deps import Desk
from producer.web.models import RetrainRunner
from producer.web.pages import router as pages_router
from storage.lock import LockHeldError
from storage.registry import Registry

__all__ = ["create_app"]

HERE = Path(__file__).parent


def create_app(settings: Settings | None = None, retrain: RetrainRunner | None = None) -> FastAPI:
    settings = settings or load_settings()
    client = Client(settings)
    desk = Desk(settings, client, Auth(settings, client.redis, client.keys), Registry(client.redis, client.keys),
                retrain or RetrainRunner())  # fmt: skip
    app = FastAPI(
        title="inkq",
        version="1",
        summary="Handwriting recognition: submit scans, read results, review and correct, manage models.",
        # The interactive docs load scripts from a CDN; /v1/openapi.json (behind a token) is enough.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.desk = desk
    app.include_router(api_router, prefix="/v1")
    app.include_router(pages_router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> Response:
        try:
            client.redis.ping()
        except Exception as exc:  # any Redis failure means not ready; the reason without the URL
            return JSONResponse({"ok": False, "error": type(exc).__name__}, status_code=503)
        return JSONResponse({"ok": True})

    @app.exception_handler(JobNotFoundError)
    @app.exception_handler(VersionNotFoundError)
    async def not_found(request: Request, exc: InkqError) -> Response:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(LockHeldError)
    @app.exception_handler(LockLostError)
    @app.exception_handler(RegistryConflictError)
    async def busy(request: Request, exc: InkqError) -> Response:
        # Another train, retrain or rollback holds the registry: try again once it is done.
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(InkqError)
    async def refused(request: Request, exc: InkqError) -> Response:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(401)
    async def unauthorised(request: Request, exc: HTTPException) -> Response:
        # A person at the desk goes to the sign-in page; a program gets the JSON error.
        if (
            request.method == "GET"
            and "text/html" in request.headers.get("accept", "")
            and request.url.path != "/signin"
        ):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/signin?next={quote(target)}", status_code=303)
        return JSONResponse({"detail": exc.detail}, status_code=401, headers=exc.headers)

    return app
