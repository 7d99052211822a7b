import sys

from bench.realsize.run import main

sys.exit(main())
