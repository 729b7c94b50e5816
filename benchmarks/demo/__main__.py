"""`python -m benchmarks.demo --out DIR` (what `make demo` runs)."""

import sys

from benchmarks.demo.cli import main

sys.exit(main())
