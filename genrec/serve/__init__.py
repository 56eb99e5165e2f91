"""Online serving: ``genrec serve --run R`` answers recommendation requests over HTTP.

genrec.serve.service (requests into item indices, batches answered with the run's recommender) and
genrec.serve.batching (dynamic micro-batching) need no web framework; genrec.serve.app (FastAPI)
and the uvicorn server are imported only by ``genrec serve`` itself, so ``import genrec`` and the
recommend path work where FastAPI is not installed (the GPU machine).
"""
