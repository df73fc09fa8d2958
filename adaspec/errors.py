"""The one exception type for bad input: its message is a complete sentence for the user."""


class AdaspecError(ValueError):
    """Raised for bad input (prompt, options, model files); the CLI prints it as one line."""
