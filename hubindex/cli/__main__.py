"""`python -m hubindex.cli`."""

import sys

from hubindex.cli import main

sys.exit(main())
