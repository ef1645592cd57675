"""data.records: the annotation checks every reader shares (make_record, check_record_image, images)."""
import warnings

import cv2
import numpy as np
import pytest

from data.records import (FAR_OUTSIDE, MAX_IMAGE_PIXELS, MIN_BOX_SIDE, BadSampleError, BadSamples, HandRecord,
                          box_from_keypoints, check_image_file, check_record_image, decode_problem, inspect_image,
                          is_jpeg_path, make_record)

J = 3
W = "a.json annotation id 7"


def _kpts(*rows):
    return np.array(rows, dtype=np.float64)


def _make(bbox, kpts, bad=None, image_size=None, num_joints=J):
    return make_record("img.png", 3, 7, bbox, kpts, num_joints, W, bad, image_size=image_size)


def test_constants_are_the_documented_ones():
    assert (MIN_BOX_SIDE, FAR_OUTSIDE, MAX_IMAGE_PIXELS) == (4.0, 1.0, 100_000_000)


def test_a_good_record_and_its_types():
    rec = _make([10, 20, 30, 40], [[15, 25, 2], [20, 30, 1], [0, 0, 0]], image_size=(100.0, 80.0))
    assert isinstance(rec, HandRecord) and (rec.image_path, rec.image_id, rec.ann_id) == ("img.png", 3, 7)
    assert rec.bbox.dtype == np.float64 and rec.bbox.tolist() == [10, 20, 30, 40]
    assert rec.keypoints.shape == (J, 3) and rec.image_size == (100, 80) and type(rec.image_size[0]) is int
    flat = _make([10, 20, 30, 40], [15, 25, 2, 20, 30, 1, 0, 0, 0])  # flat 3 J numbers
    np.testing.assert_array_equal(flat.keypoints, rec.keypoints)
    assert _make([10, 20, 30, 40], [[15, 25, 2], [20, 30, 1], [0, 0, 0]]).image_size is None


def test_unlabelled_keypoints_are_zeroed_whatever_they_hold():
    """NaN, inf or junk coordinates of an unlabelled joint are fine (OneHand10K stores 0, 0, 0) and become 0."""
    src = [[15, 25, 2], [np.nan, np.inf, 0], [1e9, -5, 0]]
    rec = _make([10, 20, 30, 40], src)
    assert rec.keypoints.tolist() == [[15, 25, 2], [0, 0, 0], [0, 0, 0]]
    assert np.isnan(src[1][0])  # the caller's list is not modified


@pytest.mark.parametrize("kpts,match", [
    ([["a", 1, 2]] * J, "keypoints are not a list of numbers"),
    ([[1, 2, 2]] * (J - 1), r"expected 3 keypoints \(9 numbers or 3 \[x, y, v\] triples\), got shape \[2, 3\]"),
    (np.ones((J, 3, 1)), r"expected .* got shape \[3, 3, 1\]"),
    (np.ones((1, 3 * J)), r"expected .* got shape \[1, 9\]"),
    ([[15, 25, np.nan], [20, 30, 1], [0, 0, np.inf]], r"keypoint visibility is NaN/inf at index \[0, 2\]"),
    ([[15, np.nan, 2], [20, 30, 1], [np.inf, 0, 1]], r"NaN/inf coordinates in labelled keypoint\(s\) \[0, 2\]"),
])
def test_bad_keypoints_name_the_annotation(kpts, match):
    with pytest.raises(BadSampleError, match=f"^{W}: " + match):
        _make([10, 20, 30, 40], kpts)


@pytest.mark.parametrize("bbox,why", [(None, "had no box"), ([0, 0, 0, 10], "had a box with w or h <= 0 (or NaN)"),
                                      ([0, 0, 10, -1], "had a box with w or h <= 0 (or NaN)"),
                                      ([0, 0, np.nan, 10], "had a box with w or h <= 0 (or NaN)")])
def test_a_missing_or_empty_box_is_derived_from_the_keypoints(bbox, why):
    bad = BadSamples("error", "a.json")
    rec = _make(bbox, [[15, 25, 2], [20, 35, 1], [90, 90, 0]], bad)
    assert rec.bbox.tolist() == [15, 25, 6, 11]  # [min, max + 1]: the unlabelled joint does not count
    assert bad.notes == {f"{why}: derived from the labelled keypoints": 1}
    assert _make(bbox, [[15, 25, 2], [20, 35, 1], [90, 90, 0]]).bbox.tolist() == [15, 25, 6, 11]  # bad=None


