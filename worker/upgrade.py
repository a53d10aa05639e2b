"""After a start from AOT packages, compile the same version in the background and serve that.

Packages load in seconds, which is what they are for. On a CPU, though, the engine they give
runs a batch 1.2-1.7 times slower than ``torch.compile``'s, and under a stream of single-image
jobs its calls starve the message threads, so that batches stay small and the queue grows
(BENCHMARKS.md, "Small jobs"). A worker that started from packages therefore compiles the version
in a background thread and switches to the compiled engine once it is warm, if that version is
still the one it serves: the start stays fast and the steady state is the compiled engine's.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from recognizer.engine import Engine

__all__ = ["Upgrade", "compiles_beside"]

log = logging.getLogger(__name__)


def compiles_beside(engine: Engine) -> bool:
    """Whether a worker compiles beside the packages it started from: a digit network served
    from packages, float or int8, starves the message threads under a stream of single-image
    jobs (BENCHMARKS.md, "Small jobs" and "int8 from AOT packages")."""
    return engine.source == "aot"


class Upgrade:
    """The worker's one background compile; ``status`` is for logs and tests."""

    def __init__(self) -> None:
        self.status: str | None = None
        self.done = threading.Event()

    def start(self, version: str, build: Callable[[], Engine], adopt: Callable[[Engine], bool]) -> None:
        """``build()`` gives the engine to compile (this warms it, which compiles it);
        ``adopt(engine)`` switches to it and says whether it did (not when another version is
        serving by then)."""
        self.done.clear()
        self.status = f"compiling {version}"
        args = (version, build, adopt)
        threading.Thread(target=self._run, args=args, name="inkq-upgrade", daemon=True).start()

    def _run(self, version: str, build: Callable[[], Engine], adopt: Callable[[Engine], bool]) -> None:
        try:
            engine = build()
            engine.warm(time_buckets=True)  # the batcher's split plan weighs them
            if engine.source != "compiled":  # the compile failed and fell back: keep the packages
                self.status = f"kept packages for {version} (compiling gave {engine.source})"
            elif adopt(engine):
                self.status = f"switched {version} to the compiled engine"
                log.info("model %s: switched from its AOT packages to the compiled engine", version)
            else:
                self.status = f"{version} no longer serving"
        except Exception as exc:  # serving goes on from the packages
            self.status = f"failed {version} ({type(exc).__name__}: {exc})"
            log.warning("model %s: compiling beside the AOT packages failed: %s", version, exc)
        finally:
            self.done.set()
