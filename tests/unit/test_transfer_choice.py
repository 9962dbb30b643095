"""``transfer: auto``'s decision, a pure function of the module's sizes and the measured
link (``chaosrun.run.transfer.choose``), and the link's measurement (``Link``)."""

from __future__ import annotations

import pytest

from chaosrun.run.transfer import PACKED_RATIO, UNPACK_FIXED, UNPACK_RATE, Link, choose, is_loopback
from chaosrun.scenario import Transfer

SIZE = 3_104_928  # file_exists
PACKED = 1_396_739  # its gzip -6
MBIT = 1e6 / 8  # bytes per second


def test_the_first_upload_to_a_target_goes_gzip_and_says_it_measures_the_link() -> None:
    choice = choose(SIZE, PACKED, None)
    assert choice.transfer is Transfer.GZIP  # wrong on a fast link, it costs one unpacking
    assert choice.why == "auto: first upload to this target, it measures the link"


@pytest.mark.parametrize(
    ("bandwidth", "expected"),
    [
        (2000e6, Transfer.RAW),  # loopback: the upload takes 1.5 ms, unpacking 26 ms
        (1000 * MBIT, Transfer.RAW),  # 1 Gbit/s: raw 25 ms, gzip 37 ms
        (100 * MBIT, Transfer.GZIP),  # 100 Mbit/s: raw 248 ms, gzip 138 ms
        (10 * MBIT, Transfer.GZIP),
    ],
)
def test_auto_picks_what_is_faster_end_to_end(bandwidth: float, expected: Transfer) -> None:
    assert choose(SIZE, PACKED, bandwidth).transfer is expected


def test_the_break_even_is_where_the_saved_bytes_take_as_long_as_unpacking() -> None:
    unpack = UNPACK_FIXED + SIZE / UNPACK_RATE
    even = (SIZE - PACKED) / unpack  # bytes per second
    assert 400 * MBIT < even < 700 * MBIT  # ~520 Mbit/s for a 3 MB module
    assert choose(SIZE, PACKED, even * 0.99).transfer is Transfer.GZIP
    assert choose(SIZE, PACKED, even * 1.01).transfer is Transfer.RAW


def test_the_reason_gives_the_link_the_unpacking_and_both_estimates() -> None:
    assert choose(SIZE, PACKED, 100 * MBIT).why == "auto: link 12.5 MB/s, unpacking 26 ms: raw 248 ms, gzip 138 ms"


def test_a_target_that_unpacks_slowly_gets_raw_once_it_showed_it() -> None:
    assert choose(SIZE, PACKED, 100 * MBIT).transfer is Transfer.GZIP  # the fixed 26 ms
    slow = choose(SIZE, PACKED, 100 * MBIT, unpack=0.200)  # e.g. an emulated CPU
    assert slow.transfer is Transfer.RAW
    assert slow.why == "auto: link 12.5 MB/s, unpacking measured 200 ms: raw 248 ms, gzip 312 ms"


def test_a_loopback_target_always_gets_raw() -> None:
    choice = choose(SIZE, PACKED, 1 * MBIT, loopback=True)
    assert (choice.transfer, choice.why) == (Transfer.RAW, "auto: a loopback target: no wire to save bytes on")
    assert [is_loopback(h) for h in ("127.0.0.1", "127.0.0.9", "::1", "localhost")] == [True] * 4
    assert [is_loopback(h) for h in ("10.0.0.5", "exam-01.lan", "::ffff:10.0.0.1")] == [False] * 3


def test_an_unknown_packed_size_is_estimated_from_the_usual_ratio() -> None:
    assert choose(SIZE, None, 100 * MBIT).why == choose(SIZE, round(SIZE * PACKED_RATIO), 100 * MBIT).why


def test_a_module_that_does_not_compress_goes_raw_even_on_a_slow_link() -> None:
    assert choose(SIZE, SIZE, 10 * MBIT).transfer is Transfer.RAW


def test_the_unpacking_cost_is_what_the_target_showed_for_gzip_over_raw() -> None:
    link = Link()
    link.ran(Transfer.RAW, 0.050)
    assert link.unpack is None  # no gzip step yet
    for seconds in (0.080, 0.070, 0.500):
        link.ran(Transfer.GZIP, seconds)
    assert link.unpack == pytest.approx(0.030)
    link.ran(Transfer.RAW, 0.200)
    link.ran(Transfer.RAW, 0.300)
    assert link.unpack == 0.0  # never below 0


def test_the_link_is_the_median_of_its_last_five_uploads() -> None:
    link = Link()
    assert link.bandwidth is None
    link.measured(SIZE, 0.0)  # below the clock's resolution: says nothing
    assert link.bandwidth is None
    for seconds in (1.0, 2.0, 100.0):  # one upload stalled: the median ignores it
        link.measured(1000, seconds)
    assert link.bandwidth == 500.0
    for _ in range(5):
        link.measured(1000, 0.5)
    assert link.bandwidth == 2000.0  # the older ones are gone
