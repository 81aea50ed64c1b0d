"""One exception hierarchy. Library code raises these; only the CLI turns them into exit codes."""


class HarmosearchError(Exception):
    """Base of every error a user can act on; the message is shown as one line."""


class ConfigError(HarmosearchError):
    """A configuration file, flag or value is invalid."""


class ModelLoadError(HarmosearchError):
    """A model spec could not be resolved or its weights could not be loaded."""


class DataError(HarmosearchError):
    """Input data (images, annotations, datasets) is missing or malformed."""


class IndexStoreError(HarmosearchError):
    """An index directory is missing, locked, corrupt or built with another encoder."""


class QueryError(HarmosearchError):
    """A query or its options cannot be served."""


class TrainingError(HarmosearchError):
    """Training cannot go on (its loss diverged)."""
