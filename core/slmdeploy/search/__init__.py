"""A quantization search (``[quantize] search``): its candidate variants built and judged, and the best that meets
the targets deployed. `choice` picks among measured candidates; `run` builds them through the execute layer."""
