"""``python -m linchain`` (also under ``torchrun -m linchain``)."""

import sys

from linchain.cli.main import main

sys.exit(main())
