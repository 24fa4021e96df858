"""Batches: many requests followed as one, whichever way they came in.

`status` is pure (an item's effective status, the counts, the batch's next status);
`archives` makes a batch of an uploaded archive and `expansion` expands it entry by
entry into documents, items and jobs; `requests` makes a batch of a request file
(OpenAI's Batch API) and expands it, once `request_lines` has found every line valid;
`items` is what both expansions share (an item per line, failed items, the start and
end of an expansion); `lifecycle` finds, lists, cancels, advances and expires
batches; `results` builds a request's output line and `outputs` appends those lines
to the batch's output and error files as requests end; `result_cursor` pages the
results endpoint with a cursor that skips no request that ends out of line order.
An item with a job takes its status from the job (a join), so the job code paths
know nothing of batches.
"""
