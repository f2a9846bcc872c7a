import sys

from aion.cli import main

sys.exit(main())
