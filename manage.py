#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    from django.core.management import execute_from_command_line

    from core import tracing

    tracing.setup()  # runserver's requests, and what commands publish and send
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
