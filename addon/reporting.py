"""How operators report failures to the artist (no bpy here: it only calls ``operator.report``).

No operator lets an exception through to the user: an unexpected one becomes a one-line error report
(the traceback goes to the system console for a bug report).
"""

import traceback


def first_line(exc: BaseException) -> str:
    """The last line of an exception's message (where Blender puts the operator's report), or its type."""
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


def unexpected_error(operator, what: str, exc: BaseException) -> set:
    """Reports an unforeseen failure in one line (details to the console) and cancels the operator."""
    traceback.print_exc()
    operator.report(
        {"ERROR"}, f"VIST3A {what} failed unexpectedly ({type(exc).__name__}: {exc}); see the system console"
    )
    return {"CANCELLED"}
