import pytest
import torch

from engine.model import AsymmetricPolicyNetwork, layer_counts, parameter_counts


def test_layer_counts_follow_the_seed():
    assert layer_counts(AsymmetricPolicyNetwork()) == {"macro": 37, "micro": 10, "head": 4, "value": 2}


def test_parameter_count_about_83811():
    counts = parameter_counts(AsymmetricPolicyNetwork())
    assert (counts["policy"], counts["value"], counts["total"]) == (83_782, 2_177, 85_959)  # the README's figures
    total = counts["total"]
    assert abs(total - 83_811) <= 0.05 * 83_811
    model = AsymmetricPolicyNetwork()
    assert total == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_has_batchnorm_after_hidden_layers():
    norms = [m for m in AsymmetricPolicyNetwork().modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(norms) == 36 + 9 + 3


@pytest.mark.parametrize("train_mode", [True, False])
@pytest.mark.parametrize("batch", [1, 64])
def test_forward_in_train_and_eval_mode(train_mode, batch):
    torch.manual_seed(0)
    model = AsymmetricPolicyNetwork().train(train_mode)
    observations = torch.randn(batch, 86)
    logits = model(observations)
    assert logits.shape == (batch, 3) and torch.isfinite(logits).all()
    (logits.sum() + model.value(observations).sum()).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_skipping_macro_builds_no_graph_through_macronet():
    model = AsymmetricPolicyNetwork().eval()
    model(torch.randn(8, 86), update_macro=False).sum().backward()
    assert all(p.grad is None for p in model.macro_net.parameters())
    assert all(p.grad is not None for p in [*model.micro_net.parameters(), *model.head.parameters()])


def test_refresh_batchnorm_updates_statistics_not_weights():
    model = AsymmetricPolicyNetwork().eval()
    weights = {k: v.clone() for k, v in model.named_parameters()}
    before = model.micro_net.layers[0][1].running_mean.clone()
    model.refresh_batchnorm(torch.randn(256, 86) * 3 + 1, cumulative=True)
    assert not torch.equal(before, model.micro_net.layers[0][1].running_mean)
    assert all(torch.equal(v, dict(model.named_parameters())[k]) for k, v in weights.items())
    assert not model.training


def test_residual_branches_start_as_the_identity():
    """Zero-initialised residual branches: at initialization MacroNet is its input and output projections."""
    torch.manual_seed(0)
    macro = AsymmetricPolicyNetwork().eval().macro_net
    x = torch.randn(16, 42)
    projected = macro.layers[0](x)
    torch.testing.assert_close(macro.layers[1:-1](projected), projected)


def test_folded_policy_is_the_eval_mode_network():
    """The rollout's BatchNorm-folded network computes the same logits and values as model.eval()."""
    from engine.model import FoldedPolicy

    torch.manual_seed(0)
    model = AsymmetricPolicyNetwork().eval()
    for module in model.modules():  # non-trivial statistics and scales, so folding has something to fold
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
    folded = FoldedPolicy(model)
    observations = torch.randn(32, 86)
    torch.testing.assert_close(folded(observations), model(observations), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(folded.folded.value(observations), model.value(observations), rtol=1e-4, atol=1e-5)
