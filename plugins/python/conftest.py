"""The Python plugins' tests import `wharf_sdk` from this repository's `sdk/python`
(elsewhere: `pip install <wharf>/sdk/python`) and their `app` module from their own
directory (pytest's rootdir insertion)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "sdk" / "python"))


def pytest_collectstart(collector):
    """Each plugin's module is `app` (what componentize-py builds): forget the one a test
    file of another plugin imported, so this one imports its own."""
    sys.modules.pop("app", None)
