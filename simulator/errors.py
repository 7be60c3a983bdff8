"""The error of a setting that cannot be used (a run, export or load setting), raised before any work starts."""


class ConfigError(ValueError):
    """A setting that cannot be used, named by its `field` (the CLI names the option that sets it)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
