"""The ``dcn_det`` operators in standard ONNX operators (opset 19), one function per op.

Each function is an onnxscript translation (traced: Python runs at export time, its
arguments are the op's tensors as graph values and its scalar arguments as Python values) for
``torch.onnx.export(..., custom_translation_table=...)``; :mod:`dcn_det.export.onnx_export`
maps ``torch.ops.dcn_det.*`` to them. No function uses a custom domain, so the exported file
runs in any ONNX runtime without a custom-op library. Semantics: docs/DESIGN.md section 4;
how each translation matches its op, and where it can differ, in section 13.
"""
from onnxscript import opset19 as op

INT64, FLOAT = 7, 1  # onnx.TensorProto


def _ints(*v):
    return op.Constant(value_ints=list(v))


def _like(value: float, like):
    """A scalar constant ``value`` in the dtype of ``like`` (float32 constant, then cast)."""
    return op.CastLike(op.Constant(value_float=float(value)), like)


def _dim(shape, i: int):
    """``shape[i]`` as a 1-element int64 tensor."""
    return op.Slice(shape, _ints(i), _ints(i + 1))


def deform_conv2d(input, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w,
                  dilation_h, dilation_w, groups, offset_groups):
    """``dcn_det::deform_conv2d`` -> ``DeformConv``: the same offset layout as torchvision
    (``(dy, dx)`` pairs per tap and offset group) and bilinear sampling with zero padding."""
    return op.DeformConv(input, weight, offset, bias, mask,
                         dilations=[dilation_h, dilation_w], group=groups,
                         offset_group=offset_groups, pads=[pad_h, pad_w, pad_h, pad_w],
                         strides=[stride_h, stride_w])