def test_box_errors():
    for bbox in ([1, 2, 3], [1, 2, 3, 4, 5], ["x", 2, 3, 4], [[1, 2], [3]]):
        with pytest.raises(BadSampleError, match=rf"^{W}: bbox must be \[x, y, w, h\], got "):
            _make(bbox, [[15, 25, 2], [20, 30, 1], [0, 0, 0]])
    with pytest.raises(BadSampleError, match=f"^{W}: no valid box \\(w and h must be > 0\\) and no labelled keypoint"):
        _make(None, [[15, 25, 0], [20, 30, 0], [0, 0, 0]])


def test_a_valid_box_without_labelled_keypoints_is_left_out_and_noted():
    bad = BadSamples("error", "a.json")
    assert _make([10, 20, 30, 40], [[0, 0, 0]] * J, bad) is None
    assert bad.notes == {"without any labelled keypoint were left out": 1}
    assert _make([10, 20, 30, 40], [[0, 0, 0]] * J) is None  # bad=None


def test_box_size_limit_is_on_the_longer_side():
    kpts = [[11, 21, 2], [12, 22, 1], [0, 0, 0]]
    assert _make([10, 20, 4, 1], kpts) is not None and _make([10, 20, 1, 4], kpts) is not None
    with pytest.raises(BadSampleError, match=rf"^{W}: the box is 3.9x3.5 pixels, smaller than 4 "):
        _make([10, 20, 3.9, 3.5], kpts)


def test_far_outside_the_box_is_strict_and_uses_the_longer_side():
    """Allowed up to FAR_OUTSIDE * max(w, h) beyond each edge (inclusive); beyond it, an error listing
    at most three keypoints."""
    box = [100, 200, 40, 20]  # margin 40 on every side
    ok = [[60, 180, 2], [180, 240, 2], [100, 160, 1]]  # exactly at x - m, x + w + m; y - m
    assert _make(box, ok) is not None
    assert _make(box, [[120, 260, 2], [120, 210, 2], [0, 0, 0]]) is not None  # y + h + m
    for bad_pt in ([59.9, 210], [180.1, 210], [120, 159.9], [120, 260.1]):
        with pytest.raises(BadSampleError, match=rf"^{W}: labelled keypoint\(s\) far outside the box "
                                                 rf"\[100.0, 200.0, 40.0, 20.0\]: 0 at \("):
            _make(box, [bad_pt + [2], [120, 210, 2], [0, 0, 0]])
    far = [[1e5, 1e5, 2]] * 5
    with pytest.raises(BadSampleError, match=r": 0 at \(100000, 100000\), 1 at \(100000, 100000\), "
                                             r"2 at \(100000, 100000\) \.\.\.$"):
        _make(box, far, num_joints=5)
    with pytest.raises(BadSampleError, match=r": 0 at \(1e\+06, 2\.5\)$"):
        _make(box, [[1e6, 2.5, 2]], num_joints=1)


@pytest.mark.parametrize("bbox,outside", [
    ([100, 10, 5, 5], True), ([-5, 10, 5, 5], True), ([10, 80, 5, 5], True), ([10, -5, 5, 5], True),
    ([99, 10, 5, 5], False), ([-4, 10, 5, 5], False), ([10, 79, 5, 5], False), ([10, -4, 5, 5], False),
])
def test_box_outside_the_image_touching_is_outside(bbox, outside):
    rec = HandRecord("i.png", 1, 1, np.array(bbox, np.float64), np.zeros((J, 3)))
    reason = check_record_image(rec, 100, 80)
    assert (reason is not None) == outside
    if outside:
        assert reason == f"bbox {[float(v) for v in bbox]} lies outside the 100x80 image"


def test_keypoints_far_outside_the_image_and_the_record_check_in_make_record():
    kpts = np.array([[10, 10, 2], [201, 10, 2], [-101, 10, 0]], np.float64)  # margin max(100, 80) = 100
    rec = HandRecord("i.png", 1, 1, np.array([0, 0, 50, 50], np.float64), kpts)
    assert check_record_image(rec, 100, 80) == \
        "labelled keypoint(s) far outside the 100x80 image: 1 at (201, 10)"
    kpts[1, 0] = 200.0
    assert check_record_image(rec, 100, 80) is None
    with pytest.raises(BadSampleError, match=rf"^{W}: bbox \[200.0, 10.0, 5.0, 5.0\] lies outside the 100x80 image"):
        _make([200, 10, 5, 5], [[201, 12, 2], [0, 0, 0], [0, 0, 0]], image_size=(100, 80))


