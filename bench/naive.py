"""The naive baseline: what people write first with Celery.

One task per image with the image's bytes in the message, an eager fp32 model loaded once per
worker process, batch size one, default prefork pool. Run by the benchmark as
`celery -A bench.naive worker`.
"""

from __future__ import annotations

import base64
import json
import os
import socket
from typing import Any

import torch
from celery import Celery, signals

from config.settings import load_settings
from recognizer import artifact, network, scan
from storage import workers
from storage.connection import connect
from storage.keys import Keys
from storage.registry import Registry

QUEUE = "naive"
settings = load_settings()


def make_app(url: str) -> Celery:
    app = Celery("naive", broker=url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_default_queue=QUEUE,
        broker_transport_options={"global_keyprefix": Keys(settings.key_prefix).broker_prefix},
    )
    return app


app = make_app(settings.redis_url)
_model: Any = None
_client = connect(settings.redis_url, check=False)


def done_key(run: str) -> str:
    return Keys(settings.key_prefix).naive_done(run)


def result_key(run: str, name: str) -> str:
    return Keys(settings.key_prefix).naive_result(run, name)


def model() -> Any:
    global _model  # noqa: PLW0603 - loaded once per worker process, like any sensible worker
    if _model is None:
        info, weights = Registry(connect(settings.redis_url), Keys(settings.key_prefix)).weights()
        _model = artifact.load_into(network.build(info.arch), weights).eval()
    return _model


@signals.worker_ready.connect
def _ready(sender: Any = None, **_: Any) -> None:
    hostname = getattr(sender, "hostname", socket.gethostname())
    workers.announce_ready(connect(settings.redis_url), Keys(settings.key_prefix), hostname)


@app.task(name="naive.recognize")
def recognize(run: str, name: str, image_b64: str) -> None:
    data = base64.b64decode(image_b64)
    x = torch.from_numpy(
        scan.preprocess(data, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)
    )[None]
    with torch.no_grad():
        probs = torch.softmax(model()(x), dim=1)[0]
    result = {"item": name, "label": int(probs.argmax()), "confidence": float(probs.max()), "pid": os.getpid()}
    client = _client
    client.set(result_key(run, name), json.dumps(result))
    client.incr(done_key(run))


def send(sender: Celery, run: str, name: str, data: bytes) -> None:
    sender.send_task("naive.recognize", args=[run, name, base64.b64encode(data).decode()], queue=QUEUE)
