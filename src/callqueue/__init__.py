"""callqueue: outbound voice-call queue on Redis."""

__version__ = "0.1.0"
