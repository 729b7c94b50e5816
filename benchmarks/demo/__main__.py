"""`python -m benchmarks.demo --out DIR` (what `make demo` runs)."""

import sys

from benchmarks.demo.cli import main
from benchmarks.zoo.numerics import reexec_pinned

reexec_pinned("benchmarks.demo")  # the demo's figures are the same on every machine, like its zoo's
sys.exit(main())
