"""The bot's own web server: health, metrics, host callbacks, signed file links and the mask
painter, with the connection limits that keep it answering under load."""
