"""Benchmarks: what the bot itself costs, each figure against a floor measured in the same run.

`python -m bench` (or `make bench`) runs them all and writes bench/results.json; `--quick` is a
smoke run, `--only NAME` runs one. See bench/__main__.py and each module's docstring.
"""
