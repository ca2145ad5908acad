"""The exception family: every error sslspeech raises on purpose derives from SSLSpeechError."""


class SSLSpeechError(Exception):
    """Base class; the message says what was wrong, where (file, line, key) and how to fix it."""


class ConfigError(SSLSpeechError, ValueError):
    """A configuration value or key is invalid."""


class CheckpointError(SSLSpeechError):
    """A checkpoint cannot be read, is of an unknown format or is unsafe to load."""


class UnknownModelTypeError(ConfigError, CheckpointError):
    """A model type (config `model.type`, a checkpoint's `model_type`) the registry lacks."""


class CheckpointConfigError(ConfigError, CheckpointError):
    """A checkpoint's config (from its files or the overrides given) is invalid."""


class UnsafePickleError(CheckpointError):
    """A pickle asks for a global outside the allow-list; nothing was executed."""


class DataError(SSLSpeechError):
    """A manifest, audio file, feature store or units file is malformed."""


class DownloadError(SSLSpeechError):
    """A remote file could not be fetched (offline, bad URL, HTTP error)."""


class DiskFullError(SSLSpeechError):
    """A write failed for lack of space; the message names the directory and the size needed."""
