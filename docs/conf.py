# Copyright 2026 The braintrace authors. Licensed under the Apache License, Version 2.0.
"""Sphinx configuration of the braintrace documentation (``make docs``)."""

from __future__ import annotations

import importlib.metadata
import inspect
import pathlib
import sys

import brainstate

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

project = "braintrace"
author = "The braintrace authors"
copyright = "2026, The braintrace authors"
release = version = importlib.metadata.version("braintrace")

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "benchmark_results",
]

exclude_patterns = ["_build"]
templates_path: list[str] = []
html_static_path: list[str] = []
html_theme = "alabaster"
html_theme_options = {
    "description": "Online learning for recurrent and spiking networks",
    "fixed_sidebar": True,
    "page_width": "1240px",
    "sidebar_width": "230px",
}

# The documented package is installed: autodoc imports it (no mocked imports).
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_default_options: dict[str, object] = {}
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False

default_role = "code"
nitpicky = False


def _skip_namedtuple_fields(app, what, name, obj, skip, options):
    """Skip the field accessors of NamedTuples: their docstrings' ``Attributes`` sections
    already describe every field, and documenting both would duplicate each entry."""
    doc = getattr(obj, "__doc__", None) or ""
    if what == "class" and doc.startswith("Alias for field number"):
        return True
    return None


class _Shown:
    """A default value shown by name, instead of a long, multi-line or ``<...>`` repr."""

    def __init__(self, value):
        if isinstance(value, type) or callable(value) and hasattr(value, "__name__"):
            self.text = value.__name__
        else:
            self.text = f"{type(value).__name__}(...)"

    def __repr__(self) -> str:
        return self.text


def _plain_parameter(parameter: inspect.Parameter) -> inspect.Parameter:
    default = parameter.default
    text = repr(default)
    if default is not inspect.Parameter.empty and (text.startswith("<") or "\n" in text or len(text) > 40):
        default = _Shown(default)
    return parameter.replace(annotation=inspect.Parameter.empty, default=default)


def _module_signature(app, what, name, obj, options, signature, return_annotation):
    """Show ``__init__``'s parameters for brainstate modules.

    brainstate's module metaclass defines ``__call__(*args, **kwargs)``, which autodoc would
    otherwise show as the signature of every layer and learner. Annotations are left to the
    parameter descriptions.
    """
    if what == "class" and isinstance(obj, type) and issubclass(obj, brainstate.nn.Module):
        init = inspect.signature(obj.__init__)
        parameters = [_plain_parameter(p) for p in list(init.parameters.values())[1:]]
        shown = init.replace(parameters=parameters, return_annotation=inspect.Signature.empty)
        return str(shown), None
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_namedtuple_fields)
    app.connect("autodoc-process-signature", _module_signature)
