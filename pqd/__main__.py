import sys

from pqd.cli import main

sys.exit(main())
