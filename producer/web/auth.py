"""Who may call the API and the desk: tokens with roles, browser sessions, CSRF, sign-in limits.

A token is ``name:role:token`` from INKQ_API_TOKENS or INKQ_API_TOKENS_FILE. Programs send it as
``Authorization: Bearer TOKEN``; a browser types it once into the sign-in page and gets a signed,
HttpOnly, SameSite=Strict session cookie naming the token (never holding it). A session whose
token was removed or changed in the settings stops working at once.

Cross-site requests: SameSite=Strict keeps the cookie off them, and on top of that every
state-changing request authenticated by cookie must carry the session's CSRF token (header
``X-CSRF-Token`` or form field ``csrf``) and, when the browser sends one, a same-origin
``Origin``. A bearer token cannot be attached by another site, so it needs neither.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import redis
from fastapi import HTTPException, Request
from itsdangerous import BadSignature, URLSafeTimedSerializer

from config.errors import ConfigError
from config.settings import Settings
from storage.keys import Keys

__all__ = ["COOKIE", "Auth", "Caller", "Role", "Token", "parse_tokens"]

COOKIE = "inkq_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SIGNIN_WINDOW_S = 300


class Role(StrEnum):
    SUBMIT = "submit"  # submit jobs, read their status and results, cancel them
    REVIEW = "review"  # and the review queue, labels and the models' figures
    ADMIN = "admin"  # and promote, roll back, retrain

    @property
    def rank(self) -> int:
        return list(Role).index(self)


@dataclass(frozen=True)
class Token:
    name: str
    role: Role
    secret: str = field(repr=False)  # never in a repr, so never in a log line

    @property
    def fingerprint(self) -> str:
        """What a session cookie holds to tell the token was not changed since sign-in."""
        return hashlib.sha256(b"inkq-session:" + self.secret.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Caller:
    name: str
    role: Role
    csrf: str | None = None  # set for browser sessions: state changes must echo it

    def allowed(self, needed: Role) -> bool:
        return self.role.rank >= needed.rank


def parse_tokens(settings: Settings) -> list[Token]:
    """Every configured token; ConfigError naming the entry (never its secret) when malformed."""
    entries = [(f"INKQ_API_TOKENS entry {i + 1}", e) for i, e in enumerate(settings.api_tokens.split(","))]
    if settings.api_tokens_file:
        path = Path(settings.api_tokens_file).expanduser()
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise ConfigError(f"INKQ_API_TOKENS_FILE={path}: cannot read it: {exc.strerror or exc}") from exc
        entries += [(f"{path} line {i + 1}", line) for i, line in enumerate(lines) if not line.startswith("#")]
    tokens: list[Token] = []
    for where, raw in entries:
        if not raw.strip():
            continue
        parts = [p.strip() for p in raw.split(":", 2)]
        if len(parts) != 3 or not all(parts) or parts[1] not in {r.value for r in Role}:
            raise ConfigError(f"{where}: expected name:role:token with role one of submit, review, admin")
        if len(parts[2]) < 16:
            raise ConfigError(f"{where}: token of {parts[0]!r} is shorter than 16 characters; use a long random one")
        tokens.append(Token(parts[0], Role(parts[1]), parts[2]))
    names = [t.name for t in tokens]
    if len(set(names)) != len(names):
        raise ConfigError("API token names must be unique (INKQ_API_TOKENS, INKQ_API_TOKENS_FILE)")
    return tokens


class Auth:
    def __init__(self, settings: Settings, client: redis.Redis, keys: Keys) -> None:
        self.tokens = parse_tokens(settings)
        if not self.tokens:
            raise ConfigError(
                "no API tokens: set INKQ_API_TOKENS=name:role:token,... (or INKQ_API_TOKENS_FILE); "
                'e.g. INKQ_API_TOKENS="alice:admin:$(openssl rand -hex 24)"'
            )
        self.sessions = URLSafeTimedSerializer(settings.api_session_key or secrets.token_hex(32), salt="inkq-desk")
        self.max_age = settings.api_session_s
        self.failures_allowed = settings.api_signin_failures
        self.redis = client
        self.keys = keys

    def match(self, presented: str) -> Token | None:
        """The token equal to ``presented``, compared in constant time against every one."""
        found = None
        for token in self.tokens:
            if hmac.compare_digest(token.secret.encode(), presented.encode()):
                found = token
        return found

    # Browser sessions
    def session_cookie(self, token: Token) -> str:
        return self.sessions.dumps({"n": token.name, "f": token.fingerprint, "c": secrets.token_urlsafe(24)})

    def from_cookie(self, raw: str) -> Caller | None:
        try:
            data: dict[str, Any] = self.sessions.loads(raw, max_age=self.max_age)
        except BadSignature:
            return None
        token = next((t for t in self.tokens if t.name == data.get("n")), None)
        if token is None or not hmac.compare_digest(token.fingerprint, str(data.get("f", ""))):
            return None
        return Caller(token.name, token.role, str(data.get("c", "")))

    def caller(self, request: Request) -> Caller | None:
        header = request.headers.get("authorization", "")
        if header:
            scheme, _, presented = header.partition(" ")
            token = self.match(presented.strip()) if scheme.lower() == "bearer" else None
            return None if token is None else Caller(token.name, token.role)
        raw = request.cookies.get(COOKIE)
        return self.from_cookie(raw) if raw else None

    def check_csrf(self, request: Request, caller: Caller, form_value: str | None = None) -> None:
        """Refuse a state-changing cookie request that another site could have made."""
        if caller.csrf is None or request.method in SAFE_METHODS:
            return
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
            raise HTTPException(403, "cross-site request refused (Origin does not match this site)")
        given = request.headers.get("x-csrf-token") or form_value or ""
        if not hmac.compare_digest(given.encode(), caller.csrf.encode()):
            raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")

    # Sign-in rate limit, per client address, in Redis so replicas share it
    def signin_blocked(self, client: str) -> bool:
        raw = self.redis.get(self.keys.signin_failures(client))
        return raw is not None and int(raw) >= self.failures_allowed

    def signin_failed(self, client: str) -> None:
        key = self.keys.signin_failures(client)
        with self.redis.pipeline() as pipe:
            pipe.set(key, 0, ex=SIGNIN_WINDOW_S, nx=True)  # the window starts at the first failure
            pipe.incr(key)  # keeps the TTL
            pipe.execute()
