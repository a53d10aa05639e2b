"""inkq's benchmarks: every comparison is a ratio measured side by side in one run."""
