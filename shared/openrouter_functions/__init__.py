"""What a deployed function runs: the request pipeline and everything around it.

``functions/<name>/main.py`` hand each request to :mod:`openrouter_functions.endpoints`. Around the
pipeline (:mod:`.pipeline`): auth, CORS, the error envelope and its exception table, request bodies,
policy and the prompt guard, metering over the ledger backends, metrics, JSON logs, configuration.
It calls OpenRouter through the client package, :mod:`openrouter_service`.
"""
