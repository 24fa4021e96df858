"""The scheduling simulator behind `bench/schedule.py` (see its docstring for the model).

- `perf`: the service-time model (per-GPU roofline of one vLLM step) and the work
  a request costs, the unit of the lower bound;
- `workload`: documents, arrivals and bursts, routed by the real `plan_route`;
- `server`: a vLLM replica stepping on a simulated clock (chunked prefill, KV blocks
  allocated as tokens are processed, recompute preemption);
- `jobs`: a job and its requests as they run (progress, KV held, waits, preemptions);
- `engine`: the event loop (arrivals, step ends, ticks) and the dispatcher interface;
- `policies`: who sends which request to which replica, and when: Longdoc
  (the real `ingestion.capacity.admission.decide`) and the admission-free baselines;
- `metrics`: makespan, waits, KV utilisation, preemptions, the lower bound.
"""
