"""Every example actor in one registry: ``rivetkit serve examples/all.py``."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import rivetkit  # noqa: E402
from counter import counter  # noqa: E402
from order_workflow import order  # noqa: E402
from reminders import reminders  # noqa: E402
from todos import todo_list  # noqa: E402

registry = rivetkit.setup(counter, todo_list, reminders, order)

if __name__ == "__main__":
    registry.run()
