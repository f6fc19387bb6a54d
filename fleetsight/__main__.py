import sys

from fleetsight.cli import main

sys.exit(main())
