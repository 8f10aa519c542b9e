"""The project's error classes: problems with what the user gave (settings, data, checkpoints, run folders).

The command line prints these as one line (`vptune: error: ...`); any other exception is a bug in vptune and
prints its traceback. Each message names the flag, field or file, and the fix. They also subclass the built-in
error a Python caller would expect (ValueError, RuntimeError), so `except ValueError` keeps working.
"""
import pickle


class VptuneError(Exception):
    """Base class: the user's input cannot be used as given; the message says why and what to do."""


class ConfigError(VptuneError, ValueError):
    """A setting (flag, YAML key, PromptConfig field, method name) is unknown, of the wrong type or out of range."""


class BackboneError(VptuneError, ValueError):
    """A backbone cannot be built: unknown name, not a ViT with a class token, weights that do not fit, no download."""


class CheckpointError(VptuneError, ValueError):
    """A task checkpoint is missing, corrupt, or does not fit the backbone it is loaded onto."""


class TrainingError(VptuneError, RuntimeError):
    """Training cannot start or go on (diverged, or the run directory is in the way)."""


class WriteError(VptuneError, OSError):
    """A file cannot be written (disk full, no permission); the file's previous version, if any, is intact."""


def brief(err: BaseException) -> str:
    """Another library's exception as `Type: its first line` (at most 200 characters), to quote in a one-line error.
    torch's weights_only refusal becomes a short phrase: its page-long message advises weights_only=False, which
    would run whatever code the file pickled."""
    if isinstance(err, pickle.UnpicklingError):
        return f"{type(err).__name__}: torch.load(weights_only=True) refused it"
    first = (str(err).strip().splitlines() or [""])[0][:200]
    return f"{type(err).__name__}: {first}" if first else type(err).__name__
