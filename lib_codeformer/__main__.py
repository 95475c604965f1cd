"""``python -m lib_codeformer``: see ``lib_codeformer.frontends.cli``."""

import sys

from .frontends.cli import main

sys.exit(main())
