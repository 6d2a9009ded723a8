"""``python -m dsprof ...`` is the ``dsprof`` command."""

from dsprof.cli import main

main()
