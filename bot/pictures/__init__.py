"""Pixel work and the files that hold it: checking, normalising, masking, compositing and fitting
pictures, within one memory budget, and keeping them on disk within the disk cap behind signed
links. Imports nothing from the job service, the hosts or the web side, so every one of them
can use it."""
