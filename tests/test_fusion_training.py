"""AdapterFusion learns: a few steps on a tiny model lower the loss and move the fusion's attention
away from uniform, and the regularization term is AdapterHub's formula, also in its gradient."""

import math

import torch

from adapterctl import Fuse
from adapterctl.methods.fusion.layer import Fusion
from conftest import batch, perturb, tiny_model

ADAPTERS = ["a", "b", "c"]
FUSION = "a,b,c"


def fusion_model():
    model = tiny_model()
    for n in ADAPTERS:
        model.add_adapter(n, "pfeiffer")
    perturb(model, ".adapters.", std=0.3)  # three different adapters, as trained ones would be
    model.add_fusion(ADAPTERS, "dynamic")
    model.add_classification_head(FUSION, num_labels=2)
    model.train_fusion(Fuse(*ADAPTERS))
    return model


def attention(model, inputs) -> torch.Tensor:
    """Fusion attention (layers, rows, tokens, adapters) of one forward in eval mode, recomputed
    from each fusion layer's inputs as Fusion.forward does (softmax of query . key)."""
    probs, hooks = [], []
    for module in model.modules():
        if isinstance(module, Fusion):
            def keep(fusion, args):
                query, up, _ = args
                scores = torch.matmul(fusion.query(query).unsqueeze(2), fusion.key(up).transpose(-2, -1)).squeeze(2)
                probs.append(torch.softmax(scores / fusion.T, dim=-1))
            hooks.append(module.register_forward_pre_hook(keep))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(**inputs)
    model.train(was_training)
    for h in hooks:
        h.remove()
    return torch.stack(probs)


def test_a_few_fusion_steps_lower_the_loss_and_move_attention_away_from_uniform():
    torch.manual_seed(0)
    model = fusion_model()
    inputs = batch(rows=8, length=9)
    labels = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1])
    start = attention(model, inputs)
    assert (start - 1 / 3).abs().max() < 0.05  # fresh query/key: near-uniform attention
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    losses = []
    for _ in range(40):
        loss = model(**inputs, labels=labels).loss
        losses.append(loss.item())
        (loss + model.fusion_regularization_loss()).backward()
        optimizer.step()
        optimizer.zero_grad()
    assert losses[-1] < 0.5 * losses[0]
    end = attention(model, inputs)
    # mean KL(attention || uniform) per position, in nats; log(3) = 1.10 is all weight on one adapter
    kl = (end * (end * 3).log()).sum(-1).mean().item()
    assert kl > 0.05, f"attention stayed uniform (KL {kl:.4f})"
    assert kl < math.log(3)


def test_regularization_is_001_times_squared_distance_to_identity_and_its_gradient():
    model = fusion_model()
    layers = [m for m in model.modules() if isinstance(m, Fusion)]
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for m in layers:
            m.value.weight.add_(torch.randn(m.value.weight.shape, generator=g) * 0.1)
    loss = model.fusion_regularization_loss()
    eye = torch.eye(32)
    assert torch.allclose(loss, sum(0.01 * ((eye - m.value.weight) ** 2).sum() for m in layers))
    loss.backward()
    for m in layers:  # d/dV 0.01 ||I - V||^2 = -0.02 (I - V): it pulls V back to the identity
        assert torch.allclose(m.value.weight.grad, -0.02 * (eye - m.value.weight.detach()), atol=1e-7)
        assert m.query.weight.grad is None  # only the value matrix is regularized
    model.freeze_model(True)  # a frozen fusion adds nothing (the loop adds the term unconditionally)
    assert model.fusion_regularization_loss() is None


def test_fuse_defaults_to_the_papers_recipe_at_10x_its_fusion_lr():
    """AdapterFusion's recipe (Pfeiffer et al. 2021, AdapterHub's run_fusion_glue.py) but fusion lr
    5e-4: the paper's 5e-5 left MiniLM's attention uniform over 80 cb steps (README)."""
    from adapterctl.run import settings

    cfg = settings.load("fuse", ["adapters=[a,b]"])
    t = cfg.trainer
    assert (t.lr, t.epochs, t.max_length, t.warmup_ratio, t.backbone_dropout) == (5e-4, 10, 128, 0.0, "all")
    assert settings.load("fuse", ["adapters=[a,b]", "fusion=static"]).trainer.lr == 5e-4
    assert settings.load("fuse", ["adapters=[a,b]", "fusion.lr=1e-4"]).trainer.lr == 1e-4
