"""The toy family's packed warm-up (s2lpo.models.sft): the same loss as one padded row per example."""

import torch

from s2lpo.data.toy import make_splits
from s2lpo.models.family import DEFAULT_SIZES, make_model
from s2lpo.models.sft import encode_sft, pack, sft_loss
from s2lpo.models.tokenizer import build_tokenizer


def test_packing_keeps_every_example_whole_and_the_loss_of_padded_rows():
    splits = make_splits(0, 40, 0, 0, 3, 0.5)
    tok = build_tokenizer([p.prompt + p.solution for p in splits.sft], 272)
    seqs, masks = encode_sft(tok, splits.sft[:24])
    seqs += [s[: len(s) // 2] for s in seqs[:8]]  # shorter ones too, as the drills are
    masks += [m[: len(m) // 2] for m in masks[:8]]
    cap = 2 * max(map(len, seqs))
    ids, lm, pos = pack(seqs, masks, cap, tok.pad_token_id)
    assert ids.shape[0] < len(seqs) and ids.shape[1] <= cap
    found = []  # every example once, whole, with its positions from 0
    for r in range(ids.shape[0]):
        starts = (pos[r] == 0).nonzero().squeeze(-1).tolist() + [ids.shape[1]]
        for a, b in zip(starts, starts[1:]):
            if lm[r, a:b].any():
                found.append((ids[r, a:b].tolist(), lm[r, a:b].tolist()))
    assert sorted(found) == sorted(zip(seqs, masks))
    assert int(lm.sum()) == sum(map(sum, masks))
    torch.manual_seed(0)
    model = make_model(DEFAULT_SIZES["s"], len(tok), tok, 128).eval()
    width = max(map(len, seqs))
    padded = torch.full((len(seqs), width), tok.pad_token_id)
    att = torch.zeros((len(seqs), width), dtype=torch.long)
    plm = torch.zeros((len(seqs), width), dtype=torch.bool)
    for i, (s, m) in enumerate(zip(seqs, masks)):
        padded[i, : len(s)], att[i, : len(s)], plm[i, : len(m)] = torch.tensor(s), 1, torch.tensor(m)
    logits = model(input_ids=padded, attention_mask=att, use_cache=False).logits[:, :-1]
    want = torch.nn.functional.cross_entropy(logits[plm[:, 1:]], padded[:, 1:][plm[:, 1:]])
    assert abs(sft_loss(model, ids, lm, pos).item() - want.item()) < 1e-5
