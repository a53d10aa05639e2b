"""inkq's data layout in Redis: every key, the model registry, images, jobs and results.

Torch-free, so that the producer and any client can use it.
"""
