#!/usr/bin/env python
"""Berth's command-line entry point."""

import os
import sys
from pathlib import Path


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "berth.settings")
    from django.core.management import execute_from_command_line

    from berth import datadir

    # Before Django is set up: the settings create the data dir when imported.
    refused = datadir.preflight(sys.argv, Path(__file__).resolve().parent, sys.stderr)
    if refused is not None:
        sys.exit(refused)
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
