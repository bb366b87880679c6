"""Pure logic of moaa_ray: prompts, MoA layer plans, judging, ranking, statistics.

Nothing here imports ray, torch, transformers, vllm or deepspeed; every function takes plain data.
"""
