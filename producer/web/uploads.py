"""Reading uploads without trusting them: bodies counted while they stream, zips checked member by member.

The request body is counted chunk by chunk as the multipart parser pulls it, and the request
is refused with 413 as soon as it passes INKQ_API_MAX_UPLOAD_BYTES (a Content-Length above it
is refused before anything is read). A zip's members are refused by name when they are too
big, encrypted or compressed suspiciously well (a zip bomb), and a zip as a whole when it
holds too many images or expands past the upload limit; each member is read capped at the
image limit whatever its header claims.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import IO

from fastapi import HTTPException, Request
from starlette.datastructures import FormData, UploadFile
from starlette.types import Message

from config.settings import Settings
from recognizer.scan import SUPPORTED_SUFFIXES

__all__ = ["MAX_RATIO", "Budget", "read_form", "uploaded_images"]

# PNG and JPEG barely deflate; a member expanding more than this is a bomb, not a scan.
MAX_RATIO = 100


class Budget:
    """What one request may still bring: images and expanded bytes."""

    def __init__(self, settings: Settings) -> None:
        self.files = settings.api_max_files
        self.bytes = settings.api_max_upload_bytes
        self.image_limit = settings.max_image_bytes

    def take(self, files: int = 0, size: int = 0) -> None:
        self.files -= files
        self.bytes -= size
        if self.files < 0:
            raise HTTPException(413, "too many images in one request (INKQ_API_MAX_FILES): split the upload")
        if self.bytes < 0:
            raise HTTPException(413, "upload expands beyond INKQ_API_MAX_UPLOAD_BYTES: split it into several")


async def read_form(request: Request, settings: Settings) -> FormData:
    """The multipart form, its body counted as it streams in (413 past the limit)."""
    limit = settings.api_max_upload_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"request body of {int(declared):,} bytes is over INKQ_API_MAX_UPLOAD_BYTES={limit:,}")
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await request.receive()
        seen += len(message.get("body", b""))
        if seen > limit:
            raise HTTPException(413, f"request body passed INKQ_API_MAX_UPLOAD_BYTES={limit:,}; nothing was stored")
        return message

    limited = Request(request.scope, counted)
    return await limited.form(max_files=settings.api_max_files + 1, max_fields=100)


def uploaded_images(form: FormData, budget: Budget) -> Iterator[tuple[str, bytes | str]]:
    """(name, bytes) of every uploaded image and zip member, or (name, why refused)."""
    for _, value in form.multi_items():
        if not isinstance(value, UploadFile):
            continue
        name = value.filename or "upload"
        if name.lower().endswith(".zip") or value.content_type in ("application/zip", "application/x-zip-compressed"):
            yield from zip_members(value.file, name, budget)
            continue
        budget.take(files=1)
        if value.size is not None and value.size > budget.image_limit:
            yield name, f"file is over the limit of {budget.image_limit:,} bytes (INKQ_MAX_IMAGE_BYTES)"
            continue
        yield name, value.file.read(budget.image_limit + 1)


def zip_members(file: IO[bytes], name: str, budget: Budget) -> Iterator[tuple[str, bytes | str]]:
    try:
        archive = zipfile.ZipFile(file)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        yield name, f"not a readable zip file ({exc})"
        return
    with archive:
        members = [
            info
            for info in archive.infolist()
            if not info.is_dir()
            and not info.filename.startswith("__MACOSX/")
            and PurePosixPath(info.filename).suffix.lower() in SUPPORTED_SUFFIXES
        ]
        budget.take(files=len(members))
        for info in members:
            path = f"{name}/{info.filename}"
            if info.flag_bits & 0x1:
                yield path, "encrypted zip member: zip the images without a password"
            elif info.file_size > budget.image_limit:
                yield path, f"file is over the limit of {budget.image_limit:,} bytes (INKQ_MAX_IMAGE_BYTES)"
            elif info.file_size > MAX_RATIO * max(info.compress_size, 1) and info.file_size > 64 * 1024:
                yield path, f"compressed {info.file_size // max(info.compress_size, 1)}:1, refused as a zip bomb"
            else:
                yield path, read_member(archive, info, budget)


def read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: Budget) -> bytes | str:
    try:
        with archive.open(info) as member:
            data = member.read(budget.image_limit + 1)  # a header may lie about the size
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, EOFError) as exc:
        return f"cannot read zip member ({exc})"
    budget.take(size=len(data))
    return data
