#!/usr/bin/env python3
"""seqquant command line: ``python cli.py --help``. All logic lives in :mod:`orchestrator.cli_app`."""
import sys

if __name__ == "__main__":
    from orchestrator.cli_app import main

    sys.exit(main())
