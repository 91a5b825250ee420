"""kerasformers."""
