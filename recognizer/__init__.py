"""Handwritten-character recognition: scan preprocessing, the network, and the inference engine.

This package's modules import torch only where they need it (``network``, ``engine``,
``artifact``); ``scan`` is torch-free so that the producer can validate images cheaply.
"""
