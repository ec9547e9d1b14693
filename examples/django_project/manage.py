#!/usr/bin/env python
"""The example project's manage.py: run from this directory (see README.md next to it)::

python manage.py migrate && python manage.py pat create 1 laptop -s repo:read -s repo:write
python manage.py runserver
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main() -> None:
    """Run a Django management command with the example's settings."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
