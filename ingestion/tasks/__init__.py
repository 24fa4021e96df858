"""What a job asks of a model: task specs, prompts, output checks, schemas."""
