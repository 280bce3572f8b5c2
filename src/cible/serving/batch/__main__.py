import sys

from cible.serving.batch.node import main

sys.exit(main())
