class VQCodecError(Exception):
    """An error caused by the user's input: reported as one line, without a traceback."""
