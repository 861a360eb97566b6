"""``python -m palora`` works like the ``palora`` script (for ``accelerate launch -m palora``)."""

import sys

from .cli import main

sys.exit(main())
