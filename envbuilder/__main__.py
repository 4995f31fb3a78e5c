import sys

from envbuilder.cli import main

sys.exit(main())
