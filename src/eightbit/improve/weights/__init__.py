"""Steps that change the float weights so that their int8 form computes closer to float:
cross-layer equalization (``equalize``), bias correction (``bias_correction``), learned
rounding (``adaround``) and layer-wise reconstruction (``reconstruct``), with what the
layer-wise ones share (``layerwise``, ``row_errors``)."""
