"""DecisionTransformer: shapes, padding, backbone parity with transformers, LoRA, alignment loss, export."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pyseqrl.models import (
    DecisionTransformer,
    DTConfig,
    LoRAConfig,
    alignment_loss,
    apply_lora,
    export_dt,
    kmeans,
    load_dt,
    merge_lora,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
S, A = 5, 3


def small(**kw) -> DecisionTransformer:
    torch.manual_seed(0)
    cfg = {"state_dim": S, "act_dim": A, "hidden_size": 16, "n_layer": 2, "n_head": 2, "context_len": 6, "dropout": 0.0}
    cfg.update(kw)
    return DecisionTransformer(DTConfig(**cfg)).eval()


def segment(B: int, K: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, K, S, generator=g), torch.randn(B, K, A, generator=g), torch.randn(B, K, 1, generator=g),
            torch.randint(0, 1000, (B, K), generator=g))


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:
    """A tiny GPT-2 LM saved with save_pretrained (safetensors)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("tiny_gpt2")
    GPT2LMHeadModel(GPT2Config(vocab_size=97, n_embd=16, n_layer=2, n_head=2, n_positions=64)).save_pretrained(path)
    return path


def test_shapes_and_default_mask():
    m = small()
    s, a, r, t = segment(4, 6)
    out = m(s, a, r, t)
    assert out.shape == (4, 6, A) and out.abs().max() <= 1.0  # tanh head
    out2, emb = m(s, a, r, t, torch.ones(4, 6), return_embeddings=True)
    assert emb.shape == (4, 18, 16)
    torch.testing.assert_close(out, out2)
    # shorter segments than K are fine
    assert m(*segment(2, 3)).shape == (2, 3, A)


@pytest.mark.parametrize("backbone", ["random", "lm"])
def test_padding_never_changes_real_outputs(backbone, tiny_lm):
    m = small() if backbone == "random" else small(backbone=str(tiny_lm))
    s, a, r, t = segment(3, 6)
    for pad in (1, 3, 5):
        mask = torch.ones(3, 6)
        mask[:, :pad] = 0
        # garbage in the padded slots must not matter
        s2, a2, r2 = s.clone(), a.clone(), r.clone()
        s2[:, :pad], a2[:, :pad], r2[:, :pad] = 99.0, -10.0, 7.0
        padded = m(s2, a2, r2, t, mask)
        unpadded = m(s[:, pad:], a[:, pad:], r[:, pad:], t[:, pad:])
        assert torch.isfinite(padded).all()
        torch.testing.assert_close(padded[:, pad:], unpadded, atol=1e-5, rtol=1e-5)


def test_causal_action_not_seen_by_its_prediction():
    m = small()
    s, a, r, t = segment(2, 6)
    a2 = a.clone()
    a2[:, -1] += 5.0
    torch.testing.assert_close(m(s, a, r, t), m(s, a2, r, t))


def test_backbone_parity_with_transformers(tiny_lm):
    from transformers import GPT2LMHeadModel, GPT2Model

    m = small(backbone=str(tiny_lm))
    ref = GPT2Model.from_pretrained(tiny_lm).eval()
    x = torch.randn(2, 12, 16)
    h, _ = m.run_backbone(x, torch.ones(2, 12, dtype=torch.bool))
    torch.testing.assert_close(h, ref(inputs_embeds=x).last_hidden_state, atol=1e-5, rtol=1e-5)
    ids = torch.randint(0, 97, (2, 10))
    lm = GPT2LMHeadModel.from_pretrained(tiny_lm).eval()
    torch.testing.assert_close(m.lm_logits(ids), lm(input_ids=ids).logits, atol=1e-5, rtol=1e-5)


def test_shared_tiny_gpt2_loads():
    path = SHARED / "data" / "lm" / "tiny-gpt2"
    if not (path / "config.json").is_file():
        pytest.skip("../shared/data/lm/tiny-gpt2 is not present")
    from transformers import GPT2Model

    m = small(backbone=str(path), context_len=4)
    assert m.hidden_size == 2 and m.use_positions
    x = torch.randn(1, 9, 2)
    ref = GPT2Model.from_pretrained(path).eval()
    h, _ = m.run_backbone(x, torch.ones(1, 9, dtype=torch.bool))
    torch.testing.assert_close(h, ref(inputs_embeds=x).last_hidden_state, atol=1e-5, rtol=1e-5)
    assert m(*[v[:, :4] for v in segment(2, 4)]).shape == (2, 4, A)


def test_random_backbone_has_no_position_embedding():
    m = small()
    assert not m.use_positions and not m.transformer.wpe.weight.requires_grad
    assert m.transformer.wpe.weight.abs().sum() == 0


def test_mlp_embedding_and_timestep_from_lm(tiny_lm):
    m = small(backbone=str(tiny_lm), embedding="mlp", timestep_from_lm=True, max_ep_len=50)
    torch.testing.assert_close(m.embed_timestep.weight, m.transformer.wpe.weight[:50])
    assert m(*segment(2, 6)).shape == (2, 6, A)
    with pytest.raises(ValueError, match="max_ep_len"):
        small(backbone=str(tiny_lm), timestep_from_lm=True, max_ep_len=1000)


