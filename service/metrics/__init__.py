"""Prometheus metrics (issue 12): what the worker processes count as they work
(`definitions`), what the API computes from the database at each scrape (`scrape`),
and the worker's own HTTP endpoint over its pool's multiprocess files (`worker`).

No metric carries a tenant id: a label per tenant is a series per tenant, unbounded,
and it would tell whoever can scrape who the tenants are.
"""
