"""LFW: the protocol, the images and the crop cache (``data``), face alignment (``align``) and the
verification metrics (``metrics``)."""
