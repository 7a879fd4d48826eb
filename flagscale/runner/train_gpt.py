"""Smoke training entry: a tiny GPT trained with megatron.core for a few steps, deterministically.

Started by the smoke runner under torchrun, one process per rank:

    python -m torch.distributed.run --nproc-per-node 2 ... train_gpt.py --job J.json --metrics M

This file is a standalone script: it imports only the standard library, torch and megatron (from
the build tree, which the runner puts first on PYTHONPATH), never ``flagscale``. Rank 0 appends
one JSON object per line to the metrics file:

    {"event": "provenance", "megatron_core": "<megatron/core/__init__.py>", "torch": "...", ...}
    {"event": "step", "step": 1, "loss": 4.84}            # the loss averaged over data parallel
    {"event": "summary", "steps": 10, "train_seconds": 0.6, "peak_rss_mb": 380.0, "modules": {}}

``modules`` maps every loaded module whose file lies outside this Python's installation
(its prefixes and site-packages) to that file: the runner checks they all come from the build tree.

A non-finite loss is written and then the job stops with exit status 3.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import time
import warnings

import torch
import torch.distributed as dist

NAN_EXIT = 3
STARTED = time.perf_counter()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", required=True, help="job.json written by the runner")
    parser.add_argument("--metrics", required=True, help="JSON-lines file rank 0 appends to")
    return parser.parse_args()


class Metrics:
    """Rank 0's JSON-lines record; every line is flushed so a killed job leaves what it had."""

    def __init__(self, path: str, enabled: bool) -> None:
        self.stream = open(path, "a", encoding="utf-8") if enabled else None  # noqa: SIM115

    def write(self, event: str, **fields: object) -> None:
        if self.stream is None:
            return
        self.stream.write(json.dumps({"event": event, **fields}) + "\n")
        self.stream.flush()


