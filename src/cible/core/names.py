"""Azure-style generated names: `khaki_boot_9xq8zvv8k1` job names, `adjective_noun` display names."""

from __future__ import annotations

import hashlib
import secrets

ADJECTIVES = (
    "amber", "brave", "calm", "clever", "eager", "gentle", "happy", "khaki", "lively", "mighty",
    "nice", "quiet", "silly", "sincere", "sleepy", "teal", "tidy", "witty", "zen", "bold",
)
NOUNS = (
    "boot", "cloud", "lemon", "river", "tiger", "pear", "kettle", "hat", "garden", "stone",
    "owl", "lamp", "bird", "road", "candle", "shoe", "yak", "plum", "leaf", "brush",
)
ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def _pick(seed: str) -> tuple[str, str]:
    digest = hashlib.sha256(seed.encode()).digest()
    return ADJECTIVES[digest[0] % len(ADJECTIVES)], NOUNS[digest[1] % len(NOUNS)]


def job_name(seed: str | None = None) -> str:
    seed = seed or secrets.token_hex(8)
    adjective, noun = _pick(seed)
    suffix = "".join(secrets.choice(ALPHABET) for _ in range(10))
    return f"{adjective}_{noun}_{suffix}"


def display_name_for(name: str) -> str:
    adjective, noun = _pick(name + "/display")
    return f"{adjective}_{noun}"
