"""``python -m lib_codeformer``: see ``lib_codeformer.cli``."""

import sys

from .cli import main

sys.exit(main())
