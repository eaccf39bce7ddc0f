"""``python -m clip_match.train`` (also what torchrun launches with ``-m clip_match.train``)."""
import sys

from . import main

sys.exit(main())
