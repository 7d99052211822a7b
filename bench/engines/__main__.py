import sys

from bench.engines.run import main

sys.exit(main())
