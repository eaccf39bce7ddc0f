"""``python -m clip_match.train`` (also what torchrun launches with ``-m clip_match.train``)."""
import logging
import os
import sys

from . import main

status = main()
if int(os.environ.get("WORLD_SIZE", "1")) > 1:
    # Under torchrun, leave without interpreter teardown: with torch 2.15 a gloo thread destroyed there
    # sometimes aborts the process ("terminate called without an active exception") after everything is
    # saved, and torchrun then reports the whole run as failed.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
sys.exit(status)
