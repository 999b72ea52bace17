"""``gliomaseg predict``: inputs in, masks, overlays, GIFs, tables and an HTML report out, scored where a truth is given."""
