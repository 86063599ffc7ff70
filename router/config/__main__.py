"""``python -m router.config schema`` writes the JSON Schema to stdout."""

import sys

from router.config.schema import config_schema_text

if __name__ == "__main__":
    if sys.argv[1:] != ["schema"]:
        print("usage: python -m router.config schema > config/schema.json", file=sys.stderr)
        raise SystemExit(2)
    sys.stdout.write(config_schema_text())
