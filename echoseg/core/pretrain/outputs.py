"""What a finished pre-training run leaves besides its checkpoints (written by the main process, best weights)::

    encoders/image/model.safetensors   the image backbone (torchvision ResNet / timm ViT keys) + config.json
    encoders/text/                     the text encoder as a save_pretrained folder with its tokenizer
                                       (transformers.AutoModel / AutoTokenizer load it)
    encoders/heads.safetensors         the method's projection heads (and MGCA's prototypes), model keys
    retrieval.json                     validation image<->text recall@1/5 and chance
    loss.png                           train/val curves of every loss term and the recall
    attention_maps.png                 GLoRIA/MGCA: word-region attention of a few validation pairs

``encoders/`` is written to a temporary folder and renamed into place, so it is whole or absent.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from echoseg.core.io import save_figure, write_json
from echoseg.core.pretrain.objectives import TERMS, attention_maps

ENCODERS_DIR = "encoders"
_MAX_WORDS = 6


def export_encoders(folder: Path, raw, run_id: str | None = None) -> None:
    """Write ``encoders/`` (see the module docstring) for the model ``raw`` (unwrapped, best weights)."""
    from safetensors.torch import save_file  # deferred: only the end of a run writes

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "image").mkdir(parents=True)
    image_state = {k: v.detach().cpu().contiguous().clone() for k, v in raw.image.backbone.state_dict().items()}
    save_file(image_state, str(tmp / "image" / "model.safetensors"))
    write_json(tmp / "image" / "config.json", {
        "architecture": raw.image.arch, "library": "timm" if raw.image.is_vit else "torchvision",
        "input_size": raw.input_size, "upsample": raw.image.upsample, "mean": list(raw.mean), "std": list(raw.std),
        "feature_dim": raw.image.feature_dim, "local_dim": raw.image.local_dim, "method": raw.method,
        "pretrain_run_id": run_id,
    })
    from transformers.utils import logging as hf_logging  # deferred: only the end of a run writes

    hf_logging.disable_progress_bar()  # save_pretrained's shard bar would break the run's own console output
    raw.text.bert.save_pretrained(str(tmp / "text"))
    raw.text.tokenizer.save_pretrained(str(tmp / "text"))
    heads = {k: v.detach().cpu().contiguous().clone() for k, v in raw.state_dict().items()
             if not k.startswith(("image.backbone.", "text.bert."))}
    if heads:
        save_file(heads, str(tmp / "heads.safetensors"))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def plot_losses(path: Path, rows: list[dict[str, Any]], method: str) -> None:
    """Train and validation curves of every loss term, and the validation recall, by epoch."""
    import matplotlib  # deferred: plotting is only needed once per run

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt  # deferred: heavy import, loaded only when this path runs

    terms = TERMS[method]
    fig, axes = plt.subplots(1, len(terms) + 1, figsize=(3.2 * (len(terms) + 1), 2.8), squeeze=False)
    epochs = [r["epoch"] for r in rows]
    for ax, term in zip(axes[0], terms, strict=False):
        ax.plot(epochs, [r.get(f"train_{term}") for r in rows], "o-", label="train", ms=3)
        ax.plot(epochs, [r.get(f"val_{term}") for r in rows], "s-", label="val", ms=3)
        ax.set_title(term)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    ax = axes[0][-1]
    for key, style in (("i2t_r1", "o-"), ("t2i_r1", "s-"), ("i2t_r5", "o--"), ("t2i_r5", "s--")):
        ax.plot(epochs, [r.get(key) for r in rows], style, label=key.replace("_", " R@").replace("r", "", 1), ms=3)
    ax.set_ylim(0, 1)
    ax.set_title("val retrieval")
    ax.set_xlabel("epoch")
    ax.legend(fontsize=7)
    fig.suptitle(f"{method} pre-training")
    save_figure(path, fig)


def _word_strings(tokenizer, ids: torch.Tensor, mask: torch.Tensor) -> list[str]:
    """The words of one caption as the model groups them ([CLS] and [SEP] included)."""
    words: list[str] = []
    for tok in tokenizer.convert_ids_to_tokens(ids[mask.bool()].tolist()):
        if tok.startswith("##") and words:
            words[-1] += tok[2:]
        else:
            words.append(tok)
    return words


@torch.no_grad()
def plot_attention(path: Path, raw, split, hp: dict[str, Any], pairs: int) -> bool:
    """Each of the first ``pairs`` validation pairs: its image and the attention maps of its first words.
    Returns False (nothing written) for ConVIRT, which has no word-region attention."""
    if raw.method == "convirt" or pairs == 0 or len(split) == 0:
        return False
    import matplotlib  # deferred: plotting is only needed once per run

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt  # deferred: heavy import, loaded only when this path runs

    raw.eval()
    idx = list(range(min(pairs, len(split))))
    device = next(raw.parameters()).device
    images, ids, mask = split.batch(idx, device)
    maps = attention_maps(raw(images, ids, mask), raw.method, hp, len(idx))
    fig, axes = plt.subplots(len(idx), _MAX_WORDS + 1, figsize=(1.6 * (_MAX_WORDS + 1), 1.7 * len(idx)),
                             squeeze=False)
    for row, i in enumerate(idx):
        grey = images[i].float().cpu()
        grey = (grey * torch.tensor(raw.std)[:, None, None] + torch.tensor(raw.mean)[:, None, None])[0].numpy()
        words = _word_strings(raw.text.tokenizer, ids[i].cpu(), mask[i].cpu())[1:]  # maps start after [CLS]
        axes[row][0].imshow(grey, cmap="gray")
        axes[row][0].set_title(split.pairs.frame["source"].iloc[i], fontsize=7)
        for col in range(1, _MAX_WORDS + 1):
            ax = axes[row][col]
            k = col - 1
            if k < len(maps[i]):
                att = torch.nn.functional.interpolate(maps[i][k][None, None].float().cpu(), size=grey.shape,
                                                      mode="bilinear", align_corners=False)[0, 0].numpy()
                ax.imshow(grey, cmap="gray")
                ax.imshow(att, cmap="jet", alpha=0.45)
                ax.set_title(words[k] if k < len(words) else "", fontsize=7)
    for ax in np.ravel(axes):
        ax.axis("off")
    fig.suptitle(f"{raw.method}: word-region attention (validation pairs)", fontsize=9)
    save_figure(path, fig)
    return True


def write_outputs(run, raw, val_split, cfg, hp: dict[str, Any], summary: dict[str, Any]) -> None:
    """Write every file of the module docstring into the run (main process)."""
    export_encoders(run.path / ENCODERS_DIR, raw, run.record.get("run_id"))
    write_json(run.path / "retrieval.json", summary["retrieval"])
    rows = run.read_metrics()
    if rows:
        plot_losses(run.path / "loss.png", rows, cfg.method)
    plot_attention(run.path / "attention_maps.png", raw, val_split, hp, cfg.attention_pairs)
