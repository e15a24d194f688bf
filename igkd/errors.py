"""User-facing errors: each message says what was wrong and what to do about it."""


class IgkdError(Exception):
    """Base class of the errors igkd raises for bad input; the CLI prints them as one line."""


class DataNotFoundError(IgkdError, FileNotFoundError):
    """No copy of a dataset could be found or downloaded."""


class CheckpointError(IgkdError, ValueError):
    """A checkpoint file is missing, unreadable, unsafe or does not fit the architecture."""


class ConfigError(IgkdError, ValueError):
    """A parameter has a value igkd does not accept."""


class SweepError(IgkdError, RuntimeError):
    """Some runs of a sweep failed; `results` holds every run's entry, the failed ones included."""

    def __init__(self, message: str, results: list[dict]) -> None:
        super().__init__(message)
        self.results = results


class BookError(IgkdError, RuntimeError):
    """The book cannot be built: notebooks not executed, a notebook failed, or the build warned."""


class ArchiveError(IgkdError, ValueError):
    """A runs archive cannot be written or is not one igkd can import (damaged, tampered, newer)."""
