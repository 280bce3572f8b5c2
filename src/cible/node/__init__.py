"""What every node's agent uses, whichever provider made the node: its limits (cgroups, the
watchdog), the process runner, the token hand-over and the names of the files in its folder.
Providers and the agent import this package; it imports neither."""
