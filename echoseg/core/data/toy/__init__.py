"""Toy data sets written in the published on-disk layouts (CAMUS, SDM CAMUS, EchoNet-Dynamic) so every reader
runs in CI: :mod:`.heart` draws the synthetic anatomy, :mod:`.camus`, :mod:`.sdm` and :mod:`.echonet` write it."""
