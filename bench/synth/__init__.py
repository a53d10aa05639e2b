"""Generated data, one home: MNIST read with numpy, digit scans, digit fields, worker processes.

Tests, benchmarks and the demos (`producer demo`, `producer finetune-demo`) all take their
images and workers from here. Importing it never imports torch: the producer may use it.
"""

from bench.synth.digits import as_scan, encode, on_paper, outlined, page_scans, write_digits
from bench.synth.fields import STYLES, Box, Field, FieldStyle, render_field
from bench.synth.fieldset import LABELS_CSV, TRUTH_JSONL, contact_sheet, write_fields
from bench.synth.glyphs import DigitPool, glyph
from bench.synth.mnist import load_mnist, mnist_present, read_idx
from bench.synth.workers import WorkerProcess, start_worker, stop

__all__ = [
    "LABELS_CSV",
    "STYLES",
    "TRUTH_JSONL",
    "Box",
    "DigitPool",
    "Field",
    "FieldStyle",
    "WorkerProcess",
    "as_scan",
    "contact_sheet",
    "encode",
    "glyph",
    "load_mnist",
    "mnist_present",
    "on_paper",
    "outlined",
    "page_scans",
    "read_idx",
    "render_field",
    "start_worker",
    "stop",
    "write_digits",
    "write_fields",
]
