"""The command-line tools beside `run`: a one-shot edit and the check of each configured host."""
