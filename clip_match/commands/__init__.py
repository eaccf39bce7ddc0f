"""One module per `clip-match` command (training-side ones import torch only when they run).

Each module is a thin layer over library functions and provides::

    configure(parser: argparse.ArgumentParser)  adds its arguments
    run(args: argparse.Namespace) -> int        does the work, returns the exit status

`clip_match.cli` lists them; argument groups shared by several commands live in `options`.
"""
