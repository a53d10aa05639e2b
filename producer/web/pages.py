"""The review desk's pages: sign-in, the review queue, jobs and models (server-rendered, Jinja2).

The pages read through the same functions as the API; what they change they change by calling
the API from desk.js with the session's CSRF token.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from producer.web.api import jobs
from producer.web.auth import COOKIE, Caller, Role
from producer.web.deps import desk_of, require
from producer.web.models import overview
from producer.web.plot import accuracy_svg

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.filters["when"] = lambda t: datetime.fromtimestamp(float(t), UTC).strftime("%Y-%m-%d %H:%M") if t else "-"
templates.env.filters["pct"] = lambda x: "-" if x is None else f"{float(x):.2%}"
Reviewer = Annotated[Caller, Depends(require(Role.REVIEW))]
Submitter = Annotated[Caller, Depends(require(Role.SUBMIT))]


def page(request: Request, name: str, caller: Caller | None, **context: Any) -> HTMLResponse:
    response = templates.TemplateResponse(request, name, {"caller": caller, **context})
    # The desk never runs in a frame, loads nothing from elsewhere, and runs only its own script.
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; frame-ancestors 'none'; form-action 'self'"
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def safe_next(target: str) -> str:
    """Only a path on this site: never an open redirect."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/desk"


@router.get("/")
def home() -> Response:
    return RedirectResponse("/desk", status_code=303)


@router.get("/signin")
def signin_page(request: Request, next: str = "/desk") -> Response:
    return page(request, "signin.html", None, next=safe_next(next), error=None)


@router.post("/signin")
def signin(request: Request, token: Annotated[str, Form()], next: Annotated[str, Form()] = "/desk") -> Response:
    desk = desk_of(request)
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
        return HTMLResponse("cross-site sign-in refused", status_code=403)
    address = request.client.host if request.client else "unknown"
    if desk.auth.signin_blocked(address):
        response = page(
            request, "signin.html", None, next=safe_next(next), error="too many failed sign-ins: wait 5 minutes"
        )
        response.status_code = 429
        return response
    found = desk.auth.match(token.strip())
    if found is None:
        desk.auth.signin_failed(address)
        wrong = page(request, "signin.html", None, next=safe_next(next), error="unknown token")
        wrong.status_code = 401
        return wrong
    signed_in = RedirectResponse(safe_next(next), status_code=303)
    signed_in.set_cookie(
        COOKIE,
        desk.auth.session_cookie(found),
        max_age=desk.settings.api_session_s,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return signed_in


@router.post("/signout")
def signout(request: Request, caller: Submitter) -> Response:
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


@router.get("/desk")
def review_page(request: Request, caller: Reviewer, job: str | None = None) -> Response:
    return page(request, "review.html", caller, job=job or "", threshold=desk_of(request).settings.review_threshold)


@router.get("/jobs")
def jobs_page(request: Request, caller: Submitter) -> Response:
    return page(request, "jobs.html", caller, jobs=jobs(request, caller))


@router.get("/models")
def models_page(request: Request, caller: Reviewer) -> Response:
    desk = desk_of(request)
    view = overview(desk.registry)
    return page(
        request,
        "models.html",
        caller,
        view=view,
        plot=accuracy_svg(view["versions"]),
        admin=caller.allowed(Role.ADMIN),
        retrain=desk.retrain.outcome.as_dict(),
    )
