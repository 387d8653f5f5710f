"""``python -m s2lpo.cli``: the ``s2lpo`` command."""

import sys

from s2lpo.cli import main

sys.exit(main())
