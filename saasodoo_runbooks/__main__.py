"""python -m saasodoo_runbooks: the saasodoo-runbooks command line."""

import sys

from saasodoo_runbooks.cli import main

sys.exit(main())
