"""How many new connections a fake lets wait to be accepted.

aiohttp's default, 128, is a limit of the fakes, not of the hosts they stand for: 200
simultaneous requests on new connections overflowed it, and the kernel dropped the connections
past it, which the client then tried again a second later (the acknowledgement benchmark's p99:
1.1 s in two runs, with 86 listen-queue overflows counted by the kernel). The real services take
such a burst; so do the fakes.
"""

BACKLOG = 1024
