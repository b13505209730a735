"""Medical vision-language pre-training (issue 15): ConVIRT, GLoRIA and MGCA objectives.

For now only the losses (`losses`), as plain functions on embeddings; the training loop and the CLI are to come.
"""
