"""``python -m srsoup`` = the ``srsoup`` command."""

import sys

from srsoup.cli import main

sys.exit(main())
