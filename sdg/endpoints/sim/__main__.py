"""`python -m sdg.endpoints.sim --help`."""

import sys

from sdg.endpoints.sim.cli import main

sys.exit(main())
