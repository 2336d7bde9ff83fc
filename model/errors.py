"""The one base of every error pushrules raises on purpose.

Each error class also keeps the builtin base it had (``ValueError`` for bad input,
``RuntimeError`` for a failing component), so ``except ValueError`` in callers still works;
``except PushrulesError`` catches every one of them and nothing else.
"""

from __future__ import annotations


class PushrulesError(Exception):
    """Base of every error pushrules raises on purpose (bad input, impossible events, stores,
    the model, rendering). Anything else escaping pushrules is a defect."""
