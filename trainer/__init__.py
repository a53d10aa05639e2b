"""Training: the base model from MNIST, and (later) fine-tuning on labelled samples."""
