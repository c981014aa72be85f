"""Errors fedcare raises on bad input: each carries one line saying what is wrong and what to do."""


class FedcareError(Exception):
    """Base class: the CLI prints the message alone (no traceback) and exits with code 2."""


class ConfigError(FedcareError):
    """A configuration value or flag is invalid."""


class DataError(FedcareError):
    """A data file, column or value cannot be used."""


class ParamsError(FedcareError):
    """Params or an update do not match what was expected (names, shapes, dtypes, finite values)."""


class SiteDeclined(FedcareError):
    """A site declines a round (its privacy budget would be exceeded, its operator did not approve):
    the round goes on without it, like a site that did not answer."""
