import sys

from mdesc.cli import main

sys.exit(main())
