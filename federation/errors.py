"""The named errors of the engine. Each message is written for the person who must act on it."""


class FipError(Exception):
    """Base of every error the engine raises on purpose; `str(error)` is the user-facing message."""


class InputError(FipError):
    """A file, column, target or parameter that the job cannot use as given."""


class CentralRefused(InputError):
    """Central's own data refused when the job opened, before any remote site was asked: the
    job can wait for a corrected file instead of failing."""


class SiteRefused(FipError):
    """Raised by a site's half when its data cannot answer (too few rows, bad values)."""


class SiteFailed(FipError):
    """Sites answered with errors; central turns them into one job failure naming each site."""

    def __init__(self, failures: dict[str, str]) -> None:
        super().__init__("; ".join(f"site '{site}': {reason}" for site, reason in failures.items()))
        self.failures = failures


class FitError(FipError):
    """A model could not be fitted (a singular system, no rows to fit on)."""


class ProtocolError(FipError):
    """A malformed or unexpected wire message."""


class AlgorithmInvalid(FipError):
    """An algorithm package that does not meet the contract; the message names the file."""


class SiteLost(FipError):
    """A site's connection dropped during a request and the site is back: its answer to that
    request is unknown. A securely aggregated round then starts again with fresh masks."""


def unreadable(label: str, error: OSError) -> InputError:
    """Why the file ``label`` cannot be opened or read, in the words every reader uses."""
    if isinstance(error, FileNotFoundError):
        return InputError(f"{label}: no such file")
    if isinstance(error, IsADirectoryError):
        return InputError(f"{label}: is a folder, not a CSV file")
    return InputError(f"{label}: cannot be read ({error.strerror})")
