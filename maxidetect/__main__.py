"""``python -m maxidetect``: the command line."""

import sys

from maxidetect.cli import main

sys.exit(main())
