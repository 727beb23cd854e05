"""Make ``sift_testkit`` importable whatever the rootdir and import mode; declare the
``slow`` marker when the suite runs on its own."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def pytest_configure(config) -> None:  # noqa: ANN001 - pytest's Config
    config.addinivalue_line("markers", "slow: takes more than a few seconds")
