"""Tools around the library: ``reproduce`` (every experiment over seeds), ``bench`` (speed in one
run against floors and PyTorch) and the course release (student notebooks from the solutions)."""
