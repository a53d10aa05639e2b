"""The HTTP API (/v1) and the review desk, served by `producer serve`.

Needs the ``web`` extra (``pip install 'inkq[web]'``); like the rest of the producer it never
imports torch: a retrain started from the desk runs `trainer retrain` as a child process.
"""

from producer.web.app import create_app

__all__ = ["create_app"]
