"""The producer: validates, deduplicates and queues document images; reads results back.

Never imports torch: it runs wherever scans are, on machines without a model.
"""

from producer.client import Client, SubmitReport

__all__ = ["Client", "SubmitReport"]