def synthetic_batch(step: int, dp_rank: int, job: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens and labels for one step from a generator keyed on (seed, step, dp rank).

    ``arithmetic``: x[t+1] = (x[t] + c) mod V with a random start and stride c per sample, so the
    stride can be read off the context and the loss falls within a few steps. ``random``: uniform.
    """
    seed = job["train"]["seed"]
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step * 131 + dp_rank)
    batch, seq, vocab = job["train"]["micro_batch"], job["model"]["seq_len"], job["model"]["vocab"]
    if job["data"]["generator"] == "random":
        sequence = torch.randint(0, vocab, (batch, seq + 1), generator=generator)
    else:
        start = torch.randint(0, vocab, (batch, 1), generator=generator)
        stride = torch.randint(1, job["data"]["max_stride"] + 1, (batch, 1), generator=generator)
        sequence = (start + stride * torch.arange(seq + 1).unsqueeze(0)) % vocab
    return sequence[:, :-1].contiguous(), sequence[:, 1:].contiguous()


def build_model(job: dict):  # -> megatron GPTModel
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.transformer.transformer_config import TransformerConfig

    model = job["model"]
    config = TransformerConfig(
        num_layers=model["layers"],
        hidden_size=model["hidden"],
        num_attention_heads=model["heads"],
        tensor_model_parallel_size=job["parallel"]["tensor"],
        hidden_dropout=model["dropout"],
        attention_dropout=model["dropout"],
        params_dtype=torch.float32,
        bf16=False,
        fp16=False,
        use_cpu_initialization=False,  # weights drawn on the device, inside the RNG tracker
        # Already False by default; spelled out because on CPU bias_dropout_fusion goes through
        # torch.compile (tens of seconds, other dropout RNG use) and the others need CUDA.
        bias_dropout_fusion=False,
        masked_softmax_fusion=False,
        gradient_accumulation_fusion=False,
        deterministic_mode=True,
        cuda_graph_scope=[],  # the default "full" only triggers a deprecation warning
    )
    return GPTModel(
        config=config,
        transformer_layer_spec=get_gpt_layer_local_spec(),
        vocab_size=model["vocab"],
        max_sequence_length=model["seq_len"],
        position_embedding_type=model["position_embedding"],
        parallel_output=True,
        share_embeddings_and_output_weights=True,
    )


def modules_outside_installation() -> dict[str, str]:
    """Loaded modules whose files are not part of this Python or its installed packages."""
    import site
    import sysconfig

    installed = {sys.prefix, sys.base_prefix, sys.exec_prefix, *site.getsitepackages()}
    installed.update(sysconfig.get_paths().values())
    roots = tuple(os.path.join(os.path.realpath(p), "") for p in installed if p)
    found = {}
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if path and not os.path.realpath(path).startswith(roots):
            found[name] = os.path.realpath(path)
    return found


def record_provenance(metrics: Metrics) -> None:
    import megatron.core

    metrics.write(
        "provenance",
        megatron_core=os.path.realpath(megatron.core.__file__),
        megatron_core_version=getattr(megatron.core, "__version__", None),
        torch=torch.__version__,
        python=sys.executable,
        sys_path=sys.path,
    )


def train(job: dict, metrics: Metrics) -> int:
    from megatron.core import parallel_state, tensor_parallel

    parallel_state.initialize_model_parallel(tensor_model_parallel_size=job["parallel"]["tensor"])
    seed = job["train"]["seed"]
    torch.manual_seed(seed)
    tensor_parallel.model_parallel_cuda_manual_seed(seed)
    model = build_model(job)
    optimizer = torch.optim.Adam(model.parameters(), lr=job["train"]["lr"])

    dp_group = parallel_state.get_data_parallel_group()
    dp_rank = parallel_state.get_data_parallel_rank()
    dp_size = parallel_state.get_data_parallel_world_size()
    seq, micro_batch = job["model"]["seq_len"], job["train"]["micro_batch"]
    attention_mask = torch.triu(torch.ones(1, 1, seq, seq, dtype=torch.bool), diagonal=1)
    position_ids = torch.arange(seq, dtype=torch.long).unsqueeze(0).expand(micro_batch, -1)

    started = time.perf_counter()
    for step in range(1, job["train"]["steps"] + 1):
        # As Megatron's get_batch: tensor-parallel rank 0 makes the batch and broadcasts it.
        batch = None
        if parallel_state.get_tensor_model_parallel_rank() == 0:
            tokens, labels = synthetic_batch(step, dp_rank, job)
            batch = {"tokens": tokens, "labels": labels}
        batch = tensor_parallel.broadcast_data(["tokens", "labels"], batch, torch.int64)
        optimizer.zero_grad(set_to_none=True)
        per_token = model(batch["tokens"], position_ids, attention_mask, labels=batch["labels"])
        loss = per_token.float().mean()
        loss.backward()
        if dp_size > 1:
            for parameter in model.parameters():
                if parameter.grad is not None:
                    dist.all_reduce(parameter.grad, group=dp_group)
                    parameter.grad.div_(dp_size)
        optimizer.step()

        reported = loss.detach().clone()
        dist.all_reduce(reported, group=dp_group)
        value = (reported / dp_size).item()
        metrics.write("step", step=step, loss=value)
        if dist.get_rank() == 0:
            print(f"step {step}: loss {value:.6f}", flush=True)
        if not math.isfinite(value):
            return NAN_EXIT

    peak = torch.tensor(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
    dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    metrics.write(
        "summary",
        steps=job["train"]["steps"],
        startup_seconds=round(started - STARTED, 3),  # imports, process group, model build
        train_seconds=round(time.perf_counter() - started, 3),
        peak_rss_mb=round(peak.item(), 1),
        modules=modules_outside_installation(),
    )
    parallel_state.destroy_model_parallel()
    return 0


def main() -> int:
    args = parse_args()
    with open(args.job, encoding="utf-8") as stream:
        job = json.load(stream)
    warnings.filterwarnings("ignore", message=".*(Apex|Transformer Engine).*not installed.*")
    # Only silences megatron's "set CUDA_DEVICE_MAX_CONNECTIONS=1" advice (no effect on CPU).
    os.environ.setdefault("CUDA_DEVICE_MAX_CONNECTIONS", "1")
    dist.init_process_group(backend="gloo")
    torch.set_num_threads(1)  # tiny tensors; two processes share the cores
    torch.use_deterministic_algorithms(True)
    metrics = Metrics(args.metrics, enabled=dist.get_rank() == 0)
    record_provenance(metrics)
    status = train(job, metrics)
    if status == 0:
        dist.destroy_process_group()
    return status


if __name__ == "__main__":
    sys.exit(main())
