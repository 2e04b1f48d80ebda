"""Regenerate ``data/reference_gradients.npz`` (run from the repository root).

    python -m tests.algorithms._make_reference_gradients

Only regenerate on purpose: the file pins the online gradients of the code at the time it
was written (bit for bit), and ``test_reference_gradients.py`` compares against it.
"""

import pathlib

import numpy as np

from tests.algorithms._reference_cases import CASES, run_case

PATH = pathlib.Path(__file__).resolve().parent / "data" / "reference_gradients.npz"


def main() -> None:
    arrays = {}
    for name in CASES:
        for key, value in run_case(name).items():
            arrays[f"{name}#{key}"] = value
    np.savez_compressed(PATH, **arrays)


if __name__ == "__main__":
    main()
