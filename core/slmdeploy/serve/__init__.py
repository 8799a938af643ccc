"""``slmdeploy serve``: the deployed models behind an OpenAI-compatible API, with a chat page.

- `models`: the packages to serve (``deploy.listing``'s deployable variants, or package folders), each loaded once
  with its tokenizer, chat template and context length;
- `engine`: one onnxruntime-genai ``Engine`` per model, stepped by its own thread; requests join it through a
  command queue and their tokens come back to asyncio as text;
- `text`: a request's tokens as text (incremental decoding, stop strings held back until they cannot match);
- `schema`: the request and response bodies (pydantic), and the errors in OpenAI's shape;
- `metrics`: Prometheus counters and histograms;
- `app`: the FastAPI routes; `server`: uvicorn, the address and key checks, shutdown.

FastAPI, uvicorn, sse-starlette and prometheus-client come with the ``[serve]`` extra and are imported only here.
"""