def roi_align(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    """``dcn_det::roi_align`` -> ``RoiAlign`` (opset 16+): ``aligned=True`` is ``half_pixel``,
    ``False`` is ``output_half_pixel`` (the legacy rule, RoI sides at least 1);
    ``sampling_ratio <= 0`` (adaptive) is ONNX's 0."""
    batch = op.Cast(op.Reshape(op.Slice(rois, _ints(0), _ints(1), _ints(1)), _ints(-1)),
                    to=INT64)
    boxes = op.Slice(rois, _ints(1), _ints(5), _ints(1))
    return op.RoiAlign(input, boxes, batch, mode="avg", output_height=pooled_height,
                       output_width=pooled_width, sampling_ratio=max(sampling_ratio, 0),
                       spatial_scale=spatial_scale,
                       coordinate_transformation_mode="half_pixel" if aligned
                       else "output_half_pixel")


def nms(boxes, scores, iou_threshold):
    """``dcn_det::nms`` -> ``NonMaxSuppression`` on one batch and one class.

    Boxes and scores are cast to float32 (onnxruntime's kernel takes nothing else; float64
    boxes reach ``nms`` from the class-offset form of ``batched_nms``, traced on CUDA).
    Column 2 (box index) of the ``(K, 3)`` output, which lists the kept boxes in decreasing
    score order.
    """
    boxes, scores = op.Cast(boxes, to=FLOAT), op.Cast(scores, to=FLOAT)
    max_out = op.Reshape(op.Size(scores), _ints(1))
    selected = op.NonMaxSuppression(op.Unsqueeze(boxes, _ints(0)),
                                    op.Unsqueeze(scores, _ints(0, 1)), max_out,
                                    op.Constant(value_floats=[iou_threshold]),
                                    center_point_box=0)
    return op.Reshape(op.Slice(selected, _ints(2), _ints(3), _ints(1)), _ints(-1))


def batched_nms(boxes, scores, idxs, iou_threshold):
    """``dcn_det::_batched_nms`` -> ``NonMaxSuppression`` with one class per category.

    ``idxs`` (shifted to start at 0) picks the class row of each box: a ``(1, C, N)`` score
    matrix holds a box's score in its category's row and ``-inf`` elsewhere, and the
    ``score_threshold`` input (the lowest finite float32; ONNX drops scores ``<=`` it) drops
    the ``-inf`` entries, so a box is only compared with boxes of its own category, at its
    own coordinates (no class offset). The kept boxes come out grouped by category; two stable
    ``TopK`` sorts (box index ascending, then score descending) give our order: decreasing
    score, ties by lower index. ``C`` is ``max(idxs) - min(idxs) + 1`` (category labels:
    small).
    """
    boxes, scores = op.Cast(boxes, to=FLOAT), op.Cast(scores, to=FLOAT)
    idxs = op.Cast(idxs, to=INT64)
    padded = op.Concat(idxs, _ints(0), axis=0)  # reductions of an empty tensor are not defined
    low = op.ReduceMin(padded, keepdims=1)
    classes = op.Add(op.Sub(op.ReduceMax(padded, keepdims=1), low), _ints(1))
    rows = op.Range(op.Constant(value_int=0), op.Squeeze(classes), op.Constant(value_int=1))
    member = op.Equal(op.Unsqueeze(rows, _ints(1)), op.Unsqueeze(op.Sub(idxs, low), _ints(0)))
    neg_inf = op.Constant(value_float=float("-inf"))
    matrix = op.Where(member, op.Unsqueeze(scores, _ints(0)), neg_inf)  # (C, N)
    count = op.Reshape(op.Size(scores), _ints(1))
    selected = op.NonMaxSuppression(op.Unsqueeze(boxes, _ints(0)),
                                    op.Unsqueeze(matrix, _ints(0)), count,
                                    op.Constant(value_floats=[iou_threshold]),
                                    op.Constant(value_floats=[-3.4028234663852886e38]),
                                    center_point_box=0)
    kept = op.Reshape(op.Slice(selected, _ints(2), _ints(3), _ints(1)), _ints(-1))
    k = op.Reshape(op.Size(kept), _ints(1))
    # TopK lists equal values by lower position first, so the second sort is stable.
    by_index, _ = op.TopK(kept, k, axis=0, largest=0, sorted=1)
    _, order = op.TopK(op.Gather(scores, by_index), k, axis=0, largest=1, sorted=1)
    return op.Gather(by_index, order)


def _round_half_away(x):
    """C's ``round`` (half away from zero), exactly: ONNX ``Round`` rounds half to even."""
    floor = op.Floor(x)
    tie = op.Equal(op.Sub(x, floor), _like(0.5, x))  # x - floor(x) is exact
    away = op.Where(op.Less(x, _like(0.0, x)), floor, op.Add(floor, _like(1.0, x)))
    return op.Where(tie, away, op.Round(x))


def _not_finite(x):
    return op.Or(op.IsNaN(x), op.IsInf(x))


def deform_psroi_pool(input, rois, offset, spatial_scale, output_dim, group_size, pooled_size,
                      part_size, sample_per_part, trans_std):
    """``dcn_det::deform_psroi_pool`` in elementwise operators and ``Gather`` (DESIGN 4.2).

    Every sample point of every bin is computed as the kernel computes it (the same float
    operations in the same order), shaped ``(R, C', P, P, S, S)`` with ``C' = output_dim``
    (1 without offsets: the points do not depend on the channel then). The four bilinear
    neighbours (floor and "ceil" of the clamped point, as the kernel) are read with ``Gather``
    from the flattened input at ``((batch*C_in + channel)*H + y)*W + x``; ``channel`` is the
    position-sensitive channel ``(c*G + gh)*G + gw`` of the bin, a constant. Skipped samples
    (outside ``[-0.5, W-0.5] x [-0.5, H-0.5]``) read pixel 0 and are masked out of the sum and
    the count. A non-finite bin start gives NaN and count 0, as the kernel.

    Returns:
        ``(output (R, output_dim, P, P), count (R, output_dim, P, P))`` in the input's dtype.
    """
    P, S, G = pooled_size, sample_per_part, group_size
    shape = op.Shape(input)
    c_in, h, w = _dim(shape, 1), _dim(shape, 2), _dim(shape, 3)
    hf, wf = op.CastLike(h, input), op.CastLike(w, input)
    zero, one, half = _like(0.0, input), _like(1.0, input), _like(0.5, input)

    def col(start):  # column ``start`` of rois as (R, 1, 1, 1)
        return op.Reshape(op.Slice(rois, _ints(start), _ints(start + 1), _ints(1)),
                          _ints(-1, 1, 1, 1))

    batch = op.Cast(col(0), to=INT64)
    scale = _like(spatial_scale, input)
    x1 = op.Sub(op.Mul(_round_half_away(col(1)), scale), half)
    y1 = op.Sub(op.Mul(_round_half_away(col(2)), scale), half)
    x2 = op.Sub(op.Mul(op.Add(_round_half_away(col(3)), one), scale), half)
    y2 = op.Sub(op.Mul(op.Add(_round_half_away(col(4)), one), scale), half)
    roi_w = op.Max(op.Sub(x2, x1), _like(0.1, input))
    roi_h = op.Max(op.Sub(y2, y1), _like(0.1, input))
    bin_w, bin_h = op.Div(roi_w, _like(P, input)), op.Div(roi_h, _like(P, input))
    sub_w, sub_h = op.Div(bin_w, _like(S, input)), op.Div(bin_h, _like(S, input))

    steps = op.CastLike(op.Constant(value_floats=[float(i) for i in range(P)]), input)
    pw = op.Reshape(steps, _ints(1, 1, 1, P))
    ph = op.Reshape(steps, _ints(1, 1, P, 1))
    wstart = op.Add(op.Mul(pw, bin_w), x1)  # (R, 1, 1, P)
    hstart = op.Add(op.Mul(ph, bin_h), y1)  # (R, 1, P, 1)
    if offset is not None:
        # The offset cell of each bin, then the offset class of each output channel.
        cells = _ints(*[p * part_size // P for p in range(P)])
        off = op.Gather(op.Gather(offset, cells, axis=2), cells, axis=3)  # (R, 2*C_off, P, P)
        off_shape = op.Shape(offset)
        classes = op.Div(_dim(off_shape, 1), _ints(2))  # C_off
        off = op.Reshape(off, op.Concat(_dim(off_shape, 0), classes, _ints(2, P, P), axis=0))
        per_class = op.Div(_ints(output_dim), classes)
        cls = op.Div(op.Range(op.Constant(value_int=0), op.Constant(value_int=output_dim),
                              op.Constant(value_int=1)), per_class)
        off = op.Mul(op.Gather(off, cls, axis=1), _like(trans_std, input))  # (R, C, 2, P, P)
        tx = op.Squeeze(op.Slice(off, _ints(0), _ints(1), _ints(2)), _ints(2))
        ty = op.Squeeze(op.Slice(off, _ints(1), _ints(2), _ints(2)), _ints(2))
        wstart = op.Add(wstart, op.Mul(tx, roi_w))  # (R, C, P, P)
        hstart = op.Add(hstart, op.Mul(ty, roi_h))
    bad = op.Or(_not_finite(wstart), _not_finite(hstart))

    samples = op.CastLike(op.Constant(value_floats=[float(i) for i in range(S)]), input)
    sub_w6, sub_h6 = (op.Unsqueeze(v, _ints(4, 5)) for v in (sub_w, sub_h))
    xs = op.Add(op.Unsqueeze(wstart, _ints(4, 5)),
                op.Mul(op.Reshape(samples, _ints(1, 1, 1, 1, 1, S)), sub_w6))  # (.., 1, S)
    ys = op.Add(op.Unsqueeze(hstart, _ints(4, 5)),
                op.Mul(op.Reshape(samples, _ints(1, 1, 1, 1, S, 1)), sub_h6))  # (.., S, 1)
    in_x = op.And(op.GreaterOrEqual(xs, op.Neg(half)), op.LessOrEqual(xs, op.Sub(wf, half)))
    in_y = op.And(op.GreaterOrEqual(ys, op.Neg(half)), op.LessOrEqual(ys, op.Sub(hf, half)))
    # Skipped (and NaN) points read pixel 0 so that no index is ever out of range.
    xc = op.Where(in_x, op.Min(op.Max(xs, zero), op.Sub(wf, one)), zero)
    yc = op.Where(in_y, op.Min(op.Max(ys, zero), op.Sub(hf, one)), zero)
    x0f, y0f = op.Floor(xc), op.Floor(yc)
    dx, dy = op.Sub(xc, x0f), op.Sub(yc, y0f)
    x0, y0 = op.Cast(x0f, to=INT64), op.Cast(y0f, to=INT64)
    x1i = op.Add(x0, op.Cast(op.Greater(dx, zero), to=INT64))
    y1i = op.Add(y0, op.Cast(op.Greater(dy, zero), to=INT64))

    channels = [(c * G + min(i * G // P, G - 1)) * G + min(j * G // P, G - 1)
                for c in range(output_dim) for i in range(P) for j in range(P)]
    channel = op.Reshape(_ints(*channels), _ints(1, output_dim, P, P, 1, 1))
    plane = op.Mul(op.Add(op.Mul(op.Unsqueeze(batch, _ints(4, 5)), c_in), channel),
                   op.Mul(h, w))  # (R, C, P, P, 1, 1) first index of the plane
    row0, row1 = op.Add(plane, op.Mul(y0, w)), op.Add(plane, op.Mul(y1i, w))
    flat = op.Reshape(input, _ints(-1))
    v00, v10 = op.Gather(flat, op.Add(row0, x0)), op.Gather(flat, op.Add(row1, x0))
    v01, v11 = op.Gather(flat, op.Add(row0, x1i)), op.Gather(flat, op.Add(row1, x1i))
    rx, ry = op.Sub(one, dx), op.Sub(one, dy)
    value = op.Add(op.Add(op.Add(op.Mul(op.Mul(rx, ry), v00), op.Mul(op.Mul(rx, dy), v10)),
                          op.Mul(op.Mul(dx, ry), v01)), op.Mul(op.Mul(dx, dy), v11))
    kept = op.And(in_y, in_x)  # (.., S, S)
    total = op.ReduceSum(op.Where(kept, value, zero), _ints(4, 5), keepdims=0)
    count = op.ReduceSum(op.CastLike(kept, input), _ints(4, 5), keepdims=0)
    count = op.Expand(count, op.Shape(total))
    out = op.Where(op.Greater(count, zero), op.Div(total, op.Max(count, one)), zero)
    out = op.Where(bad, _like(float("nan"), input), out)
    count = op.Where(bad, zero, count)
    return out, count


def deform_max_pool2d(input, offset, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                      dilation_h, dilation_w, offset_groups):
    """``dcn_det::deform_max_pool2d`` in standard operators (DESIGN 4.4).

    The graph of :mod:`dcn_det.ops.deform_max_pool_composite`: the sample points of every tap
    (N, G, K, H_out, W_out) from the offsets, the skipped taps (outside ``(-1, H) x (-1, W)``),
    the clamped points sampled by ``GridSample(align_corners=1)`` on the input padded with its
    last row and column to ``2**m + 1`` rows and columns (so integer coordinates stay exact
    and the sample at row ``H-1`` is that row), ``Where`` -inf on skipped taps, ``ReduceMax``
    and ``ArgMax`` over the taps, and 0 / -1 where every tap is skipped. Input sizes may be
    dynamic: the padding is computed in the graph.

    Returns:
        ``(output (N, C, H_out, W_out), argmax (N, C, H_out, W_out) int64)``.
    """
    taps, groups = kernel_h * kernel_w, offset_groups
    ints = _ints

    def scalar(v):  # a float constant in the input's dtype
        return _like(v, input)

    shape, off_shape = op.Shape(input), op.Shape(offset)
    n, c, h, w = (_dim(shape, i) for i in range(4))
    h_out, w_out = _dim(off_shape, 2), _dim(off_shape, 3)

    # Sample points (N, G, K, H_out, W_out): integer grid + (dy, dx).
    off = op.Reshape(offset, op.Concat(n, ints(groups, taps, 2), h_out, w_out, axis=0))
    dy = op.Squeeze(op.Slice(off, ints(0), ints(1), ints(3)), ints(3))
    dx = op.Squeeze(op.Slice(off, ints(1), ints(2), ints(3)), ints(3))
    rows = op.Range(op.Constant(value_int=0), op.Squeeze(h_out), op.Constant(value_int=1))
    cols = op.Range(op.Constant(value_int=0), op.Squeeze(w_out), op.Constant(value_int=1))
    tap_y = op.Reshape(ints(*[(k // kernel_w) * dilation_h for k in range(taps)]),
                       ints(taps, 1, 1))
    tap_x = op.Reshape(ints(*[(k % kernel_w) * dilation_w for k in range(taps)]),
                       ints(taps, 1, 1))
    base_y = op.Add(op.Reshape(op.Sub(op.Mul(rows, ints(stride_h)), ints(pad_h)),
                               ints(1, -1, 1)), tap_y)
    base_x = op.Add(op.Reshape(op.Sub(op.Mul(cols, ints(stride_w)), ints(pad_w)),
                               ints(1, 1, -1)), tap_x)
    y = op.Add(op.CastLike(base_y, input), dy)
    x = op.Add(op.CastLike(base_x, input), dx)

    hf, wf = op.CastLike(h, input), op.CastLike(w, input)
    minus_one, zero, one = scalar(-1), scalar(0), scalar(1)
    kept = op.And(op.And(op.Greater(y, minus_one), op.Less(y, hf)),
                  op.And(op.Greater(x, minus_one), op.Less(x, wf)))
    # Skipped points (NaN included) go to pixel 0 so GridSample never sees them.
    yc = op.Where(kept, op.Max(op.Min(y, op.Sub(hf, one)), zero), zero)
    xc = op.Where(kept, op.Min(op.Max(x, zero), op.Sub(wf, one)), zero)

    def pow2_at_least(size):  # 2**ceil(log2(size)) as float32 (a larger power is fine too)
        size_f = op.Cast(size, to=FLOAT)
        return op.Pow(op.Constant(value_float=2.0),
                      op.Ceil(op.Div(op.Log(size_f), op.Log(op.Constant(value_float=2.0)))))

    span_h, span_w = pow2_at_least(h), pow2_at_least(w)  # S - 1
    side_h = op.Add(op.Cast(span_h, to=INT64), ints(1))
    side_w = op.Add(op.Cast(span_w, to=INT64), ints(1))
    pads = op.Concat(ints(0, 0, 0, 0, 0, 0), op.Sub(side_h, h), op.Sub(side_w, w), axis=0)
    padded = op.Pad(input, pads, mode="edge")
    half_h = op.CastLike(op.Div(span_h, op.Constant(value_float=2.0)), input)
    half_w = op.CastLike(op.Div(span_w, op.Constant(value_float=2.0)), input)
    grid = op.Concat(op.Unsqueeze(op.Sub(op.Div(xc, half_w), one), ints(-1)),
                     op.Unsqueeze(op.Sub(op.Div(yc, half_h), one), ints(-1)), axis=-1)

    per_group = op.Div(c, ints(groups))
    grid = op.Reshape(grid, op.Concat(op.Mul(n, ints(groups)), op.Mul(h_out, ints(taps)),
                                      w_out, ints(2), axis=0))
    planes = op.Reshape(padded, op.Concat(op.Mul(n, ints(groups)), per_group, side_h, side_w,
                                          axis=0))
    values = op.GridSample(planes, grid, align_corners=1, mode="bilinear", padding_mode="zeros")
    values = op.Reshape(values, op.Concat(n, ints(groups), per_group, ints(taps), h_out, w_out,
                                          axis=0))
    masked = op.Where(op.Unsqueeze(kept, ints(2)), values, scalar(float("-inf")))
    best = op.ReduceMax(masked, ints(3), keepdims=0)
    arg = op.ArgMax(masked, axis=3, keepdims=0, select_last_index=0)
    any_kept = op.Unsqueeze(op.Greater(op.ReduceMax(op.Cast(kept, to=FLOAT), ints(2),
                                                    keepdims=0), op.Constant(value_float=0.0)),
                            ints(2))
    best = op.Where(any_kept, best, zero)
    arg = op.Where(any_kept, arg, op.Constant(value_int=-1))
    out_shape = op.Concat(n, c, h_out, w_out, axis=0)
    return op.Reshape(best, out_shape), op.Reshape(arg, out_shape)
