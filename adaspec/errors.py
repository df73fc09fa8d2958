"""The one exception type for bad input: its message is a complete sentence for the user."""


class AdaspecError(ValueError):
    """Raised for bad input (prompt, options, model files); the CLI prints it as one line."""


def first_line(error: BaseException) -> str:
    """An exception's message cut to its first line (for one-line errors from other libraries).

    Args:
        error: the exception.

    Returns:
        The first line, or the exception's type name when the message is empty.
    """
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
