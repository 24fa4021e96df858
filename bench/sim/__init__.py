"""The scheduling simulator behind `bench/schedule.py` (see its docstring for the model).

- `perf`: the service-time model (per-GPU roofline of one vLLM step) and the work
  a request costs, the unit of the lower bound;
- `workload`: documents, arrivals and bursts, routed by the real `plan_route`;
- `engine`: vLLM replicas stepping on a simulated clock (chunked prefill, KV blocks
  allocated as tokens are processed, recompute preemption) and the event loop;
- `policies`: who sends which request to which replica, and when: Longdoc
  (the real `ingestion.capacity.admission.decide`) and the admission-free baselines;
- `metrics`: makespan, waits, KV utilisation, preemptions, the lower bound.
"""
