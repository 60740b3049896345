"""Small shared utilities: atomic checkpoints, run directories and metric logging."""
