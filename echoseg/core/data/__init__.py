"""Data readers and writers: CAMUS (NIfTI and MHD), SDM CAMUS, EchoNet-Dynamic, DICOM, toy data sets."""
