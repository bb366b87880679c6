"""SFT and DPO as Ray Train runs with DeepSpeed: ``moaa_ray.train.sft.train_sft`` and
``moaa_ray.train.dpo.train_dpo``; losses, collation and the step plan are pure and CPU-testable."""
