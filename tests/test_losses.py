import math

import pytest
import torch
import torch.nn.functional as F

from harmosearch.train.losses import GlobalContrastive, GlobalRegionAlignment, HarmoLoss, LexemeRegionContrastive


def unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def nll(row, target, allowed):
    """-log softmax(row)[target] over the allowed entries, written out."""
    denominator = sum(math.exp(row[j]) for j in range(len(row)) if allowed[j])
    return -(row[target] - math.log(denominator))


def test_gc_matches_written_out_infonce():
    image, text, scale = unit(5, 8, seed=1), unit(5, 8, seed=2), torch.tensor(10.0)
    logits = (scale * image @ text.T).tolist()
    ref = 0.0
    for i in range(5):
        ref += nll(logits[i], i, [True] * 5) / 2
        ref += nll([logits[j][i] for j in range(5)], i, [True] * 5) / 2
    assert float(GlobalContrastive()(image, text, scale)["gc"]) == pytest.approx(ref / 5, rel=1e-5)


def test_lrc_masks_textually_identical_lexemes():
    regions, lexemes, scale = unit(6, 8, seed=3), unit(6, 8, seed=4), torch.tensor(20.0)
    ids = torch.tensor([7, 9, 7, 3, 9, 5])  # 0 and 2 say the same words; so do 1 and 4
    logits = (scale * regions @ lexemes.T).tolist()
    ref = 0.0
    for i in range(6):
        allowed = [j == i or int(ids[j]) != int(ids[i]) for j in range(6)]
        ref += nll(logits[i], i, allowed) / 2
        ref += nll([logits[j][i] for j in range(6)], i, allowed) / 2
    got = LexemeRegionContrastive()(regions, lexemes, ids, scale)["lrc"]
    assert float(got) == pytest.approx(ref / 6, rel=1e-5)
    unmasked = LexemeRegionContrastive()(regions, lexemes, torch.arange(6), scale)["lrc"]
    assert float(unmasked) != pytest.approx(float(got))


def test_lrc_with_fewer_than_two_pairs_is_zero_but_differentiable():
    regions = unit(1, 8).requires_grad_()
    loss = LexemeRegionContrastive()(regions, unit(1, 8), torch.tensor([1]), torch.tensor(10.0))["lrc"]
    loss.backward()
    assert float(loss.detach()) == 0.0


def test_gr_caption_variant_matches_reference():
    regions, captions, scale = unit(7, 8, seed=5), unit(3, 8, seed=6), torch.tensor(15.0)
    owner = torch.tensor([0, 0, 1, 2, 2, 2, 1])
    logits = (scale * regions @ captions.T).tolist()
    ref = sum(nll(logits[i], int(owner[i]), [True] * 3) for i in range(7)) / 7
    got = GlobalRegionAlignment("caption")(regions, owner, captions=captions, scale=scale)["gr"]
    assert float(got) == pytest.approx(ref, rel=1e-5)


def test_gr_crop_variant_is_one_minus_cosine_and_stops_teacher_gradient():
    regions, crops = unit(4, 8, seed=7).requires_grad_(), unit(4, 8, seed=8).requires_grad_()
    got = GlobalRegionAlignment("crop")(regions, torch.zeros(4, dtype=torch.long), crops=crops)["gr"]
    ref = sum(1 - float((regions[i] @ crops[i]).detach()) for i in range(4)) / 4
    assert float(got.detach()) == pytest.approx(ref, rel=1e-5)
    got.backward()
    assert crops.grad is None and regions.grad is not None


def model_outputs():
    """What forward_batch hands the losses, for 4 images and 5 linked regions."""
    return {
        "image": unit(4, 8, seed=1),
        "text": unit(4, 8, seed=2),
        "regions": unit(5, 8, seed=3),
        "distractors": unit(5, 2, 8, seed=8),
        "lexemes": unit(5, 8, seed=4),
        "lexeme_ids": torch.arange(5),
        "owner": torch.tensor([0, 1, 1, 2, 3]),
        "scale": torch.tensor(10.0),
    }


def test_total_is_the_weighted_sum_of_enabled_terms():
    out = model_outputs()
    terms = HarmoLoss(("gc", "lrc", "gr"), w_lrc=0.5, w_gr=2.0)(out)
    assert set(terms) == {"gc", "lrc", "gr", "total"}
    assert float(terms["total"]) == pytest.approx(float(terms["gc"] + 0.5 * terms["lrc"] + 2.0 * terms["gr"]))
    only_gc = HarmoLoss(("gc",))(out)
    assert set(only_gc) == {"gc", "total"}


def test_tightness_scores_each_lexemes_box_against_every_off_object_box_of_the_batch():
    from harmosearch.train.losses import RegionTightness

    regions, lexemes = unit(4, 8, seed=5), unit(4, 8, seed=7)
    distractors = unit(4, 3, 8, seed=6)  # 3 off-object boxes per object
    scale = torch.tensor(20.0)
    got = RegionTightness()(regions, distractors, lexemes, scale)["tight"]
    expected = 0.0
    for i in range(4):
        row = [float(scale * regions[i] @ lexemes[i])]
        row += [float(scale * distractors[j, k] @ lexemes[i]) for j in range(4) for k in range(3)]
        expected += nll(row, 0, [True] * len(row)) / 4
    assert float(got) == pytest.approx(expected, rel=1e-5)
    # A lexeme whose own box already beats every off-object box by far costs almost nothing.
    basis = torch.eye(4, 8)
    easy = RegionTightness()(basis, -basis[:, None, :].repeat(1, 3, 1), basis, scale)["tight"]
    assert float(easy) < 1e-6
    empty = RegionTightness()(regions[:0], distractors[:0], lexemes[:0], scale)["tight"]
    assert float(empty) == 0.0


def test_tightness_joins_the_total_with_its_weight():
    out = model_outputs()
    terms = HarmoLoss(("gc", "lrc", "tight"), w_tight=0.25)(out)
    assert set(terms) == {"gc", "lrc", "tight", "total"}
    assert float(terms["total"]) == pytest.approx(float(terms["gc"] + terms["lrc"] + 0.25 * terms["tight"]))
