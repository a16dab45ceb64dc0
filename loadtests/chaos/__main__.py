import sys

from loadtests.chaos.cli import main

sys.exit(main())
