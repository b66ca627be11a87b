"""The converter's error type and the listing of offending items in its messages."""


class ConversionError(ValueError):
    """A problem with the user's inputs; the message names the option to fix."""


def listing(items, limit: int = 20) -> str:
    items = list(items)
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")
