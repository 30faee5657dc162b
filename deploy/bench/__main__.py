"""`python -m deploy.bench`: run the benchmarks (deploy.bench.run)."""

import sys

from deploy.bench.run import main

sys.exit(main())
