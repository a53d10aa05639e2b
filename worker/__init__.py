"""inkq workers: `celery -A worker worker` finds the Celery application here."""

from worker.app import app

__all__ = ["app"]
