"""The names of the files in a node's folder, shared by the agent that writes them and the
providers and server that read them. Dependency-free on purpose."""

SESSIONS_DIR = "sessions"  # the instance's open terminal/notebook sessions (one file each)
SELF_STOP_FILE = "stopped-itself"  # written by an agent that stopped itself: why, in one line
AGENT_FILE = "agent.json"  # the agent's pid and start time, written by the provider that started it
PREEMPTED_FILE = "preempted"  # written when a low-priority node is taken back
