import sys

from madeus.agents.serve import main

sys.exit(main())
