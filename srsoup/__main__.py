"""``python -m srsoup`` = the ``srsoup`` command."""

from srsoup.cli import console_main

console_main()
