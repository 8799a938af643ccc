"""The project file, ``slmdeploy.toml``: loading it, structuring its tables into typed options, the gates and
fallback of ``[evaluate]``, and the starter file ``slmdeploy init`` writes."""