def _reported(*bad_samples: BadSamples) -> list:
    """The warning texts of ``report()`` of each, in order."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for b in bad_samples:
            b.report()
    return [str(w.message) for w in seen]


def test_bad_samples_error_skip_and_report():
    with pytest.raises(ValueError, match="DATASET.ON_BAD_SAMPLE must be error|skip, got 'warn'"):
        BadSamples("warn", "a.json")
    with pytest.raises(BadSampleError, match="boom"):
        BadSamples("error", "a.json")(BadSampleError("boom"))
    earlier = ["an earlier stage's skip"]
    bad = BadSamples("skip", "a.json", earlier)
    for i in range(23):
        bad(BadSampleError(f"sample {i}"))
    bad.note("had no box: derived")
    bad.note("had no box: derived")
    assert earlier[0] == "an earlier stage's skip" and len(earlier) == 24 and bad.skipped is earlier
    texts = _reported(bad)
    assert texts[0].startswith("a.json: skipped 23 bad sample(s) (DATASET.ON_BAD_SAMPLE skip):\n  sample 0\n")
    assert "sample 19\n  ... and 3 more" in texts[0] and "sample 20" not in texts[0]
    assert "earlier stage" not in texts[0]
    assert texts[1] == "a.json: 2 annotation(s) had no box: derived"
    quiet = BadSamples("skip", "b.json")
    for i in range(20):
        quiet(BadSampleError(f"s{i}"))
    texts = _reported(quiet, BadSamples("skip", "c.json"))  # c.json: nothing to say, no warning
    assert len(texts) == 1 and "more" not in texts[0] and texts[0].endswith("s19")


def test_box_from_keypoints():
    assert box_from_keypoints(_kpts([5, 7, 1], [9, 8, 2], [100, 100, 0])).tolist() == [5, 7, 5, 2]
    assert box_from_keypoints(_kpts([5, 7, 2])).tolist() == [5, 7, 1, 1]
    assert box_from_keypoints(_kpts([5, 7, 0])) is None


def test_inspect_image_files(tmp_path):
    img = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)  # noise: data beyond the header
    png, jpg = str(tmp_path / "a.png"), str(tmp_path / "b.JPG")
    cv2.imwrite(png, img)
    cv2.imwrite(str(tmp_path / "b.jpg"), img)
    (tmp_path / "b.jpg").rename(jpg)
    assert inspect_image(png) == ((40, 30), None) and inspect_image(jpg) == ((40, 30), None)
    assert check_image_file(png) is None and decode_problem(jpg) is None
    assert inspect_image(str(tmp_path / "missing.png")) == (None, "image file not found")
    assert inspect_image(str(tmp_path)) == (None, "image path is not a file")
    data = open(jpg, "rb").read()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[:-600])
    assert inspect_image(str(cut)) == ((40, 30), "truncated JPEG file (no end marker)")
    assert decode_problem(str(cut)).startswith("the image does not decode cleanly (")
    cut_png = tmp_path / "cut.png"
    cut_png.write_bytes(open(png, "rb").read()[:-12])
    assert inspect_image(str(cut_png)) == ((40, 30), "truncated PNG file (no end marker)")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    size, why = inspect_image(str(text))
    assert size is None and why.startswith("unreadable image (UnidentifiedImageError: ")
    assert check_image_file(str(text)) == why


def test_an_image_over_the_pixel_limit_is_refused_from_its_header(tmp_path, monkeypatch):
    import data.records as records

    png = str(tmp_path / "a.png")
    cv2.imwrite(png, np.zeros((30, 40, 3), np.uint8))
    monkeypatch.setattr(records, "MAX_IMAGE_PIXELS", 40 * 30 - 1)
    assert inspect_image(png) == ((40, 30), "image of 40x30 pixels is larger than the 0 MP limit "
                                            "(records.MAX_IMAGE_PIXELS; a decompression bomb?)")
    monkeypatch.setattr(records, "MAX_IMAGE_PIXELS", 40 * 30)
    assert inspect_image(png) == ((40, 30), None)


def test_is_jpeg_path():
    assert all(is_jpeg_path(p) for p in ("a.jpg", "b.JPEG", "c.jpe", "d.JfIf"))
    assert not any(is_jpeg_path(p) for p in ("a.png", "jpg", "a.jpg.png"))


# --- mutation-tested edges (tools/mutation.py records) ---------------------------------------------

def test_report_counts_what_is_not_listed():
    bad = BadSamples("skip", "a.json")
    for i in range(21):
        bad(BadSampleError(f"sample {i}"))
    assert _reported(bad)[0].endswith("sample 19\n  ... and 1 more")


def test_v1_keypoints_are_labelled_everywhere():
    """COCO v=1 (labelled, not visible) counts like v=2: a record, the far check, the derived box."""
    assert _make([10, 20, 30, 40], [[15, 25, 1], [20, 30, 1], [0, 0, 0]]) is not None
    with pytest.raises(BadSampleError, match="far outside the box"):
        _make([10, 20, 30, 40], [[500, 25, 1], [20, 30, 2], [0, 0, 0]])
    rec = HandRecord("i.png", 1, 1, np.array([0, 0, 50, 50], np.float64), _kpts([10, 10, 2], [201, 10, 1]))
    assert check_record_image(rec, 100, 80) is not None


def test_far_lists_and_rounds():
    box = [100.123, 200.456, 40, 20]
    for n, dots in ((3, False), (4, True)):
        with pytest.raises(BadSampleError) as exc:
            _make(box, [[1e5, 1e5, 2]] * n + [[0, 0, 0]], num_joints=n + 1)
        assert exc.value.args[0].endswith(" ...") == dots and "[100.12, 200.46, 40.0, 20.0]" in exc.value.args[0]
    rec = HandRecord("i.png", 1, 1, np.array([200.123, 10.456, 5, 5]), np.zeros((J, 3)))
    assert check_record_image(rec, 100, 80) == "bbox [200.12, 10.46, 5.0, 5.0] lies outside the 100x80 image"


def test_far_outside_the_image_is_inclusive_on_every_side():
    box = np.array([0, 0, 50, 50], np.float64)
    edge_and_beyond = {(-100, 10): (-100.1, 10), (200, 10): (200.1, 10), (10, -100): (10, -100.1),
                       (10, 180): (10, 180.1)}  # margin max(100, 80) = 100
    for edge, beyond in edge_and_beyond.items():
        assert check_record_image(HandRecord("i.png", 1, 1, box, _kpts(list(edge) + [2])), 100, 80) is None, edge
        assert check_record_image(HandRecord("i.png", 1, 1, box, _kpts(list(beyond) + [2])), 100, 80) is not None


def test_boxes_of_height_zero_or_given_as_a_row_array():
    bad = BadSamples("error", "a.json")
    assert _make([0, 0, 10, 0], [[15, 25, 2], [20, 35, 1], [0, 0, 0]], bad).bbox.tolist() == [15, 25, 6, 11]
    assert list(bad.notes) == ["had a box with w or h <= 0 (or NaN): derived from the labelled keypoints"]
    row = np.array([[10.0, 20.0, 30.0, 40.0]])  # (1, 4), e.g. a detector's output row
    assert _make(row, [[15, 25, 2], [20, 30, 1], [0, 0, 0]]).bbox.tolist() == [10, 20, 30, 40]


def _png_header(path, width, height):
    """A PNG whose header states width x height (no pixel data): what PIL reads without decoding."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    end = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk + end)
    return str(path)


def test_image_size_limits_read_from_the_header(tmp_path, monkeypatch):
    import data.records as records

    big = _png_header(tmp_path / "big.png", 3000, 2000)
    monkeypatch.setattr(records, "MAX_IMAGE_PIXELS", 5_000_000)
    assert inspect_image(big) == ((3000, 2000), "image of 3000x2000 pixels is larger than the 5 MP limit "
                                                "(records.MAX_IMAGE_PIXELS; a decompression bomb?)")
    monkeypatch.undo()
    bomb = _png_header(tmp_path / "bomb.png", 20000, 20000)  # past PIL's own refusal (2 x its limit)
    size, why = inspect_image(bomb)
    assert size is None and why.startswith("image larger than the 100 MP limit (")
    thin = str(tmp_path / "thin.png")
    cv2.imwrite(thin, np.zeros((5, 1, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "flat.png"), np.zeros((1, 5, 3), np.uint8))
    assert inspect_image(thin) == ((1, 5), None) and inspect_image(str(tmp_path / "flat.png")) == ((5, 1), None)


def test_decode_problem_names_the_exception(tmp_path):
    data = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8))[1]
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data.tobytes()[:-600])
    assert decode_problem(str(cut)).startswith("the image does not decode cleanly (OSError: ")
