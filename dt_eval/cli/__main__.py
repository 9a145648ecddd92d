import sys

from dt_eval.cli import main

sys.exit(main())
