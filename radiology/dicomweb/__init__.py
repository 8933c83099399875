"""DICOMweb (PS3.18) over the stored originals: STOW-RS, QIDO-RS and WADO-RS."""
