"""File conventions behind one registry (modelled on nnU-Net v2's ``imageio`` reader-writers).

One class per format (:mod:`.slice_files`, :mod:`.nifti_volumes`, :mod:`.dicom_series`, :mod:`.prepared_csv`)
reads its images and masks, writes predicted masks and owns its names (the ``_mask`` truth beside an image,
the ``_pred`` prediction of a slice, ...); :func:`.registry.format_for` picks the class of a file by its ending.
Every reader of input (:mod:`gliomaseg.data.sources`, the viewer's uploads, ``score``) and every writer of masks
(``predict``, the viewer's downloads, ``convert``) goes through it.
"""
