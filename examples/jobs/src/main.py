"""hello-code: runs from the uploaded code snapshot, which is the working directory."""

import argparse
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--greeting", required=True)
parser.add_argument("--times", type=int, default=1)
args = parser.parse_args()

# .amlignore lists this file, so it must not be in the snapshot.
assert not Path("secret.txt").exists(), "secret.txt should have been excluded by .amlignore"
assert Path("helper.py").exists(), "helper.py should be in the snapshot"

from helper import shout  # noqa: E402

for _ in range(args.times):
    print(shout(args.greeting))
print("snapshot ok: secret.txt excluded")
