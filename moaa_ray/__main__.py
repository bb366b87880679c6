"""``python -m moaa_ray <command> ...``: the ``moaa`` command without the installed script."""

import sys

from moaa_ray.cli import main

sys.exit(main())
