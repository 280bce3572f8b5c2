"""Every rank adds its rank + 1 into one tensor: with 4 ranks each prints sum=10."""

import os

import torch
import torch.distributed as dist

dist.init_process_group("gloo", init_method="env://")
total = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(total)
print(
    f"rank={dist.get_rank()} world={dist.get_world_size()} node_rank={os.environ['NODE_RANK']} "
    f"local_rank={os.environ['LOCAL_RANK']} sum={total.item():.0f} master={os.environ['MASTER_ADDR']}",
    flush=True,
)
dist.destroy_process_group()
