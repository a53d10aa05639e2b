"""Generated data, one home: MNIST read with numpy, digit scans, digit fields, worker processes.

Tests, benchmarks and the demos (`producer demo`, `producer finetune-demo`) all take their
images and workers from here. Importing it never imports torch: the producer may use it.
"""

from bench.synth.digits import as_scan, encode, on_paper, outlined, page_scans, write_digits
from bench.synth.mnist import load_mnist, mnist_present, read_idx
from bench.synth.workers import WorkerProcess, start_worker, stop

__all__ = [
    "WorkerProcess",
    "as_scan",
    "encode",
    "load_mnist",
    "mnist_present",
    "on_paper",
    "outlined",
    "page_scans",
    "read_idx",
    "start_worker",
    "stop",
    "write_digits",
]
