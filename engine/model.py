"""The seed's asymmetric policy network: a deep MacroNet, a shallow MicroNet and a small decision head.

Layer counts follow the seed exactly (37 / 10 / 4 Linear layers, BatchNorm after hidden layers); the
widths are chosen so the total is about 83.8k trainable parameters at the default feature sizes.
MacroNet's hidden layers are residual (x + ReLU(BN(Linear(x)))) so 37 layers train.

What makes this deep network learn under RL (measured, see docs/learning.md):
- each residual branch starts at zero (its BatchNorm scale is 0), so at initialization MacroNet is a
  two-layer map and the gradient reaches the input projection through 35 identities; the depth is
  grown into during training instead of scrambling the features from the first step;
- the logit layer starts 100x smaller than PyTorch's default, so the first policy is almost uniform
  and does not depend on noise in the untrained features (no action is favoured by chance);
- a small value head beside the logits (PPO's baseline) shares the embeddings, so predicting returns
  also shapes what MacroNet extracts.

BatchNorm: both trainers keep the network in eval mode for sampling *and* for the loss, so the policy
that acts is exactly the policy that is differentiated. Running statistics are refreshed explicitly
by `refresh_batchnorm(observations)` — a no-grad train-mode pass over the rollout just used — after
each optimizer step, and calibrated once on training data before the first rollout.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

MACRO_LINEAR_LAYERS, MICRO_LINEAR_LAYERS, HEAD_LINEAR_LAYERS = 37, 10, 4
LOGIT_INIT_SCALE = 0.01  # the logit layer's initial weights, relative to PyTorch's default


@dataclass(frozen=True)
class ModelShape:
    """Input sizes and widths; defaults give about 83.8k parameters for 42 + 42 features."""

    macro_dim: int = 42
    micro_dim: int = 42
    macro_width: int = 32
    macro_embedding: int = 32
    micro_width: int = 63
    micro_output: int = 32
    head_width: int = 32
    value_width: int = 32


class BatchNorm(nn.BatchNorm1d):
    """BatchNorm1d that also accepts a batch of one in train mode (it has no batch statistics, so it
    uses the running ones) — the original trainer's rollout is batch size 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


class ResidualBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.linear, self.norm = nn.Linear(width, width), BatchNorm(width)
        nn.init.zeros_(self.norm.weight)  # the block starts as the identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.relu(self.norm(self.linear(x)))


def _dense(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, outputs), BatchNorm(outputs), nn.ReLU())


class LayerStack(nn.Module):
    """A network that is one `layers` sequence (its state-dict keys keep the `layers.` prefix)."""

    layers: nn.Sequential

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class MacroNet(LayerStack):
    """37 Linear layers: input projection, 35 residual hidden layers, embedding projection."""

    def __init__(self, shape: ModelShape):
        super().__init__()
        width = shape.macro_width
        hidden = [ResidualBlock(width) for _ in range(MACRO_LINEAR_LAYERS - 2)]
        self.layers = nn.Sequential(_dense(shape.macro_dim, width), *hidden, nn.Linear(width, shape.macro_embedding))


class MicroNet(LayerStack):
    """10 Linear layers: 9 dense hidden layers and an output projection."""

    def __init__(self, shape: ModelShape):
        super().__init__()
        width = shape.micro_width
        hidden = [_dense(shape.micro_dim if i == 0 else width, width) for i in range(MICRO_LINEAR_LAYERS - 1)]
        self.layers = nn.Sequential(*hidden, nn.Linear(width, shape.micro_output))


