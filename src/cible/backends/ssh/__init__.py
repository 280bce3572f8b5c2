"""Attached machines over SSH: connecting with a pinned host key, probing a host, shipping the
node-side code (the bundle) and starting an agent there."""
