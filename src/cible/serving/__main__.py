"""`python -m cible.serving`: one replica's scoring server (see cible.serving.main)."""

from cible.serving.main import main

raise SystemExit(main())