class DecisionHead(LayerStack):
    """4 Linear layers from [macro embedding, micro output, exposure level, equity ratio] to 3 logits."""

    def __init__(self, shape: ModelShape):
        super().__init__()
        width = shape.head_width
        inputs = shape.macro_embedding + shape.micro_output + 2
        self.layers = nn.Sequential(_dense(inputs, width), _dense(width, width), _dense(width, width // 2), nn.Linear(width // 2, 3))
        with torch.no_grad():  # a near-uniform first policy, whatever the features say
            self.layers[-1].weight.mul_(LOGIT_INIT_SCALE)
            self.layers[-1].bias.zero_()


def hold_flat(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same weights with a decision head that always chooses HOLD (action 0): a policy that starts
    flat never trades. What selection keeps when validation shows no edge. (The head appears twice in a
    state dict, as `head` and inside `heads`: both copies change.)"""
    logits = f"head.layers.{HEAD_LINEAR_LAYERS - 1}."
    flat = dict(weights)
    for key, value in weights.items():
        if key.startswith(logits) or key.startswith(f"heads.{logits}"):
            flat[key] = torch.zeros_like(value) if key.endswith("weight") else torch.tensor([1.0, 0.0, 0.0], dtype=value.dtype)
    return flat


class ValueHead(nn.Module):
    """2 Linear layers from the head's input to the expected discounted return (PPO's baseline)."""

    def __init__(self, shape: ModelShape):
        super().__init__()
        inputs = shape.macro_embedding + shape.micro_output + 2
        self.layers = nn.Sequential(nn.Linear(inputs, shape.value_width), nn.ReLU(), nn.Linear(shape.value_width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).squeeze(-1)


class PolicyAndValue(nn.Module):
    """The head and the value head on the same input: (logits, value)."""

    def __init__(self, head: DecisionHead, value_head: ValueHead):
        super().__init__()
        self.head, self.value_head = head, value_head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(x), self.value_head(x)


class AsymmetricPolicyNetwork(nn.Module):
    """Observation [macro | micro | level | equity ratio] → logits for HOLD, BUY, SELL (and a value)."""

    def __init__(self, shape: ModelShape = ModelShape()):
        super().__init__()
        self.shape = shape
        self.macro_net, self.micro_net, self.head = MacroNet(shape), MicroNet(shape), DecisionHead(shape)
        self.value_head = ValueHead(shape)
        self.heads = PolicyAndValue(self.head, self.value_head)

    def embed(self, observation: torch.Tensor, update_macro: bool = True) -> torch.Tensor:
        """[MacroNet embedding | MicroNet output]: the position-independent part of the network."""
        macro_dim, micro_dim = self.shape.macro_dim, self.shape.micro_dim
        # On updates that skip MacroNet its output is a constant: no graph, so no backward through it.
        with contextlib.nullcontext() if update_macro else torch.no_grad():
            macro_embedding = self.macro_net(observation[:, :macro_dim])
        return torch.cat([macro_embedding, self.micro_net(observation[:, macro_dim : macro_dim + micro_dim])], dim=1)

    def head_input(self, observation: torch.Tensor, update_macro: bool = True) -> torch.Tensor:
        state = observation[:, self.shape.macro_dim + self.shape.micro_dim :]
        return torch.cat([self.embed(observation, update_macro), state], dim=1)

    def forward(self, observation: torch.Tensor, update_macro: bool = True) -> torch.Tensor:
        return self.head(self.head_input(observation, update_macro))

    def value(self, observation: torch.Tensor) -> torch.Tensor:
        return self.value_head(self.head_input(observation))

    def micro_parameters(self) -> list[nn.Parameter]:
        """Everything MacroNet's optimizer does not own: MicroNet, the head and the value head."""
        return [*self.micro_net.parameters(), *self.head.parameters(), *self.value_head.parameters()]

    @torch.no_grad()
    def refresh_batchnorm(self, observations: torch.Tensor, cumulative: bool = False) -> None:
        """Update BatchNorm running statistics from `observations` without touching the weights.

        `cumulative` resets the statistics and uses a plain average (the initial calibration).
        """
        norms = [m for m in self.modules() if isinstance(m, nn.BatchNorm1d)]
        saved = [m.momentum for m in norms]
        was_training = self.training
        for module in norms:
            if cumulative:
                module.reset_running_stats()
                module.momentum = None
        self.train()
        self(observations)
        self.train(was_training)
        for module, momentum in zip(norms, saved):
            module.momentum = momentum


class FoldedPolicy(nn.Module):
    """The eval-mode network with each BatchNorm folded into the Linear before it, for rollouts.

    Eval-mode BatchNorm is a per-channel affine map, so Linear→BN equals one Linear with
    W' = W·s and b' = (b − mean)·s + beta, s = gamma / sqrt(var + eps): the same function, with a
    quarter fewer operations per layer. `sync()` recomputes the folded weights in place (so a
    captured CUDA graph sees them) from the trained network's current weights and statistics.
    """

    def __init__(self, model: AsymmetricPolicyNetwork):
        super().__init__()
        self.source = [model]  # a list, so the trained network is not registered as a submodule
        self.folded = copy.deepcopy(model)
        self.pairs: list[tuple[nn.Linear, nn.BatchNorm1d | None, nn.Linear]] = []
        source_modules = dict(model.named_modules())
        for name, module in list(self.folded.named_modules()):
            if isinstance(module, nn.Linear):
                parent_name, _, child = name.rpartition(".")
                norm_name = {"linear": "norm", "0": "1"}.get(child)
                norm_path = f"{parent_name}.{norm_name}" if norm_name else None
                norm = source_modules.get(norm_path) if norm_path else None
                if isinstance(norm, nn.BatchNorm1d):
                    setattr(self.folded.get_submodule(parent_name), norm_name, nn.Identity())
                else:
                    norm = None
                self.pairs.append((source_modules[name], norm, module))
        self.folded.requires_grad_(False)
        self.sync()

    @torch.no_grad()
    def sync(self) -> None:
        for linear, norm, target in self.pairs:
            if norm is None:
                target.weight.copy_(linear.weight)
                target.bias.copy_(linear.bias)
                continue
            scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
            target.weight.copy_(linear.weight * scale.unsqueeze(1))
            target.bias.copy_((linear.bias - norm.running_mean) * scale + norm.bias)

    def forward(self, observation: torch.Tensor, update_macro: bool = True) -> torch.Tensor:
        return self.folded(observation)


def layer_counts(model: AsymmetricPolicyNetwork) -> dict[str, int]:
    def linear_layers(module: nn.Module) -> int:
        return sum(isinstance(m, nn.Linear) for m in module.modules())

    return {"macro": linear_layers(model.macro_net), "micro": linear_layers(model.micro_net), "head": linear_layers(model.head),
            "value": linear_layers(model.value_head)}


def parameter_counts(model: AsymmetricPolicyNetwork) -> dict[str, int]:
    def trainable(module: nn.Module) -> int:
        return sum(p.numel() for p in module.parameters() if p.requires_grad)

    counts = {"macro": trainable(model.macro_net), "micro": trainable(model.micro_net), "head": trainable(model.head)}
    counts["policy"] = sum(counts.values())
    counts["value"] = trainable(model.value_head)
    counts["total"] = counts["policy"] + counts["value"]
    return counts
