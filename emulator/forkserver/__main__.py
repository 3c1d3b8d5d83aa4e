"""``python -m emulator.forkserver --status-dir DIR [MODULE ...]``: run the fork server."""
import sys

from emulator.forkserver.server import main

sys.exit(main())
