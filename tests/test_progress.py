"""dcn_det.progress: a tqdm bar on a terminal, a few plain lines (no carriage returns) in a log."""
import io

from tqdm import tqdm

from dcn_det.progress import progress


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_redirected_stream_gets_a_line_per_tenth():
    out = io.StringIO()
    assert list(progress(range(25), "inference", stream=out)) == list(range(25))
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    # tenths of 25 are crossed at 3, 5, 8, 10, 13, 15, 18, 20, 23; then the last line
    counts = [int(ln.split(": ")[1].split("/")[0]) for ln in lines[:-1]]
    assert counts == [3, 5, 8, 10, 13, 15, 18, 20, 23]
    assert lines[0].startswith("inference: 3/25 (12%), ")
    assert lines[-1].startswith("inference: 25/25 done in ")


def test_few_items_and_unknown_length():
    out = io.StringIO()
    list(progress(range(3), "decoding", stream=out))
    # 3 items: the tenths are crossed at 1 and 2 (one line each), then the last line
    assert [ln.split(",")[0] for ln in out.getvalue().splitlines()[:-1]] == \
        ["decoding: 1/3 (33%)", "decoding: 2/3 (66%)"]
    out = io.StringIO()
    assert list(progress(iter("abc"), "batches", stream=out, interval=3600)) == list("abc")
    assert out.getvalue().startswith("batches: 3 done in ") and out.getvalue().count("\n") == 1
    out = io.StringIO()
    list(progress(iter("abc"), "batches", stream=out, interval=0.0))
    assert out.getvalue().splitlines()[:3] == [f"batches: {n} done, 0 s" for n in (1, 2, 3)]


def test_terminal_gets_tqdm_and_disabled_gets_nothing():
    term = _Terminal()
    bar = progress(range(4), "inference", stream=term)
    assert isinstance(bar, tqdm) and list(bar) == [0, 1, 2, 3]
    assert "\r" in term.getvalue()
    data = [1, 2]
    assert progress(data, "x", enabled=False, stream=term) is data
