import sys

from kvtrace.cli import main

sys.exit(main())
