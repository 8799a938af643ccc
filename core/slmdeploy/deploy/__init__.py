"""What a project has deployed: listing ``build/`` (``slmdeploy ls``, ``report``), chatting with a model
(``slmdeploy run``), and undoing registrations (``slmdeploy clean --registry``)."""
