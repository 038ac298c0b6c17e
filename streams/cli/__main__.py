"""`python -m streams.cli.main`."""

import sys

from streams.cli.main import main

sys.exit(main())
