"""``python -m patrd serve …`` runs the daemon; any other verb is ``patrctl``."""

import sys

from patrd.cli import daemon_main, main

if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        raise SystemExit(daemon_main(sys.argv[1:]))
    raise SystemExit(main(sys.argv[1:]))
