"""What every part of a running bot shares: its configuration, logging, metrics, background
tasks, per-server settings and command sync."""
