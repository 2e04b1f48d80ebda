# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Exception types raised by braintrace.

Every error message says what was expected, what was found, where (a state path or an
equation), and what to do instead.
"""

__all__ = ["BraintraceError", "CompilationError", "NotSupportedError"]


class BraintraceError(Exception):
    """Base class of every error braintrace raises on purpose.

    ``record`` is the compiler's ``error``-level ``CompilationRecord`` behind the error, when
    the compiler made one (it is also handed to an active ``diagnostic_context``).
    """

    record = None


class CompilationError(BraintraceError):
    """The model cannot be compiled into an eligibility-trace graph.

    Raised by :func:`braintrace.compile_etrace_graph` and the algorithms' ``compile_graph``
    when the model has no hidden state, no trainable relation, or a structure the compiler
    cannot analyse. The message names the offending state path.
    """


class NotSupportedError(BraintraceError):
    """The model uses a feature that online learning does not support.

    For example, writing a ``ParamState`` inside the step, or a grouped convolution.
    """
