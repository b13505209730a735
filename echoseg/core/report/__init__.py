"""Gather finished runs into one summary: segmentation table, paired tests, aFD table, one figure."""
