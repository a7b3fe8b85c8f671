"""Retouch: a self-hosted Discord bot that edits images with AI."""

__version__ = "0.1.0"
