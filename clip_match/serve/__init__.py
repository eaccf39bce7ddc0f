"""`clip-match serve`: grid puzzles, candidate ranking and embeddings over HTTP (FastAPI on uvicorn),
the encoder work of concurrent requests batched. Needs the ``serve`` extra (``pip install
'clip-match[serve]'``); the client, `clip_match.client`, needs only the base install.

- `app`: the endpoints, `Settings`, `create_app(models, settings)`;
- `bodies`: request schemas, reading JSON or multipart bodies;
- `batcher`: the dynamic batcher, one thread per bundle;
- `guard`: API key, the bounded queue, body limit and deadline, in front of the endpoints;
- `models`: the served bundles and indexes (`Models.load`);
- `metrics`: Prometheus metrics;
- `server`: uvicorn in the foreground or on a thread (`ServerThread`).

Runtime: torch-free.
"""
