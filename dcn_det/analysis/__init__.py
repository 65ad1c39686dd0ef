"""Seeing and measuring what deformable offsets learned (Dai et al. 2017, Figures 5-7, Table 2).

* :mod:`~dcn_det.analysis.capture`: ``OffsetCapture`` records every deformable conv's offset
  field, mask and strides in a forward pass (``DeformLayerRecord``).
* :mod:`~dcn_det.analysis.sampling`: sampling locations of units, and their composition
  through stacked deformable layers (9**3 = 729 points for res5a-c).
* :mod:`~dcn_det.analysis.pool_bins`: the bins of deformable (PS-)RoI pooling of boxes.
* :mod:`~dcn_det.analysis.dilation`, :mod:`~dcn_det.analysis.buckets`,
  :mod:`~dcn_det.analysis.dilation_table`: effective dilation per layer and object size over
  a dataset split, as a table, JSON and bar chart.
* :mod:`~dcn_det.analysis.draw`, :mod:`~dcn_det.analysis.visualize`: the pictures.

Frames: a map at stride ``s`` has pixel ``(i, j)`` at input-image pixel ``(i*s, j*s)``
(top-left aligned; see ``capture``); points and boxes are ``(x, y)`` / XYXY in input-image
pixels (the resized, padded image the model saw) unless a function says original-image
pixels. Pooling bins use the RoI operator's own frame (see ``pool_bins``).
"""
from dcn_det.analysis.buckets import BUCKETS, DEFAULT_AREA_THRESHOLDS, assign_buckets
from dcn_det.analysis.capture import (DeformLayerRecord, OffsetCapture, find_deformable_convs,
                                      layer_display_name)
from dcn_det.analysis.dilation import effective_dilation
from dcn_det.analysis.dilation_table import (DilationAccumulator, DilationTable,
                                             effective_dilation_table, format_dilation_table,
                                             plot_dilation_table, write_dilation_json)
from dcn_det.analysis.draw import draw_pool_bins, draw_sampling_points
from dcn_det.analysis.forward import (DetectionOffsets, detect_with_offsets, has_deformable_conv,
                                      has_deformable_pooling)
from dcn_det.analysis.pool_bins import (PoolBins, deformable_pool_bins, pool_bin_rects,
                                        pool_offsets)
from dcn_det.analysis.sampling import (ComposedPoints, bilinear_sample, chain_indices,
                                       compose_sampling_points, sampling_locations, select_chain)

__all__ = [
    "BUCKETS", "DEFAULT_AREA_THRESHOLDS", "ComposedPoints", "DeformLayerRecord",
    "DetectionOffsets", "DilationAccumulator", "DilationTable", "OffsetCapture", "PoolBins",
    "assign_buckets", "bilinear_sample", "chain_indices", "compose_sampling_points",
    "deformable_pool_bins", "detect_with_offsets", "draw_pool_bins", "draw_sampling_points",
    "effective_dilation", "effective_dilation_table", "find_deformable_convs",
    "format_dilation_table", "has_deformable_conv", "has_deformable_pooling",
    "layer_display_name", "plot_dilation_table", "pool_bin_rects", "pool_offsets",
    "sampling_locations", "select_chain", "write_dilation_json",
]
