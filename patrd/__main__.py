"""``python -m patrd serve|restore|agent …`` is ``patrd``; any other verb is ``patrctl``."""

import sys

from patrd.cli.main import daemon_main, main

if __name__ == "__main__":
    if sys.argv[1:2] in (["serve"], ["restore"], ["agent"]):
        raise SystemExit(daemon_main(sys.argv[1:]))
    raise SystemExit(main(sys.argv[1:]))
