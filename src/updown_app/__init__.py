"""updown: the package upload/download service of a software store."""

__version__ = "0.1.0"
