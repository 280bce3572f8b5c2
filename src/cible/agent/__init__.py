"""The node agent (`python -m cible.agent`, or `cible agent`)."""
