"""``python -m crucible``: the ``crucible`` command line."""

from __future__ import annotations

from crucible.console import main

if __name__ == "__main__":
    main()
