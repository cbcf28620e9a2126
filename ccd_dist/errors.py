"""Error types that the CLI turns into one clear line instead of a traceback."""


class InputError(ValueError):
    """Bad user input: a missing file, a malformed row, an unknown config key.

    The message must name the file (and line or key) and say what was expected.
    """

    def __init__(self, message: str, path=None, where=None):
        prefix = ""
        if path is not None:
            prefix = f"{path}"
            if where is not None:
                prefix += f" ({where})"
            prefix += ": "
        super().__init__(prefix + message)
        self.path = path
        self.where = where
