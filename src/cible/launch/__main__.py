import sys

from cible.launch.launcher import main

sys.exit(main())
