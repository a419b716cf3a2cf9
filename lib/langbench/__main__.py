import sys

from langbench.cli import main

sys.exit(main())
