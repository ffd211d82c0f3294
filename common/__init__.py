"""Small utilities shared by the six pipelines: config, run folder, seeding, checkpoints,
preemption, logging, distributed setup, device/AMP and the parameter budget."""
