"""Batches: many requests followed as one, whichever way they came in.

`status` is pure (an item's effective status, the counts, the batch's next status);
`archives` makes a batch of an uploaded archive and `expansion` expands it entry by
entry into documents, items and jobs; `lifecycle` finds, lists, cancels, advances and expires
batches; `results` reads what is final so far in the OpenAI output line shape. An
item with a job takes its status from the job (a join), so the job code paths know
nothing of batches.
"""
