"""`clip-match query`: ranked candidates per image (table or JSONL), or ranked images for a text.

JSON output, one object per line and per image, written as soon as its batch is answered::

    {"image": "a.png", "results": [{"rank": 1, "id": "...", "text": "...", "key": "...", "score": 0.31,
     "probability": 0.97, "metadata": {}}], "softmax": {"scope": "all", "over": 120}}

``text`` is the candidate as given, ``key`` as the index embedded it (normalised; for an index built
with ``--latex``, the normalised LaTeX, which the table prints).

``score`` is the cosine; ``probability`` a softmax over 100 x cosine across ``softmax.over``
candidates: all of them ("all") or the top ones retrieved from a large/approximate index ("top").
With ``--text`` there is one object ``{"text": ..., "results": [{"rank", "image", "score",
"probability"}], "softmax": ...}``. Unreadable images get an error line on stderr, the others
are answered, and the exit status is 1.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from ..errors import ClipMatchError
from ..index.candidates import candidate_key
from ..index.label_index import Ranking
from ..query import Matcher, expand_images, rank_vectors
from .options import add_json_option, add_model_options, one_line_warnings


def configure(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--image", nargs="+", metavar="PATH",
                      help="images, or folders of images (sub-folders included), to label")
    what.add_argument("--text", help="rank the --images for this text instead")
    parser.add_argument("--images", nargs="+", metavar="PATH",
                        help="with --text: images, or folders of images (sub-folders included), to rank")
    parser.add_argument("--index", help="candidate index directory (from `clip-match index build`)")
    parser.add_argument("--top-k", type=int, default=5, help="results per query (default 5)")
    add_json_option(parser, "one JSON object per line instead of a table")
    parser.add_argument("--latex", action="store_true",
                        help="LaTeX mode: with --text, normalise it as LaTeX; with --image, the index must be a --latex one")
    parser.add_argument("--batch-size", type=int, default=16, help="images per image-tower call")
    add_model_options(parser)


def run(args: argparse.Namespace) -> int:
    one_line_warnings("query")
    if args.top_k < 1:
        raise ClipMatchError(f"--top-k must be at least 1, got {args.top_k}")
    if args.image and not args.index:
        raise ClipMatchError("--image needs --index (build one with `clip-match index build`)")
    if args.text is not None and not args.images:
        raise ClipMatchError("--text needs --images DIR|PATH...")
    matcher = Matcher(args.bundle, args.index, args.device, args.precision)
    return _label_images(matcher, args) if args.image else _rank_images(matcher, args)


def _label_images(matcher: Matcher, args: argparse.Namespace) -> int:
    if args.latex and not matcher.index.latex:
        raise ClipMatchError(f"--latex: the index {args.index} was built without --latex; "
                             "rebuild it with `clip-match index build --latex`")
    _note_clipped(args.top_k, len(matcher.index), "candidates")
    failures = answered = 0
    for name, answer in matcher.iter_rank(expand_images(args.image), args.top_k, args.batch_size):
        answered += 1
        if isinstance(answer, ClipMatchError):
            failures += 1
            print(f"clip-match query: error: {answer}", file=sys.stderr, flush=True)
            continue
        if args.json:
            print(json.dumps({"image": name, "results": [vars(hit) for hit in answer.hits], **_softmax(answer)},
                             ensure_ascii=False), flush=True)
        else:
            _print_table(name, answer, "key" if matcher.index.latex else "text")
    if not answered:
        raise ClipMatchError(f"no images found in {' '.join(args.image)}")
    return 1 if failures else 0


def _rank_images(matcher: Matcher, args: argparse.Namespace) -> int:
    latex = args.latex or (matcher.index is not None and matcher.index.latex)
    if matcher.encoder.count_truncated([candidate_key(args.text, latex)]):
        print(f"clip-match query: warning: the text exceeds the context length of "
              f"{matcher.encoder.context_length} tokens and was truncated", file=sys.stderr)
    query = matcher.text_vector(args.text, latex)
    names, vectors, failures = [], [], 0
    for name, vector in matcher.iter_encode(expand_images(args.images), args.batch_size):
        if isinstance(vector, ClipMatchError):
            failures += 1
            print(f"clip-match query: error: {vector}", file=sys.stderr, flush=True)
            continue
        names.append(name)
        vectors.append(vector)
    if not names:
        raise ClipMatchError("no readable images to rank")
    _note_clipped(args.top_k, len(names), "images")
    ranking = rank_vectors(query, np.stack(vectors), names, args.top_k)
    if args.json:
        results = [{"rank": h.rank, "image": h.id, "score": h.score, "probability": h.probability} for h in ranking.hits]
        print(json.dumps({"text": args.text, "results": results, **_softmax(ranking)}, ensure_ascii=False))
    else:
        _print_table(args.text, ranking, "id")
    return 1 if failures else 0


def _note_clipped(top_k: int, count: int, what: str) -> None:
    if top_k > count:
        print(f"clip-match query: note: --top-k {top_k} is more than the {count} {what}; showing {count}",
              file=sys.stderr)


def _softmax(ranking: Ranking) -> dict:
    return {"softmax": {"scope": ranking.softmax_scope, "over": ranking.softmax_over}}


def _print_table(title: str, ranking: Ranking, label: str) -> None:
    lines = [title]
    lines += [f"  {hit.rank:>3}  {hit.score:+.4f}  {hit.probability:7.2%}  {getattr(hit, label)}" for hit in ranking.hits]
    print("\n".join(lines), flush=True)