def test_bad_inputs_raise_clear_errors(tmp_path):
    m = small()
    s, a, r, t = segment(2, 6)
    with pytest.raises(ValueError, match=r"states: expected shape \(2, 6, 5\)"):
        m(torch.randn(2, 6, S + 1), a, r, t)
    with pytest.raises(ValueError, match="exceeds the model's context_len=6"):
        m(*segment(2, 8))
    with pytest.raises(ValueError, match="attention_mask"):
        m(s, a, r, t, torch.ones(2, 5))
    with pytest.raises(FileNotFoundError, match="config.json"):
        small(backbone=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="embedding must be"):
        small(embedding="conv")
    with pytest.raises(ValueError, match="LM co-training needs a pretrained backbone"):
        m.lm_loss(torch.zeros(1, 4, dtype=torch.long))


def test_lora_trains_only_adapters_and_merges_back(tiny_lm):
    m = small(backbone=str(tiny_lm), dropout=0.0)
    apply_lora(m, LoRAConfig(r=4, alpha=8, dropout=0.0))
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    backbone_trainable = {n for n in trainable if n.startswith("transformer.")}
    assert backbone_trainable and all("lora_" in n and "c_attn" in n for n in backbone_trainable)
    assert any(n.startswith("embed_state") for n in trainable) and any(n.startswith("predict_action") for n in trainable)
    frozen_before = {n: p.detach().clone() for n, p in m.named_parameters() if not p.requires_grad}
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    m.train()
    s, a, r, t = segment(4, 6)
    for _ in range(3):
        loss = ((m(s, a, r, t) - a.clamp(-1, 1)) ** 2).mean() + m.lm_loss(torch.randint(0, 97, (2, 8)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    for n, p in m.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, frozen_before[n]), n
    m.eval()
    s, a, r, t = segment(2, 6, seed=3)
    before = m(s, a, r, t)
    lm_before = m.lm_logits(torch.arange(8)[None])
    merge_lora(m)
    assert not any("lora_" in n for n, _ in m.named_parameters())
    torch.testing.assert_close(m(s, a, r, t), before, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(m.lm_logits(torch.arange(8)[None]), lm_before, atol=1e-5, rtol=1e-5)


def test_alignment_loss_matches_naive_reference_and_chunks():
    g = torch.Generator().manual_seed(0)
    e = torch.randn(3, 7, 8, generator=g, dtype=torch.float64)
    c = torch.randn(11, 8, generator=g, dtype=torch.float64)
    naive = -torch.nn.functional.cosine_similarity(e[:, :, None, :], c[None, None], dim=-1).amax(-1).mean()
    torch.testing.assert_close(alignment_loss(e, c).double(), naive, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(alignment_loss(e, c, max_elements=11 * 2), alignment_loss(e, c))  # 2 rows/chunk
    mask = torch.ones(3, 7)
    mask[:, :4] = 0
    torch.testing.assert_close(alignment_loss(e, c, mask).double(), alignment_loss(e[:, 4:], c).double())
    with pytest.raises(ValueError, match="D=8"):
        alignment_loss(e, torch.randn(4, 5))


def test_alignment_loss_falls_and_kmeans():
    torch.manual_seed(0)
    table = torch.cat([torch.randn(50, 8) * 0.1 + 3 * torch.eye(8)[i] for i in range(4)])  # 4 clear clusters
    cents = kmeans(table, 4, iters=10, seed=0)
    assert cents.shape == (4, 8)
    assert sorted(cents.argmax(1).tolist()) == [0, 1, 2, 3]
    x = torch.randn(16, 8, requires_grad=True)
    opt = torch.optim.Adam([x], lr=0.05)
    first = float(alignment_loss(x[None], cents).detach())
    for _ in range(50):
        loss = alignment_loss(x[None], cents)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < first - 0.2 and float(loss.detach()) < -0.95


def test_lm_loss_falls(tiny_lm):
    m = small(backbone=str(tiny_lm))
    m.train()
    opt = torch.optim.AdamW([p for p in m.transformer.parameters() if p.requires_grad], lr=3e-3)
    ids = (torch.arange(64) % 7)[None].repeat(4, 1)  # a periodic toy language
    first = float(m.lm_loss(ids))
    for _ in range(40):
        loss = m.lm_loss(ids)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.5 * first


def test_export_roundtrip_with_lora(tmp_path, tiny_lm):
    m = small(backbone=str(tiny_lm), embedding="mlp")
    apply_lora(m)
    with pytest.raises(ValueError, match="merge the LoRA"):
        export_dt(m, tmp_path / "x")
    merge_lora(m)
    export_dt(m, tmp_path / "x", {"return_scale": 10.0})
    m2, meta = load_dt(tmp_path / "x")
    assert meta == {"return_scale": 10.0}
    s, a, r, t = segment(2, 6)
    torch.testing.assert_close(m2(s, a, r, t), m(s, a, r, t))
    with pytest.raises(FileNotFoundError, match="not a pyseqrl DT export"):
        load_dt(tmp_path / "nothing")
