"""``python -m gliomaseg``: the same as the ``gliomaseg`` command."""

import sys

from gliomaseg.cli import main

sys.exit(main())
