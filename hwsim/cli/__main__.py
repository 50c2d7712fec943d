"""``python -m hwsim.cli ...`` = the ``hwsim`` console script."""

import sys

from hwsim.cli import main

sys.exit(main())
