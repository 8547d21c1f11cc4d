"""Command-line tools besides training: `skillsd-eval` (evaluate a policy) and `skillsd-export` (HF export)."""
