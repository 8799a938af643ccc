"""``slmdeploy serve``: the deployed models behind an OpenAI-compatible API, with a chat page.

- `models`: the packages to serve (``deploy.listing``'s deployable variants, or package folders), each loaded once
  with its tokenizer, chat template and context length;
- `events`: what the HTTP layer and the engine exchange (a `Job` with its `Sampling`; `Delta`, `Finished`, `Failed`);
- `engine`: the continuous-batching scheduler, one thread per model: requests join and leave a running batch at
  every step (``docs/serve-engine.md``); `decoder`: the package's graph in onnxruntime with KV rows kept in place;
  `sampling`: each row's token choice (numpy); `guidance`: response formats per row (llguidance);
- `text`: a request's tokens as text (incremental decoding, stop strings held back until they cannot match);
- `schema`: the request and response bodies (pydantic), and the errors in OpenAI's shape;
- `metrics`: Prometheus counters and histograms;
- `app`: the FastAPI routes; `server`: uvicorn, the address and key checks, shutdown.

FastAPI, uvicorn, sse-starlette, prometheus-client and llguidance come with the ``[serve]`` extra and are imported
only here.
"""
