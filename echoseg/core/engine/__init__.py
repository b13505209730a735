"""The epoch engine every training loop shares (train, pretrain, distill): batches, reductions, resume state."""
