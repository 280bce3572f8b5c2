"""Compute clusters on the server: the cluster reconciler, the agents' API and the runner
that follows a job's runs on its nodes."""
