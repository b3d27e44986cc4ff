"""newsletter: an event-driven email newsletter generator.

The pipeline runs load -> ingest -> select -> render -> inline -> outbox; `newsletter.build`
ties the stages together and the CLI only wraps it.
"""

__version__ = "0.1.0"
