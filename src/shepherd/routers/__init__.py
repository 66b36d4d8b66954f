"""Learned routers and cascade scorers for the baselines (RouteLLM, GraphRouter, FrugalGPT): `learned.py`
fits them from sweeps and saves / loads their artifacts. The policies that use them are in
`shepherd.policies.baselines`."""
